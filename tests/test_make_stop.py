"""`make stop` stops this checkout's `make run` (the honcho whose pid run.sh wrote in var/honcho.pid) and nothing
else: not another checkout's honcho or workers, not a process that a stale pid file names.

Each test runs `make stop` in a copy of the Makefile and scripts/: a second checkout with a var/ of its own and
no services, pointed at ports nothing listens on, so its services.sh finds nothing to stop (never this checkout's
PostgreSQL or Redis). Harmless sleeping processes stand for honcho and the workers."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.waits import HANG_GUARD_S, wait_for

ROOT = Path(__file__).resolve().parent.parent
SLEEP = "import time; time.sleep(300)"
HONCHO = ("honcho", "start", "-f", "Procfile")
WORKER = ("celery", "-A", "concord", "worker", "-Q", "default")
# A honcho deaf to SIGTERM, with a child in a session of its own (as honcho starts the Procfile's) that is too;
# the child's pid goes to the file named by its first argument.
DEAF = f"""
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
code = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); {SLEEP}"
child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
with open(sys.argv[1] + ".part", "w") as out:
    out.write(str(child.pid))
__import__("os").rename(sys.argv[1] + ".part", sys.argv[1])
{SLEEP}
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "scripts", copy / "scripts")
    shutil.copy(ROOT / "Makefile", copy / "Makefile")
    (copy / "var").mkdir()
    return copy


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The test's stand-ins, killed at the end whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def stand_in(processes: list[subprocess.Popen[bytes]], *args: str, cwd: Path, code: str = SLEEP) -> int:
    """Start a harmless process whose command line ends with `args`, in a process group of its own."""
    process = subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, start_new_session=True)
    processes.append(process)
    return process.pid


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_stop(checkout: Path, **env: str) -> subprocess.CompletedProcess[str]:
    outer = {"DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "VENV", "MAKEFLAGS", "MAKELEVEL", "MFLAGS"}
    environment = {key: value for key, value in os.environ.items() if key not in outer}
    environment.update(CONCORD_PG_PORT=str(unused_port()), CONCORD_REDIS_PORT=str(unused_port()), **env)
    return subprocess.run(
        ["make", "stop"], cwd=checkout, env=environment, capture_output=True, text=True, timeout=HANG_GUARD_S
    )


def test_it_stops_this_checkout_s_honcho_and_no_other_checkout_s_processes(checkout, tmp_path, processes):
    ours = stand_in(processes, *HONCHO, cwd=checkout)
    (checkout / "var" / "honcho.pid").write_text(f"{ours}\n")
    theirs = [stand_in(processes, *HONCHO, cwd=tmp_path), stand_in(processes, *WORKER, cwd=tmp_path)]
    result = make_stop(checkout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not running(ours), "make stop returned before this checkout's honcho had stopped"
    assert all(running(pid) for pid in theirs), "make stop stopped another checkout's processes"
    assert not (checkout / "var" / "honcho.pid").exists()


@pytest.mark.parametrize("named", [HONCHO, WORKER], ids=["another-checkout-s-honcho", "a-worker"])
def test_a_stale_pid_file_stops_nothing(checkout, tmp_path, processes, named):
    other = stand_in(processes, *named, cwd=tmp_path)  # the pid was reused, by another checkout's process
    (checkout / "var" / "honcho.pid").write_text(f"{other}\n")
    result = make_stop(checkout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert running(other)
    assert not (checkout / "var" / "honcho.pid").exists()


def test_it_kills_a_honcho_deaf_to_sigterm_with_the_processes_it_started(checkout, tmp_path, processes):
    child_pid_file = tmp_path / "child.pid"
    ours = stand_in(processes, str(child_pid_file), *HONCHO, cwd=checkout, code=DEAF)
    assert wait_for(child_pid_file.exists)
    child = int(child_pid_file.read_text())
    (checkout / "var" / "honcho.pid").write_text(f"{ours}\n")
    try:
        result = make_stop(checkout, CONCORD_STOP_WAIT_S="1")
        assert result.returncode == 0, result.stdout + result.stderr
        assert not running(ours)
        assert wait_for(lambda: not running(child)), "the process honcho started survived"
    finally:
        if running(child):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
