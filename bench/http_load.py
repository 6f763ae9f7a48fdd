"""A hundred annotators at once over HTTP, against the server as `make run` starts it, on the 1M-item project.

Each session logs in as one of bench/scale.py's annotators, then loops: GET the labeling page (the next item,
leased to it) -> POST its form (a plain form post, as the page works without JavaScript: answered 302 back to
the labeling page, so "next item" and "submit" are timed apart). The form is read from the page itself: its
action, its hidden fields (CSRF token, submission uuid), a choice for every radio group (the preference, each
rating) and every required text. Bounded: at most --cycles cycles per session and --max-seconds in all, each
request given up after --request-timeout, and only ever sent to 127.0.0.1.

Measured: end-to-end times at the client, and the server's own time per request from gunicorn's access log (%(D)s:
from the request's start in a worker thread to its end, without the wait for a thread), which tells the server's
share apart from the load generator's, on the same cores. Afterwards the database is checked: no item beyond its
overlap (annotations plus live leases), no annotator with an item twice, and every acknowledged submit (answered
2xx or 3xx) stored exactly once, found by the submission uuid its form sent.

    .venv/bin/python bench/scale.py                  # once: the project (kept between runs)
    .venv/bin/python bench/http_load.py              # starts gunicorn on a free port, 100 sessions x 20 cycles
    .venv/bin/python bench/http_load.py --url http://127.0.0.1:8000 --sessions 10 --cycles 5 --no-write
"""

import argparse
import html
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, django_setup, machine, percentile, write_section
from bench.scale import ANNOTATORS, DATABASE, PASSWORD, annotator_name, scale_project

# The server's database connections carry this name, so pg_stat_activity tells them apart.
APPLICATION_NAME = "concord-bench-web"
# A Redis database of the bench's own for anything the web enqueues, away from a `make run` worker's queues.
BROKER_DB = 12
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
LABEL_PATH = re.compile(r"^/projects/\d+/label/$")
TAKE_PATH = re.compile(r"^/projects/\d+/label/next/$")
SUBMIT_PATH = re.compile(r"^/projects/\d+/items/\d+/submit/$")


# The server, started as the Procfile's `web:` line starts it.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def database_url(database: str) -> str:
    url = os.environ.get("DATABASE_URL", "postgres://concord@127.0.0.1:55432/concord")
    return url.rsplit("/", 1)[0] + "/" + database.split("?")[0]


@dataclass
class Server:
    url: str
    access_log: Path | None
    process: subprocess.Popen[bytes] | None = None


def server_env(database: str, port: int, access_log: Path, extra: dict[str, str]) -> dict[str, str]:
    base = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:56379/0").rsplit("/", 1)[0]
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "concord.settings.local",
        "DEBUG": "0",  # as bench.common: DEBUG keeps every query of a request in memory
        "DATABASE_URL": f"{database_url(database)}?application_name={APPLICATION_NAME}",
        "CELERY_BROKER_URL": f"{base}/{BROKER_DB}",
        "CONCORD_HOST": "127.0.0.1",
        "CONCORD_PORT": str(port),
        "CONCORD_ACCESS_LOG": str(access_log),
        **extra,
    }


@contextmanager
def serving(database: str, log_dir: Path, url: str = "", **extra: str) -> Iterator[Server]:
    """The server at `url` (a running one), or gunicorn started here with the project's config on a free port
    against the bench database, stopped at the end."""
    if url:
        yield Server(url=local_url(url), access_log=None)
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    access_log = log_dir / "access.log"
    access_log.unlink(missing_ok=True)
    command = [sys.executable, "-m", "gunicorn", "-c", "concord/gunicorn.conf.py", "concord.wsgi"]
    env = server_env(database, port, access_log, extra)
    with (log_dir / "server.log").open("ab") as log:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(url=f"http://127.0.0.1:{port}", access_log=access_log, process=process)
    try:
        wait_ready(server, log_dir)
        yield server
    finally:
        stop(process)


