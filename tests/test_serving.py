"""The web server as `make run` starts it (gunicorn with concord/gunicorn.conf.py, each worker's connections in a
psycopg pool) under many clients at once, some of which hang up early.

What it guards against (issue 11): `manage.py runserver` kept a database connection for every client thread,
including those of clients that had gone, until PostgreSQL ran out ("too many clients") and logins answered 500.
The server here runs in a process of its own against the test database, as it would in production.
"""

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from http.cookies import SimpleCookie
from pathlib import Path

import psycopg
import pytest
from django.conf import settings as django_settings

from annotate.models import Project
from tests.annotate.factories import DEFAULT_PASSWORD, ItemFactory, ProjectFactory, member
from tests.waits import HANG_GUARD_S, wait_for

CLIENTS = 60
WORKERS = 2
THREADS = 4
# What a request may wait for the server on this slow, shared machine before the test calls it hung.
REQUEST_GUARD_S = 120
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def database_url(application_name: str) -> str:
    """The test database (inside a test, settings name it), with an application name the server's connections
    carry, so that pg_stat_activity tells them from everyone else's."""
    db = django_settings.DATABASES["default"]
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return (
        f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}?application_name={application_name}"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(port: int, url: str, log_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "concord.settings.test",
        "DATABASE_URL": url,
        "CONCORD_DB_POOL": "1",  # as `make run` serves (the test settings leave the pool off for the test runner)
        "CONCORD_HOST": "127.0.0.1",
        "CONCORD_PORT": str(port),
        "CONCORD_WEB_WORKERS": str(WORKERS),
        "CONCORD_WEB_THREADS": str(THREADS),
        "CONCORD_ACCESS_LOG": str(log_dir / "access.log"),
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "concord/gunicorn.conf.py", "concord.wsgi"]
    log = (log_dir / "server.log").open("wb")
    # A session of its own, so that stopping it takes its workers too.
    return subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=django_settings.BASE_DIR
    )


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=HANG_GUARD_S)


class Browser:
    """One client: its own connections, its cookies, and every status it was answered."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.statuses: list[int] = []

    def request(self, method: str, path: str, body: str = "") -> str:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_GUARD_S)
        try:
            connection.request(method, path, body=body or None, headers=self._headers(body))
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        self.statuses.append(response.status)
        for header in response.headers.get_all("Set-Cookie") or []:
            cookie: SimpleCookie = SimpleCookie(header)
            self.cookies.update({name: morsel.value for name, morsel in cookie.items()})
        return text

    def _headers(self, body: str) -> dict[str, str]:
        headers = {"Cookie": "; ".join(f"{name}={value}" for name, value in self.cookies.items())}
        if body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return headers

    def log_in(self, username: str) -> None:
        page = self.request("GET", "/accounts/login/")
        token = CSRF_INPUT.search(page)
        assert token, page[:500]
        form = f"username={username}&password={DEFAULT_PASSWORD}&csrfmiddlewaretoken={token[1]}"
        self.request("POST", "/accounts/login/", form)
        assert self.statuses[-1] == 302, self.statuses  # to the projects

    def hang_up(self, path: str, *, read: int) -> None:
        """Ask for a page and go away: after `read` bytes of the answer, or (0) without waiting for it."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=REQUEST_GUARD_S) as sock:
            cookie = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n".encode())
            if read:
                sock.recv(read)

    def hang_up_mid_request(self) -> None:
        """Send half a request and go away."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=REQUEST_GUARD_S) as sock:
            sock.sendall(b"POST /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\nuser")


def visit(browser: Browser, username: str, project: Project, index: int) -> None:
    """Log in, open pages, and hang up in one of three ways on the way."""
    label, home = f"/projects/{project.pk}/label/", f"/projects/{project.pk}/"
    browser.log_in(username)
    if index % 3 == 0:
        browser.hang_up(label, read=0)
    elif index % 3 == 1:
        browser.hang_up(label, read=64)
    else:
        browser.hang_up_mid_request()
    browser.request("GET", label)  # the page again, after one it did not wait for
    browser.hang_up(home, read=0)


# The server's connections: its client backends (a parallel query's workers carry their leader's name too).
SERVER_CONNECTIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND backend_type = 'client backend'"
)


class ConnectionWatch:
    """The most connections the server held at once, sampled from pg_stat_activity on a connection of its own."""

    def __init__(self, url: str, application_name: str) -> None:
        self.url, self.application_name = url.split("?")[0], application_name
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def count(self) -> int:
        with psycopg.connect(self.url, autocommit=True) as conn:
            sql = SERVER_CONNECTIONS
            row = conn.execute(sql, [self.application_name]).fetchone()
        return int(row[0]) if row else 0

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            sql = SERVER_CONNECTIONS
            while not self._stop.is_set():
                row = conn.execute(sql, [self.application_name]).fetchone()
                self.most = max(self.most, int(row[0]) if row else 0)
                self.samples += 1
                self._stop.wait(0.02)

    def __enter__(self) -> "ConnectionWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=HANG_GUARD_S)


def run_clients(port: int, usernames: list[str], project: Project) -> tuple[list[Browser], list[BaseException]]:
    browsers = [Browser(port) for _ in usernames]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(usernames))

    def body(index: int) -> None:
        try:
            barrier.wait(timeout=HANG_GUARD_S)
            visit(browsers[index], usernames[index], project, index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(len(usernames))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HANG_GUARD_S)
    return browsers, errors


@pytest.mark.django_db(transaction=True)
def test_many_clients_hanging_up_get_no_error_and_the_server_holds_at_most_its_pool(tmp_path):
    project = ProjectFactory(overlap=2)
    ItemFactory.create_batch(20, project=project)  # fewer than the clients want: some are told "all done"
    usernames = [member(project).username for _ in range(CLIENTS)]
    application_name = f"concord-serving-test-{uuid.uuid4().hex[:8]}"
    url = database_url(application_name)
    port = free_port()
    server = start_server(port, url, tmp_path)
    pool_bound = WORKERS * THREADS
    try:
        assert wait_for(lambda: server.poll() is not None or answers(port))
        assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
        with ConnectionWatch(url, application_name) as watch:
            browsers, errors = run_clients(port, usernames, project)
            after = watch.count()
    finally:
        stop_server(server)
    log = (tmp_path / "server.log").read_text()[-3000:]
    assert not errors, (errors[:3], log)
    statuses = Counter(status for browser in browsers for status in browser.statuses)
    assert set(statuses) <= {200, 302}, (statuses, log)
    assert statuses[200] == CLIENTS * 2  # the login page and the labeling page
    assert watch.samples > 0
    assert 0 < watch.most <= pool_bound, (watch.most, pool_bound)
    assert after <= pool_bound


def answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_GUARD_S)
        connection.request("GET", "/accounts/login/")
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except OSError:
        time.sleep(0.2)
        return False
