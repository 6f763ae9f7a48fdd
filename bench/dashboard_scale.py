"""The curation dashboard on a big project: the page with its figures cached against computing them in the request.

On bench/quality_scale.py's project (1,000,000 items, 100,000 of them labelled by 3 of 100 annotators: 300,000
annotations; built there and kept in the concord_bench_quality database), in one run:

1. the worker's refresh (curation.services.quality.project_quality_refresh), which computes the annotators page's
   figures and the dashboard's in one pass, timed in this process; and the dashboard's own parts of it;
2. the dashboard page and the campaign list (its pool counts) through Django's test client as a logged-in curator,
   p50 and max of 5 loads each with the figures cached, and the first load of a project with nothing cached;
3. what the page computed in the request before (every annotation through label_table, the states and pools
   GROUP BYs, agreement over time on the items x annotators matrix, the project agreement), once.

    .venv/bin/python bench/dashboard_scale.py --items 1000000
"""

import argparse
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.common import django_setup, machine, timed, write_section

LOADS = 5
DATABASE = "concord_bench_quality"


def dense_agreement_over_time(table):  # type: ignore[no-untyped-def]
    """The former agreement_over_time, over the items x annotators matrix."""
    from curation.metrics import pairwise_agreement
    from curation.selectors_quality import AgreementPoint

    matrix = np.sign(table.matrix)
    pairable = (~np.isnan(matrix)).sum(axis=1) >= 2
    last = np.full(len(table.item_ids), -np.inf)
    np.maximum.at(last, table.row_item, table.created)
    days = (last // 86400).astype(np.int64)
    points = []
    for day in np.unique(days[pairable]):
        rows = matrix[pairable & (days == day)]
        value = pairwise_agreement(rows)
        if not np.isnan(value):
            points.append(AgreementPoint(date.fromordinal(date(1970, 1, 1).toordinal() + int(day)), len(rows), value))
    return points


def worker_refresh(project) -> float:  # type: ignore[no-untyped-def]
    """The worker's refresh from nothing cached, run here (its task sent nowhere)."""
    from concord import jobs
    from curation.models import ProjectQuality
    from curation.services.quality import project_quality_refresh, project_quality_request

    jobs.send = lambda name, job_id: None  # the bench runs the task itself
    ProjectQuality.objects.filter(project=project).delete()
    quality = project_quality_request(project=project, force=True)
    seconds = timed(lambda: project_quality_refresh(quality_id=quality.pk))
    quality.refresh_from_db()
    assert quality.status == "done", quality.error
    assert quality.report["dashboard"] is not None
    return seconds


def parts(project) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The dashboard's parts of the refresh, and the request's computation before, each timed once."""
    from curation.selectors_quality import (
        agreement_of,
        agreement_over_time,
        item_states,
        label_table,
        pool_counts,
        state_and_pool_counts,
        strength_histogram,
    )

    result: dict[str, float] = {}
    start = time.perf_counter()
    table = label_table(project=project)
    result["label_table"] = time.perf_counter() - start
    result["states_pools"] = timed(lambda: state_and_pool_counts(project=project))
    sparse: list = []
    result["over_time_sparse"] = timed(lambda: sparse.extend(agreement_over_time(table)))
    dense: list = []
    result["over_time_dense"] = timed(lambda: dense.extend(dense_agreement_over_time(table)))
    assert [(p.day, p.items) for p in sparse] == [(p.day, p.items) for p in dense]
    assert max((abs(s.agreement - d.agreement) for s, d in zip(sparse, dense, strict=True)), default=0) < 1e-12

    def before() -> None:  # what the dashboard view did per request
        old_table = label_table(project=project)
        item_states(project=project)
        pool_counts(project=project)
        strength_histogram(old_table)
        dense_agreement_over_time(old_table)
        agreement_of(old_table)

    print("  the request's computation before…", flush=True)
    result["before"] = timed(before)
    return result


def page_loads(project) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """LOADS loads of the dashboard and of the campaign list with the figures cached, then the dashboard of a
    project with nothing cached."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from annotate.models import Membership, Project, Role
    from curation.models import ProjectQuality

    curator, _ = get_user_model().objects.get_or_create(username="bench-quality-curator")
    Membership.objects.get_or_create(project=project, user=curator, defaults={"role": Role.CURATOR})
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(curator)
    result: dict[str, object] = {}
    pages = {
        "dashboard": (reverse("curation:dashboard", args=[project.pk]), b'data-testid="states"'),
        "campaigns": (reverse("training:campaign_list", args=[project.pk]), b'data-testid="pools-age"'),
    }
    for name, (url, shows) in pages.items():
        times = []
        for _ in range(LOADS):
            start = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - start)
            assert response.status_code == 200
            assert shows in response.content, name
        result[name] = times
    empty, _ = Project.objects.get_or_create(name="bench-quality-empty")
    Membership.objects.get_or_create(project=empty, user=curator, defaults={"role": Role.CURATOR})
    ProjectQuality.objects.filter(project=empty).delete()
    result["first"] = timed(lambda: client.get(reverse("curation:dashboard", args=[empty.pk])))
    return result


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = [" | ".join(header), " | ".join("---" for _ in header), *(" | ".join(row) for row in rows)]
    return "\n".join(f"| {line} |" for line in lines)