def wait_ready(server: Server, log_dir: Path, limit_s: float = 300) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            sys.exit(f"the server exited: see {log_dir / 'server.log'}")
        try:
            if Session(server.url, timeout=30).request("GET", "/accounts/login/").status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"the server did not answer within {limit_s:.0f} s: see {log_dir / 'server.log'}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)


def local_url(url: str) -> str:
    """The URL, if it is http on 127.0.0.1; the load goes nowhere else."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or parsed.hostname != "127.0.0.1":
        sys.exit(f"refusing {url!r}: the load generator sends only to http://127.0.0.1")
    return f"http://127.0.0.1:{parsed.port or 80}"


# A client session: one keep-alive connection, its cookies.


@dataclass
class Response:
    status: int
    text: str
    headers: http.client.HTTPMessage
    seconds: float


class Session:
    def __init__(self, base: str, timeout: float) -> None:
        parsed = urllib.parse.urlsplit(local_url(base))
        self.host, self.port = "127.0.0.1", parsed.port or 80
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self.connection: http.client.HTTPConnection | None = None
        self.retries = 0

    def request(self, method: str, path: str, form: list[tuple[str, str]] | None = None) -> Response:
        body = urllib.parse.urlencode(form) if form is not None else None
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()), "Host": "127.0.0.1"}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Referer"] = f"http://127.0.0.1:{self.port}{path}"
        for attempt in (0, 1):
            reused = self.connection is not None
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            started = time.perf_counter()
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                text = response.read().decode()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A kept-alive connection the server closed meanwhile: once more on a new one (a submit sent
                # again carries the same submission uuid, which the server takes once).
                self.close()
                if attempt or not reused:
                    raise
                self.retries += 1
                continue
            except BaseException:
                self.close()
                raise
            seconds = time.perf_counter() - started
            self._keep_cookies(response.headers)
            if response.will_close:
                self.close()
            return Response(response.status, text, response.headers, seconds)
        raise AssertionError("unreachable")

    def _keep_cookies(self, headers: http.client.HTTPMessage) -> None:
        for header in headers.get_all("Set-Cookie") or []:
            cookie: SimpleCookie = SimpleCookie(header)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.coded_value

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def log_in(self, username: str, password: str) -> None:
        page = self.request("GET", "/accounts/login/")
        token = CSRF_INPUT.search(page.text)
        if page.status != 200 or token is None:
            raise RuntimeError(f"login page answered {page.status}")
        form = [("username", username), ("password", password), ("csrfmiddlewaretoken", token[1])]
        answer = self.request("POST", "/accounts/login/", form)
        if answer.status != 302:
            raise RuntimeError(f"login of {username} answered {answer.status}")


# The labeling page's form, read from the page.


@dataclass
class LabelForm:
    action: str = ""
    hidden: list[tuple[str, str]] = field(default_factory=list)
    radios: dict[str, list[str]] = field(default_factory=dict)
    texts: dict[str, int] = field(default_factory=dict)  # required text fields and their minimum length

    def filled(self, rng: random.Random) -> list[tuple[str, str]]:
        data = [(name, value) for name, value in self.hidden if name != "seconds_spent"]
        data.append(("seconds_spent", f"{rng.uniform(10, 90):.1f}"))
        data += [(name, rng.choice(values)) for name, values in self.radios.items()]
        data += [(name, "Bench load: " + "x" * minimum) for name, minimum in self.texts.items()]
        return data

    @property
    def submission_uuid(self) -> str:
        return dict(self.hidden).get("submission_uuid", "")


FORM = re.compile(r'<form id="annotation-form"(?P<attrs>[^>]*)>(?P<body>.*?)</form>', re.S)
TAG = re.compile(r"<(?P<tag>input|textarea)\b(?P<attrs>[^>]*)>", re.S)
ATTR = re.compile(r'([\w-]+)(?:="([^"]*)")?')


def _attrs(text: str) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in ATTR.findall(text)}


def label_form(page: str) -> LabelForm | None:
    """The annotation form of a labeling page; None when the page has no item (the queue is empty). Regular
    expressions rather than an HTML parser: html.parser takes ~15 ms a page, which the load generator's one core
    cannot spare a hundred times a second."""
    match = FORM.search(page)
    if match is None:
        return None
    form = LabelForm(action=_attrs(match["attrs"]).get("action", ""))
    for tag in TAG.finditer(match["body"]):
        a = _attrs(tag["attrs"])
        name = a.get("name")
        if not name:
            continue
        if tag["tag"] == "textarea":
            if "required" in a:
                form.texts[name] = int(a.get("minlength") or 0)
        elif a.get("type") == "hidden":
            form.hidden.append((name, a.get("value", "")))
        elif a.get("type") == "radio":
            form.radios.setdefault(name, []).append(a.get("value", ""))
    return form if form.action else None


# The load.


@dataclass
class Record:
    kind: str  # "next" or "submit"
    status: int  # 0: no answer (a timeout or a broken connection)
    seconds: float
    error: str = ""


@dataclass(frozen=True)
class Submit:
    uuid: str  # the submission uuid the form sent
    item_id: int
    answered: bool  # False: no answer came (a timeout, a broken connection)
    acknowledged: bool  # answered 2xx or 3xx


@dataclass
class SessionResult:
    username: str = ""
    records: list[Record] = field(default_factory=list)
    submits: list[Submit] = field(default_factory=list)
    empty: bool = False
    retries: int = 0


SUBMIT_ITEM = re.compile(r"/items/(\d+)/submit/")


def annotate(session: Session, project_id: int, cycles: int, deadline: float, username: str) -> SessionResult:
    rng = random.Random(username)
    result = SessionResult(username=username)
    for _ in range(cycles):
        if time.monotonic() > deadline:
            break
        page = timed(session, "next", "GET", f"/projects/{project_id}/label/", result)
        if page is None or page.status != 200:
            continue
        if 'data-testid="queue-next"' in page.text:
            page = take_next(session, project_id, page, result)
            if page is None:
                continue
        form = label_form(page.text)
        if form is None:
            result.empty = True
            break
        answer = timed(session, "submit", "POST", form.action, result, form.filled(rng))
        item = SUBMIT_ITEM.search(form.action)
        acknowledged = answer is not None and 200 <= answer.status < 400
        result.submits.append(
            Submit(form.submission_uuid, int(item[1]) if item else 0, answer is not None, acknowledged)
        )
    result.retries = session.retries
    return result


def take_next(session: Session, project_id: int, page: Response, result: SessionResult) -> Response | None:
    """A GET takes no lease: a page without an item offers the next one, taken by POST and then shown by the page
    it redirects to (after a submit, the submit's POST has taken it already). None: no answer came."""
    token = CSRF_INPUT.search(page.text)
    taken = timed(
        session,
        "next",
        "POST",
        f"/projects/{project_id}/label/next/",
        result,
        [("csrfmiddlewaretoken", token[1] if token else "")],
    )
    if taken is None or taken.status != 302:
        return taken  # the card saying why there is nothing to take
    return timed(session, "next", "GET", f"/projects/{project_id}/label/", result)


def timed(
    session: Session,
    kind: str,
    method: str,
    path: str,
    result: SessionResult,
    form: list[tuple[str, str]] | None = None,
) -> Response | None:
    started = time.perf_counter()
    try:
        response = session.request(method, path, form)
    except (OSError, http.client.HTTPException) as error:
        result.records.append(Record(kind, 0, time.perf_counter() - started, type(error).__name__))
        return None
    result.records.append(Record(kind, response.status, response.seconds))
    return response


def run_load(base: str, project_id: int, args: argparse.Namespace) -> tuple[list[SessionResult], float]:
    sessions = [Session(base, timeout=args.request_timeout) for _ in range(args.sessions)]
    print(f"logging {args.sessions} annotators in", flush=True)
    with ThreadPoolExecutor(max_workers=8) as pool:  # a password hash each: the server's cores, not the client's
        list(pool.map(lambda i: sessions[i].log_in(annotator_name(i % ANNOTATORS), PASSWORD), range(len(sessions))))
    for session in sessions:
        session.close()  # the load starts on fresh connections, not on ones the server may have timed out
    results: list[SessionResult] = [SessionResult() for _ in sessions]
    barrier = threading.Barrier(len(sessions) + 1)
    deadline: list[float] = []

    def body(index: int) -> None:
        barrier.wait()
        username = annotator_name(index % ANNOTATORS)
        results[index] = annotate(sessions[index], project_id, args.cycles, deadline[0], username)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(len(sessions))]
    for thread in threads:
        thread.start()
    print(f"{args.sessions} sessions x {args.cycles} cycles (at most {args.max_seconds} s)", flush=True)
    deadline.append(time.monotonic() + args.max_seconds)
    started = time.perf_counter()
    barrier.wait()
    for thread in threads:
        # The deadline stops new cycles; a request under way ends by its own timeout.
        thread.join(timeout=args.max_seconds + 2 * args.request_timeout + 60)
    elapsed = time.perf_counter() - started
    for session in sessions:
        session.close()
    return results, elapsed


