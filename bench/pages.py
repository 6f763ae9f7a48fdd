"""Every curator and admin page on the 1M-item project: each loaded 5 times over HTTP, logged in as its admin.

The pages are found in the URL configuration of annotate, curation and training (every route a GET can open,
filled in with ids from the project: an item in the review queue, an import batch, the frozen version, the
training run, the campaign and its round), plus the review queue under each reason, the item list's gold filter
and second page, the campaign's decision filters, the REST API and Django's admin lists. Routes that change
something (remove, stop, freeze, ...) are left out, and a route that answers a GET with 405 is a form's target,
not a page. Against the server as `make run` starts it (gunicorn with the project's config, started here on a
free port unless --url names a running one), one request at a time. A load that takes longer than --timeout is
given up (">60 s") and the server is restarted, so the page's lingering work does not slow the next ones.

    .venv/bin/python bench/scale.py     # once: the project (kept between runs)
    .venv/bin/python bench/pages.py     # about 10 minutes while pages are slow
    .venv/bin/python bench/pages.py --only review --loads 2 --no-write
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, django_setup, machine, write_section
from bench.http_load import BROKER_DB, Server, Session, database_url, serving, stop
from bench.scale import ADMIN, DATABASE, PASSWORD, scale_project

# Route names (their last word) that change something on a GET or serve a file: never loaded.
CHANGES = re.compile(
    r"(^|_)(remove|stop|close|cancel|resume|promote|freeze|create|override|pause|weight|threshold|refresh|submit"
    r"|skip|download|delete)$"
)
NAMESPACES = ("annotate", "curation", "training")


@dataclass
class Page:
    name: str
    path: str
    times: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    timed_out: bool = False


def ids(project: Any) -> dict[str, int]:
    """A value for each URL parameter, from the project: the pages a curator would open."""
    from django.db.models import Q

    from annotate.models import ImportBatch, Item, Membership, Role
    from curation.models import DatasetVersion, ExportJob
    from training.models import Campaign, PairDecision, TrainingRun

    disputed = Item.objects.filter(project=project, is_gold=False, prefer_a_count__gt=0, prefer_b_count__gt=0)
    item = disputed.order_by("pk").first() or Item.objects.filter(project=project).order_by("pk").first()
    values = {
        "project_id": project.pk,
        "item_id": item.pk if item else None,
        "batch_id": ImportBatch.objects.filter(project=project).values_list("pk", flat=True).first(),
        "version_id": DatasetVersion.objects.filter(projects=project, status="frozen")
        .values_list("pk", flat=True)
        .first(),
        "run_id": TrainingRun.objects.filter(project=project).values_list("pk", flat=True).first(),
        "campaign_id": Campaign.objects.filter(project=project).values_list("pk", flat=True).first(),
        "number": 1,
        "membership_id": Membership.objects.filter(project=project, role=Role.ANNOTATOR)
        .values_list("pk", flat=True)
        .first(),
        "decision_id": PairDecision.objects.filter(round__campaign__project=project)
        .filter(~Q(decision=""))
        .values_list("pk", flat=True)
        .first(),
        "job_id": ExportJob.objects.filter(version__projects=project).values_list("pk", flat=True).first(),
    }
    return {name: value for name, value in values.items() if value is not None}


def routes() -> Iterator[tuple[str, list[str]]]:
    """(namespace:name, its parameters) of every route in the apps' URL configurations."""
    from django.urls import URLPattern, URLResolver, get_resolver

    def walk(patterns: list[Any], namespace: str) -> Iterator[tuple[str, list[str]]]:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                yield from walk(entry.url_patterns, entry.namespace or namespace)
            elif isinstance(entry, URLPattern) and entry.name and namespace in NAMESPACES:
                yield f"{namespace}:{entry.name}", list(getattr(entry.pattern, "converters", {}))

    yield from walk(get_resolver().url_patterns, "")


