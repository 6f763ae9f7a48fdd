"""The annotators (quality) page on a big project: Dawid-Skene over label triples against the dense tensor it
replaced, the worker's refresh of the cached statistics, and the page's request time once they are cached.

1. Dawid-Skene on 300,000 labels (100,000 items x 3 of 100 annotators, 3 classes, 80% of labels right): the
   sparse EM (curation.aggregation.dawid_skene_sparse, np.bincount per step) against the dense einsum over an
   items x annotators x classes one-hot tensor (dawid_skene_dense), same start, same stopping rule, in the same
   run; peak memory by tracemalloc (numpy reports its arrays to it).
2. A project of N items (default 1,000,000; built once with COPY and kept between runs) of which 100,000 are
   labelled by 3 of its 100 annotators (300,000 annotations with HelpSteer2 ratings, each with its assignment,
   5% skips, 500 gold items): the worker's refresh (curation.services.quality.project_quality_refresh) timed
   in this process, then the annotators page through Django's test client as a logged-in curator, p50 and max
   of 5 loads, with the result cached; and the first load of a project with nothing cached (it only asks a
   worker).

    .venv/bin/python bench/quality_scale.py --items 1000000
"""

import argparse
import hashlib
import json
import os
import random
import resource
import statistics
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.common import django_setup, machine, timed, write_section

ANNOTATORS = 100
LABELLED = 100_000
PER_ITEM = 3
GOLD = 500
BATCH = 50_000
LOADS = 5
DATABASE = "concord_bench_quality"


# 1. Dawid-Skene, sparse against dense.