# What the server says it spent: gunicorn's access log.

ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d+) \S+ (?P<micros>\d+)$')


def server_times(access_log: Path | None, since: int) -> dict[str, list[float]]:
    """Seconds per request by kind, from the access log's lines after byte `since`."""
    times: dict[str, list[float]] = {"next": [], "submit": []}
    if access_log is None or not access_log.exists():
        return times
    with access_log.open("rb") as log:
        log.seek(since)
        for raw in log:
            match = ACCESS_LINE.search(raw.decode(errors="replace").strip())
            if match is None:
                continue
            path = match["path"].split("?")[0]
            if (match["method"] == "GET" and LABEL_PATH.match(path)) or (
                match["method"] == "POST" and TAKE_PATH.match(path)
            ):
                times["next"].append(int(match["micros"]) / 1e6)
            elif match["method"] == "POST" and SUBMIT_PATH.match(path):
                times["submit"].append(int(match["micros"]) / 1e6)
    return times


# The server's connections: its client backends (a parallel query's workers carry their leader's name too).
SERVER_CONNECTIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND backend_type = 'client backend'"
)


class ConnectionWatch:
    """The most database connections the server held at once (pg_stat_activity, sampled)."""

    def __init__(self, database: str) -> None:
        self.url = database_url(database)
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            sql = SERVER_CONNECTIONS
            while not self._stop.is_set():
                row = conn.execute(sql, [APPLICATION_NAME]).fetchone()
                self.most = max(self.most, int(row[0]) if row else 0)
                self._stop.wait(0.1)

    def __enter__(self) -> "ConnectionWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# The invariants, checked in the database afterwards.