def pages(project: Any, only: str) -> list[Page]:
    from django.urls import reverse

    from annotate.rules import REASON_LABELS

    values = ids(project)
    found: list[Page] = []
    for name, parameters in routes():
        if CHANGES.search(name.split(":")[1]) or any(p not in values for p in parameters):
            continue
        found.append(Page(name, reverse(name, kwargs={p: values[p] for p in parameters})))
    p = project.pk
    extras = [
        (f"curation:review_queue?reason={reason}", f"/projects/{p}/review/?reason={reason}") for reason in REASON_LABELS
    ]
    extras += [
        ("curation:review_queue?page=2", f"/projects/{p}/review/?page=2"),
        ("annotate:item_list?gold=1", f"/projects/{p}/items/?gold=1"),
        ("annotate:item_list?page=2", f"/projects/{p}/items/?page=2"),
        ("api: versions", "/api/v1/versions/?format=json"),
        ("django-admin: items", "/django-admin/annotate/item/"),
        ("django-admin: annotations", "/django-admin/annotate/annotation/"),
    ]
    if "campaign_id" in values:
        decisions = f"/projects/{p}/campaigns/{values['campaign_id']}/rounds/1/decisions/"
        extras += [
            ("training:decision_list?routed=yes", decisions + "?routed=yes"),
            ("training:decision_list?decision=flip", decisions + "?decision=flip"),
            ("training:decision_list?page=2", decisions + "?page=2"),
        ]
    if "version_id" in values:
        version = values["version_id"]
        extras += [
            ("api: version", f"/api/v1/versions/{version}/?format=json"),
            ("api: version manifest", f"/api/v1/versions/{version}/manifest/?format=json"),
        ]
    found += [Page(name, path) for name, path in extras]
    return [page for page in found if only in page.name]


def load(pages_: list[Page], server: Server, loads: int, timeout: float, restart: Any) -> None:
    session = Session(server.url, timeout=timeout)
    session.log_in(ADMIN, PASSWORD)
    for page in pages_:
        for _ in range(loads):
            started = time.perf_counter()
            try:
                response = session.request("GET", page.path)
            except TimeoutError:
                page.timed_out = True
                print(f"  {page.name}: no answer within {timeout:.0f} s; restarting the server", flush=True)
                session.close()
                server = restart()
                session = Session(server.url, timeout=timeout)
                session.log_in(ADMIN, PASSWORD)
                break
            page.times.append(time.perf_counter() - started)
            page.statuses.append(response.status)
            if response.status == 405:
                break  # a form's target, not a page
        print(f"  {page.name}: {' | '.join(cells(page))} {page.statuses}", flush=True)


def cells(page: Page) -> tuple[str, str]:
    """p50 and max; a load given up counts as the slowest."""
    if not page.times:
        return ("> timeout", "> timeout") if page.timed_out else ("–", "–")
    if page.timed_out:
        return f"{fmt(statistics.median(page.times))} (then > timeout)", "> timeout"
    return fmt(statistics.median(page.times)), fmt(max(page.times))


def fmt(seconds: float) -> str:
    return f"{1000 * seconds:,.0f} ms" if seconds < 1 else f"{seconds:,.1f} s"


class Restartable:
    """The server (started here), which a timed-out page restarts."""

    def __init__(self, database: str, url: str, worker: bool) -> None:
        self.database, self.url, self.worker = database, url, worker
        self.inner: ExitStack | None = None

    def start(self) -> Server:
        if self.inner is not None:
            self.inner.close()
        self.inner = ExitStack()
        server = self.inner.enter_context(serving(self.database, ROOT / "var" / "bench-pages", self.url))
        if self.worker and not self.url:
            self.inner.enter_context(celery_worker(self.database))
        return server

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


@contextmanager
def celery_worker(database: str) -> Iterator[None]:
    """A default-queue worker on the bench database and the bench's own broker, for pages whose figures a worker
    computes."""
    base = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:56379/0").rsplit("/", 1)[0]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "concord.settings.local",
        "DEBUG": "0",
        "DATABASE_URL": database_url(database),
        "CELERY_BROKER_URL": f"{base}/{BROKER_DB}",
    }
    command = [sys.executable, "-m", "celery", "-A", "concord", "worker", "-Q", "default", "--concurrency=1"]
    command += ["--without-gossip", "--without-mingle", "-n", "bench-pages@%h"]
    log = (ROOT / "var" / "bench-pages" / "worker.log").open("ab")
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield
    finally:
        stop(process)