def synthetic_labels(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LABELLED items, each labelled by PER_ITEM distinct annotators of ANNOTATORS; 80% of labels are the truth."""
    unit = np.repeat(np.arange(LABELLED), PER_ITEM)
    coder = np.argsort(rng.random((LABELLED, ANNOTATORS)), axis=1)[:, :PER_ITEM].ravel()
    truth = rng.integers(0, 3, LABELLED)
    given = np.where(rng.random(len(unit)) < 0.8, truth[unit], rng.integers(0, 3, len(unit)))
    return unit, coder, given


def measured(fn):  # type: ignore[no-untyped-def]
    """(result, seconds, peak bytes allocated while it ran)."""
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak


def dawid_skene_section() -> dict[str, float]:
    from curation.aggregation import Labels, dawid_skene_dense, dawid_skene_sparse

    unit, coder, given = synthetic_labels(np.random.default_rng(0))
    labels = Labels(unit, coder, given, LABELLED, ANNOTATORS)
    sparse, sparse_s, sparse_peak = measured(lambda: dawid_skene_sparse(labels, 3))
    print(f"  sparse: {sparse_s:.2f} s, {sparse.iterations} iterations, peak {sparse_peak / 2**20:.0f} MiB", flush=True)

    def dense_run():  # type: ignore[no-untyped-def]
        matrix = np.full((LABELLED, ANNOTATORS), -1, dtype=np.int64)
        matrix[unit, coder] = given
        return dawid_skene_dense(matrix, 3)

    dense, dense_s, dense_peak = measured(dense_run)
    print(f"  dense: {dense_s:.2f} s, {dense.iterations} iterations, peak {dense_peak / 2**20:.0f} MiB", flush=True)
    assert sparse.iterations == dense.iterations
    difference = float(np.abs(sparse.posteriors - dense.posteriors).max())
    assert difference < 1e-9, difference
    return {
        "sparse_s": sparse_s,
        "dense_s": dense_s,
        "sparse_mib": sparse_peak / 2**20,
        "dense_mib": dense_peak / 2**20,
        "iterations": sparse.iterations,
        "difference": difference,
    }


# 2. The project, the worker's refresh and the page.


def build_project(items: int):  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    from annotate.models import Item, Membership, Project, Role

    name = f"bench-quality-{items}-{LABELLED}"
    project, _ = Project.objects.get_or_create(name=name, defaults={"overlap": PER_ITEM})
    if Item.objects.filter(project=project).count() == items:
        return project
    Item.objects.filter(project=project).delete()
    users = [get_user_model().objects.get_or_create(username=f"bench-quality-{i}")[0] for i in range(ANNOTATORS)]
    for user in users:
        Membership.objects.get_or_create(project=project, user=user, defaults={"role": Role.ANNOTATOR})
    started = time.perf_counter()
    for start in range(0, items, BATCH):
        _insert_batch(project, users, start, min(items, start + BATCH))
        print(f"  {min(items, start + BATCH)} items ({time.perf_counter() - started:.0f} s)", flush=True)
    _gold_answers(project)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return project


def _insert_batch(project, users, start: int, end: int) -> None:  # type: ignore[no-untyped-def]
    """Items [start, end) with COPY; those numbered below LABELLED get PER_ITEM annotations and assignments."""
    from django.db import connection, transaction
    from django.utils import timezone

    from annotate.models import Annotation, Assignment, Item

    rng = random.Random(start)
    now = timezone.now()
    columns = ("project_id", "prompt", "context", "response_a", "response_b", "source", "external_id", "metadata")
    columns += ("content_hash", "annotation_count", "human_count", "is_gold", "extra_overlap", "priority")
    columns += ("strength_count", "prefer_a_count", "prefer_b_count", "strength_sum", "rating_spread", "created_at")
    more_columns, more_values = _other_defaults(Item, columns)
    with transaction.atomic(), connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {Item._meta.db_table} ({', '.join(columns + more_columns)}) FROM STDIN") as copy:
            for n in range(start, end):
                digest = hashlib.sha256(f"{project.pk}:{n}".encode()).hexdigest()
                prompt = json.dumps([{"role": "user", "content": f"Question {n}?"}])
                count = PER_ITEM if n < LABELLED else 0
                texts = (prompt, "", f"A {n}", f"B {n}", "bench", str(n), "{}", digest)
                # The label summary columns stay at zero: the quality statistics read the annotations.
                copy.write_row((project.pk, *texts, count, count, n < GOLD, 0, 0, 0, 0, 0, 0, 0, now, *more_values))
        if start >= LABELLED:
            return
        numbers = [str(n) for n in range(start, min(end, LABELLED))]
        ids = Item.objects.filter(project=project, external_id__in=numbers).values_list("id", flat=True)
        annotation_columns = ("item_id", "annotator_id", "origin", "strength", "justification", "ratings", "spans")
        annotation_columns += ("missing", "corrections", "seconds_spent", "submission_uuid", "created_at")
        annotation_columns += ("updated_at",)
        labels = [(item_id, rng.sample(users, PER_ITEM), rng.choice([-1, 1])) for item_id in ids]
        table = Annotation._meta.db_table
        with cursor.cursor.copy(f"COPY {table} ({', '.join(annotation_columns)}) FROM STDIN") as copy:
            for item_id, annotators, side in labels:
                for annotator in annotators:
                    strength = side * rng.randint(1, 3) if rng.random() < 0.8 else rng.randint(-3, 3)
                    row = (item_id, annotator.pk, "human", strength, "", json.dumps(_ratings(rng)), "[]", "[]", "{}")
                    copy.write_row((*row, rng.uniform(5, 120), str(uuid.uuid4()), now, now))
        assignment_columns = ("item_id", "annotator_id", "status", "leased_at", "expires_at", "skip_reason")
        assignment_columns += ("finished_at",)
        table = Assignment._meta.db_table
        with cursor.cursor.copy(f"COPY {table} ({', '.join(assignment_columns)}) FROM STDIN") as copy:
            for item_id, annotators, _ in labels:
                for annotator in annotators:
                    copy.write_row((item_id, annotator.pk, "submitted", now, now, "", now))
                skipper = rng.choice(users)
                if rng.random() < 0.05 and skipper not in annotators:
                    copy.write_row((item_id, skipper.pk, "skipped", now, now, "unsure", now))


def _other_defaults(model, columns: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[object, ...]]:  # type: ignore[no-untyped-def]
    """The model's other NOT NULL columns with a default, and their defaults as COPY takes them, so the bench
    keeps working as columns are added."""
    fields = [
        field
        for field in model._meta.concrete_fields
        if field.column not in columns and not field.null and field.has_default() and not field.primary_key
    ]
    values = [field.get_default() for field in fields]
    return tuple(field.column for field in fields), tuple(
        json.dumps(value) if isinstance(value, dict | list) else value for value in values
    )


def _ratings(rng: random.Random) -> dict[str, dict[str, int]]:
    attributes = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
    return {side: {name: rng.randint(0, 4) for name in attributes} for side in ("a", "b")}


def _gold_answers(project) -> None:  # type: ignore[no-untyped-def]
    from annotate.models import GoldAnswer, Item

    rng = random.Random(1)
    gold = Item.objects.filter(project=project, is_gold=True).values_list("id", flat=True)
    GoldAnswer.objects.bulk_create(
        GoldAnswer(item_id=item_id, preference_sign=rng.choice([-1, 1]), ratings={"a": {"helpfulness": 2}})
        for item_id in gold
    )


def worker_refresh(project) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The worker's refresh, run here (its task sent nowhere); (seconds, the process's peak RSS in MiB)."""
    from concord import jobs
    from curation.models import ProjectQuality
    from curation.services.quality import project_quality_refresh, project_quality_request

    jobs.send = lambda name, job_id: None  # the bench runs the task itself
    ProjectQuality.objects.filter(project=project).delete()
    quality = project_quality_request(project=project, force=True)
    seconds = timed(lambda: project_quality_refresh(quality_id=quality.pk))
    quality.refresh_from_db()
    assert quality.status == "done", quality.error
    assert quality.annotation_count == LABELLED * PER_ITEM, quality.annotation_count
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def page_loads(project) -> tuple[list[float], float, int]:  # type: ignore[no-untyped-def]
    """LOADS loads of the annotators page with the statistics cached, then one of a project with nothing cached."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from annotate.models import Membership, Project, Role
    from curation.models import ProjectQuality

    curator, _ = get_user_model().objects.get_or_create(username="bench-quality-curator")
    Membership.objects.get_or_create(project=project, user=curator, defaults={"role": Role.CURATOR})
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(curator)
    url = reverse("curation:annotator_quality", args=[project.pk])
    times = []
    for _ in range(LOADS):
        start = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200
        assert b'data-testid="project-agreement"' in response.content
    assert response.content.count(b'aria-label="Weight of') == ANNOTATORS
    empty, _ = Project.objects.get_or_create(name="bench-quality-empty")
    Membership.objects.get_or_create(project=empty, user=curator, defaults={"role": Role.CURATOR})
    ProjectQuality.objects.filter(project=empty).delete()
    first = timed(lambda: client.get(reverse("curation:annotator_quality", args=[empty.pk])))
    return times, first, len(response.content)


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = [" | ".join(header), " | ".join("---" for _ in header), *(" | ".join(row) for row in rows)]
    return "\n".join(f"| {line} |" for line in lines)


def report(  # type: ignore[no-untyped-def]
    items: int, ds: dict[str, float], refresh_s: float, rss_mib: float, loads: list[float], first: float, size: int
) -> str:
    sparse = ("sparse: EM over the label triples with np.bincount (`dawid_skene_sparse`)",)
    sparse += (f"{ds['sparse_s']:.2f} s", f"{ds['sparse_mib']:.0f} MiB")
    dense = ("dense: einsum over an items x annotators x classes tensor (`dawid_skene_dense`, the old way)",)
    dense += (f"{ds['dense_s']:.1f} s", f"{ds['dense_mib']:.0f} MiB")
    ratio = (
        "ratio",
        f"{ds['dense_s'] / ds['sparse_s']:.0f}x faster",
        f"{ds['dense_mib'] / ds['sparse_mib']:.0f}x less",
    )
    p50, top = 1000 * statistics.median(loads), 1000 * max(loads)
    page = [
        (
            "the worker's refresh of the cached statistics (every figure of the page, read from PostgreSQL)",
            f"{refresh_s:.1f} s (process peak RSS {rss_mib:.0f} MiB)",
        ),
        (
            f"the page with the statistics cached, {LOADS} loads (Django test client, logged in)",
            f"p50 {p50:.0f} ms, max {top:.0f} ms ({size // 1024} KiB of HTML)",
        ),
        ("the first load of a project with nothing cached (asks a worker, says so)", f"{1000 * first:.0f} ms"),
    ]
    return f"""
On {machine()}, PostgreSQL on the same machine, in one run; the machine's load average was
{os.getloadavg()[0]:.1f} at the end (other work shares its two cores, so these times are upper bounds).

**Dawid-Skene** on {LABELLED * PER_ITEM:,} labels ({LABELLED:,} items, each labelled by {PER_ITEM} of {ANNOTATORS}
annotators, 3 classes), to convergence ({ds["iterations"]:.0f} EM iterations for both):

{table(("implementation", "time", "peak memory (tracemalloc)"), [sparse, dense, ratio])}

The two agree: the largest difference between their posteriors is {ds["difference"]:.1e}.

**The annotators page** on a project of {items:,} items, {LABELLED * PER_ITEM:,} annotations by {ANNOTATORS}
annotators (with HelpSteer2 ratings, assignments, 5% skips, {GOLD} gold items):

{table(("what", "measured"), page)}

Before, the page computed all of it in the request: 205 s on the 1M-item project of issue #11, 188 s of them in
the dense Dawid-Skene. Now a request reads one cached row and the project's memberships, never the annotations;
a worker computes the figures again when a curator asks, or when a view finds them over 5 minutes old and the
labels changed.

Command: `.venv/bin/python bench/quality_scale.py --items {items}`
"""


def main() -> None:
    global LABELLED  # one knob for the whole script
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--labelled", type=int, default=100_000, help="items with annotations (a quick try: fewer)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    LABELLED = args.labelled
    django_setup(DATABASE)
    project = build_project(args.items)
    print("worker refresh…", flush=True)
    refresh_s, rss_mib = worker_refresh(project)
    print(f"  {refresh_s:.1f} s, peak RSS {rss_mib:.0f} MiB", flush=True)
    loads, first, size = page_loads(project)
    print(f"  page: p50 {1000 * statistics.median(loads):.0f} ms, max {1000 * max(loads):.0f} ms", flush=True)
    print("Dawid-Skene, sparse and dense…", flush=True)
    ds = dawid_skene_section()
    body = report(args.items, ds, refresh_s, rss_mib, loads, first, size)
    print(body)
    if not args.no_write:
        write_section("The annotators page on a big project", body)


if __name__ == "__main__":
    main()