_BEYOND_SQL = """
SELECT count(*) FROM (
    SELECT a.item_id FROM {annotation} AS a JOIN {item} AS i ON i.id = a.item_id
    WHERE i.project_id = %s AND NOT i.is_gold
    GROUP BY a.item_id, i.extra_overlap HAVING count(*) > %s + i.extra_overlap
) AS beyond
"""


def invariants(project: Any, results: list[SessionResult], since: Any) -> tuple[dict[str, int], dict[str, int]]:
    """(violations, each of which must be 0; facts)."""
    from django.db import connection
    from django.db.models import Count, F
    from django.utils import timezone

    from annotate.models import Annotation, Assignment, Item

    now = timezone.now()
    ordinary = Item.objects.filter(project=project, is_gold=False)
    live = Assignment.objects.filter(item__project=project, status=Assignment.Status.LEASED, expires_at__gt=now)
    leases = dict(live.values("item_id").annotate(n=Count("id")).values_list("item_id", "n"))
    touched = set(leases) | set(
        Annotation.objects.filter(item__project=project, created_at__gte=since).values_list("item_id", flat=True)
    )
    over = []
    for item_id, counted, wanted in ordinary.filter(pk__in=touched).values_list(
        "pk", "annotation_count", F("extra_overlap") + project.overlap
    ):
        if counted + leases.get(item_id, 0) > wanted:
            over.append(item_id)
    with connection.cursor() as cursor:
        # Stored annotations per item, against the overlap, over the whole project (not only what was touched).
        sql = _BEYOND_SQL.format(annotation=Annotation._meta.db_table, item=Item._meta.db_table)
        cursor.execute(sql, [project.pk, project.overlap])
        beyond = cursor.fetchone()[0]
    twice = (
        Annotation.objects.filter(item__project=project)
        .values("item_id", "annotator_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    stored, earlier, lost = _acknowledged_outcomes(results)
    submits = [submit for result in results for submit in result.submits]
    new = Annotation.objects.filter(item__project=project, created_at__gte=since).count()
    violations = {
        "items the run touched beyond their overlap (annotations + live leases)": len(over),
        "items with more annotations than their overlap": beyond,
        "annotators with an item twice": twice,
        "acknowledged submits lost (neither stored nor an earlier answer of the same item)": lost,
    }
    facts = {
        "acknowledged submits stored once under their uuid": stored,
        "acknowledged submits answered with the annotator's earlier answer (a submit of the same item whose answer "
        "the client had given up on)": earlier,
        "submits without an answer": sum(not submit.answered for submit in submits),
        "annotations stored during the run": new,
    }
    return violations, facts


def _acknowledged_outcomes(results: list[SessionResult]) -> tuple[int, int, int]:
    """How many acknowledged submits are stored once under their own uuid; how many were answered "your earlier
    answer stands" (a page shown again after a submit the client gave up on, which the server took meanwhile: its
    uuid is the one stored for that annotator and item); how many are neither (lost)."""
    from django.contrib.auth import get_user_model

    from annotate.models import Annotation

    users = dict(
        get_user_model().objects.filter(username__in=[r.username for r in results]).values_list("username", "pk")
    )
    acknowledged = [(r.username, s) for r in results for s in r.submits if s.acknowledged]
    pairs = {(users[name], submit.item_id) for name, submit in acknowledged}
    by_pair: dict[tuple[int, int], str] = {}
    for annotator_id, item_id, value in Annotation.objects.filter(
        item_id__in={item for _, item in pairs}, annotator_id__in={user for user, _ in pairs}
    ).values_list("annotator_id", "item_id", "submission_uuid"):
        by_pair[(annotator_id, item_id)] = str(value)
    sent: dict[tuple[str, int], set[str]] = {}  # every uuid each session sent for each item
    for result in results:
        for submit in result.submits:
            sent.setdefault((result.username, submit.item_id), set()).add(str(uuid.UUID(submit.uuid)))
    stored = earlier = lost = 0
    for name, submit in acknowledged:
        kept = by_pair.get((users[name], submit.item_id))
        if kept == str(uuid.UUID(submit.uuid)):
            stored += 1
        elif kept is not None and kept in sent[(name, submit.item_id)]:
            earlier += 1
        else:
            lost += 1
    return stored, earlier, lost


# Reporting.


def stats(values: list[float]) -> str:
    if not values:
        return "| – | – | – | – |"
    cells = [statistics.median(values), percentile(values, 0.95), percentile(values, 0.99), max(values)]
    return "| " + " | ".join(f"{1000 * v:,.0f} ms" if v < 10 else f"{v:,.1f} s" for v in cells) + " |"


def report(
    args: argparse.Namespace,
    results: list[SessionResult],
    elapsed: float,
    server: dict[str, list[float]],
    checks: tuple[dict[str, int], dict[str, int]],
    most_connections: int,
) -> tuple[list[str], bool]:
    records = [record for result in results for record in result.records]
    times = {kind: [r.seconds for r in records if r.kind == kind and r.status] for kind in ("next", "submit")}
    statuses = Counter(r.status for r in records)
    errors = sum(count for status, count in statuses.items() if status == 0 or status >= 400)
    cycles = sum(1 for r in records if r.kind == "submit" and 200 <= r.status < 400)
    workers = os.environ.get("CONCORD_WEB_WORKERS", str(min(2 * (os.cpu_count() or 1) + 1, 12)))
    threads = os.environ.get("CONCORD_WEB_THREADS", "4")
    server_line = "the server at --url" if args.url else f"gunicorn, {workers} workers x {threads} threads (gthread)"
    violations, facts = checks
    broken = [name for name, count in violations.items() if count]
    lines = [
        f"{args.sessions} annotator sessions at once, each up to {args.cycles} cycles of GET the labeling page (next "
        f"item) -> POST its form (submit), on the project of bench/scale.py ({args.items:,} items); a session's first "
        f"item is taken by POST (`label/next/`, as a GET takes no lease), each later one by the submit before it; "
        f"{server_line}, "
        f"settings `concord.settings.local` with DEBUG off, load generator and PostgreSQL on the same machine "
        f"({machine()}). Command: `.venv/bin/python bench/http_load.py --sessions {args.sessions} "
        f"--cycles {args.cycles}`.",
        "",
        "| request | p50 | p95 | p99 | max |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| next item, end to end {stats(times['next'])}",
        f"| next item, at the server {stats(server['next'])}",
        f"| submit, end to end {stats(times['submit'])}",
        f"| submit, at the server {stats(server['submit'])}",
        "",
        f"{cycles:,} cycles ({len(records):,} requests) in {elapsed:.0f} s: {cycles / elapsed:.1f} submits/s, "
        f"{len(records) / elapsed:.1f} requests/s. Answers: "
        + ", ".join(f"{status or 'none'}: {count:,}" for status, count in sorted(statuses.items()))
        + f"; errors (no answer, 4xx, 5xx): {errors}. Sessions that found the queue empty: "
        f"{sum(r.empty for r in results)}; requests sent again on a new connection: {sum(r.retries for r in results)}."
        f" The server held at most {most_connections} database connections.",
        "",
        "Checked in the database afterwards: "
        + "; ".join(f"{name}: {count:,}" for name, count in {**violations, **facts}.items())
        + (". **Broken: " + ", ".join(broken) + ".**" if broken else ". Every invariant holds."),
    ]
    return lines, errors == 0 and not broken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000, help="the bench/scale.py project to load")
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--url", default="", help="a server already running on 127.0.0.1 (default: start one)")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=20, help="next -> submit cycles per session, at most")
    parser.add_argument("--max-seconds", type=float, default=900, help="no cycle starts after this")
    parser.add_argument("--request-timeout", type=float, default=120)
    parser.add_argument("--section", default="100 annotators at once over HTTP on a 1M-item project")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    if args.url:
        local_url(args.url)
    django_setup(args.database)
    from django.utils import timezone

    project = scale_project(args.items)
    log_dir = ROOT / "var" / "bench-http"
    with serving(args.database, log_dir, args.url) as server:
        since_bytes = server.access_log.stat().st_size if server.access_log and server.access_log.exists() else 0
        since = timezone.now()
        with ConnectionWatch(args.database) as watch:
            results, elapsed = run_load(server.url, project.pk, args)
        server_side = server_times(server.access_log, since_bytes)
    checks = invariants(project, results, since)
    # Every request and submit of the run, for a look afterwards.
    raw = [asdict(result) for result in results]
    (log_dir / "last-run.json").write_text(json.dumps({"elapsed": elapsed, "sessions": raw}, indent=1))
    lines, ok = report(args, results, elapsed, server_side, checks, watch.most)
    print("\n".join(lines))
    if not args.no_write:
        write_section(args.section, "\n".join(lines))
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