def loads_text(times: list[float]) -> str:
    return f"p50 {1000 * statistics.median(times):.0f} ms, max {1000 * max(times):.0f} ms"


def report(items: int, refresh_s: float, timing: dict[str, float], pages: dict) -> str:  # type: ignore[type-arg]
    rows = [
        ("the dashboard, figures cached, 5 loads (Django test client, logged in)", loads_text(pages["dashboard"])),
        ("the campaign list (its pool counts cached), 5 loads", loads_text(pages["campaigns"])),
        ("the dashboard of a project with nothing cached (asks a worker, says so)", f"{1000 * pages['first']:.0f} ms"),
        ("before: the dashboard's computation in the request, once", f"{timing['before']:.1f} s"),
    ]
    refresh = [
        ("the worker's whole refresh (annotators page and dashboard, from nothing cached)", f"{refresh_s:.1f} s"),
        ("of which reading the labels (label_table, shared by both pages)", f"{timing['label_table']:.1f} s"),
        ("of which items by state and by pool (one GROUP BY over the items)", f"{timing['states_pools']:.1f} s"),
        (
            "of which agreement over time from the label triples (was: on the items x annotators matrix)",
            f"{1000 * timing['over_time_sparse']:.0f} ms (was {1000 * timing['over_time_dense']:.0f} ms)",
        ),
    ]
    return f"""
On {machine()}, PostgreSQL on the same machine, in one run; the machine's load average was
{os.getloadavg()[0]:.1f} at the end (other work shares its cores, so these times are upper bounds). The project
of bench/quality_scale.py: {items:,} items, 300,000 annotations by 100 annotators.

{table(("what", "measured"), rows)}

The worker computes the dashboard's figures in the same refresh as the annotators page's, cached in one
ProjectQuality row per project:

{table(("the worker's refresh", "measured"), refresh)}

Agreement over time from the triples gives the matrix's numbers (checked in this run, and in
tests/curation/test_dashboard_cached.py on random cases). The issue measured the dashboard at 31 s on the 1M-item
project; a request now reads one cached row and never the items or annotations.

Command: `.venv/bin/python bench/dashboard_scale.py --items {items}`
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    django_setup(DATABASE)
    from bench.quality_scale import build_project

    project = build_project(args.items)
    print("worker refresh…", flush=True)
    refresh_s = worker_refresh(project)
    print(f"  {refresh_s:.1f} s", flush=True)
    pages = page_loads(project)
    print(f"  dashboard: {loads_text(pages['dashboard'])}; campaigns: {loads_text(pages['campaigns'])}", flush=True)
    timing = parts(project)
    body = report(args.items, refresh_s, timing, pages)
    print(body)
    if not args.no_write:
        write_section("The dashboard on a big project", body)


if __name__ == "__main__":
    main()