def warm(project: Any) -> list[tuple[str, float]]:
    """Run the jobs a worker runs for these pages (their figures, counts and review columns), timed: the pages then
    show what a worker left them, as they do once a deployment has run a while."""
    from annotate.services.project_counts import project_counts_refresh
    from curation.services.quality import project_quality_refresh, project_quality_request
    from training.services.review_sync import review_queue_sync_run

    def review_columns() -> None:
        from annotate.models import Project

        Project.objects.filter(pk=project.pk).update(review_key="")  # from scratch, as for a new model
        review_queue_sync_run(project_id=project.pk)

    def quality() -> None:
        project_quality_refresh(quality_id=project_quality_request(project=project, force=True).pk)

    jobs = [
        ("every item's review columns for the active model (training.review_tasks)", review_columns),
        ("the annotators page's and dashboard's figures (curation.tasks)", quality),
        ("the project's counts (annotate.tasks)", lambda: project_counts_refresh(project_id=project.pk)),
    ]
    timings = []
    for name, job in jobs:
        started = time.perf_counter()
        job()
        timings.append((name, time.perf_counter() - started))
        print(f"warmed {name}: {timings[-1][1]:.1f} s", flush=True)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000, help="the bench/scale.py project to load")
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--url", default="", help="a server already running on 127.0.0.1 (default: start one)")
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=60, help="seconds a load may take before it is given up")
    parser.add_argument("--only", default="", help="only the pages whose name contains this")
    parser.add_argument("--worker", action="store_true", help="also start a Celery worker (default queue)")
    parser.add_argument(
        "--warm", action="store_true", help="first run the workers' jobs the pages read (timed), as a worker would"
    )
    parser.add_argument("--section", default="Every page on a 1M-item project")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    django_setup(args.database)
    from annotate.models import Annotation, Membership

    project = scale_project(args.items)
    annotations = Annotation.objects.filter(item__project=project).count()
    annotators = Membership.objects.filter(project=project, role="annotator").count()
    warmed = warm(project) if args.warm else []
    found = pages(project, args.only)
    print(f"{len(found)} pages of {project.name!r}, {args.loads} loads each", flush=True)
    started = time.perf_counter()
    server = Restartable(args.database, args.url, args.worker)
    try:
        load(found, server.start(), args.loads, args.timeout, server.start)
    finally:
        server.close()
    shown = [page for page in found if 405 not in page.statuses]
    slow = [page for page in shown if page.timed_out or (page.times and statistics.median(page.times) >= 1)]
    lines = [
        f"Each page loaded {args.loads} times in a row over HTTP, logged in as the project's admin, on the project "
        f"of bench/scale.py ({args.items:,} items, {annotations:,} annotations by {annotators} annotators); the "
        "server as `make run` "
        f"starts it (gunicorn, `concord.settings.local` with DEBUG off), PostgreSQL on the same machine "
        f'({machine()}). A load given up after {args.timeout:.0f} s reads "> timeout". Command: '
        f"`.venv/bin/python bench/pages.py`. {len(shown) - len(slow)} of {len(shown)} pages answer in under a "
        f"second (p50); {time.perf_counter() - started:.0f} s in all.",
        "",
        "| page | path | p50 | max | status |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    if warmed:
        done = "; ".join(f"{name} {seconds:.1f} s" for name, seconds in warmed)
        lines[0] += f" Before the loads, the workers' jobs these pages read ran once, as a worker runs them: {done}."
    for page in shown:
        statuses = ", ".join(str(s) for s in sorted(set(page.statuses))) or "–"
        p50, most = cells(page)
        lines.append(f"| {page.name} | `{page.path}` | {p50} | {most} | {statuses} |")
    print("\n".join(lines))
    if not args.no_write:
        write_section(args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
