"""A training run survives kill -9 of its worker: the redelivered task resumes it from its checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from concord import jobs
from concord.celery import app as celery_app
from tests.annotate.factories import ProjectFactory
from tests.training.conftest import frozen_version
from tests.waits import HANG_GUARD_S, wait_for
from training import tasks
from training.models import TrainingRun
from training.services.runs import checkpoint_step, training_run_enqueue

# The workers' broker: a Redis database of this test's own, so the short visibility timeout below (which makes
# a new worker take back a killed worker's unacknowledged task at once) touches no other queue's messages.
BROKER_DB = 11
VISIBILITY_TIMEOUT_S = 3


def broker_url() -> str:
    base = django_settings.CELERY_BROKER_URL.rsplit("/", 1)[0]
    return f"{base}/{BROKER_DB}"


def database_url() -> str:
    db = django_settings.DATABASES["default"]  # inside the test: the test database
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def worker_env(training_root: Path, **extra: str) -> dict[str, str]:
    """A worker's environment: the test database, this test's broker with its short visibility timeout."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "concord.settings.test",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": broker_url(),
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S),
        "TRAINING_ROOT": str(training_root),
        "CONCORD_MODEL_ROOTS": ",".join(django_settings.CONCORD_MODEL_ROOTS),  # where the tiny backbones are
        **extra,
    }


def start_worker(name: str, queue: str, env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "concord",
        "worker",
        "-Q",
        queue,
        "--concurrency=1",
        "--pool=prefork",
        "--prefetch-multiplier=1",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "info",
        "-n",
        f"{name}-{queue}@%h",
    ]
    log = (log_dir / f"{name}.log").open("wb")
    # A session of its own, so killpg takes the pool child with the parent.
    return subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=django_settings.BASE_DIR
    )


def forget_queue(queue: str, url: str | None = None) -> None:
    """Leave nothing of the test's queue in Redis (this test's broker unless `url` is given): its messages, its
    binding, and any unacknowledged delivery."""
    with celery_app.connection_for_write(url or broker_url()) as connection:
        channel = connection.default_channel
        channel.queue_purge(queue)
        client = channel.client
        for tag, payload in client.hgetall("unacked").items():
            if queue in json.loads(payload)[2:]:  # [message, exchange, routing key]
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)
        client.delete(f"_kombu.binding.{queue}")


def kill(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=HANG_GUARD_S)


@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_s_run_resumes_from_its_checkpoint_on_another(settings, tmp_path, tiny_backbone, monkeypatch):
    settings.TRAINING_ROOT = tmp_path / "training"
    monkeypatch.setattr(jobs, "send", lambda name, run_id: None)  # sent by hand below
    project = ProjectFactory()
    version = frozen_version(project, count=40, splits={"train": 0.8, "validation": 0.2, "test": 0.0})
    config = {
        "backbone": str(tiny_backbone),
        "epochs": 3,
        "batch_size": 2,
        "max_length": 32,
        "learning_rate": 1e-3,
        "checkpoint_every": 8,  # each checkpoint costs a few hundred ms here
        "logging_every": 1,
    }
    run = training_run_enqueue(project=project, version=version, config=config, created_by=None)
    out = Path(run.output_dir)
    queue = f"test-kill-{uuid.uuid4().hex}"
    env = worker_env(settings.TRAINING_ROOT)
    workers = [start_worker("first", queue, env, tmp_path)]
    try:
        with celery_app.connection_for_write(broker_url()) as connection:
            tasks.training_run_execute_task.apply_async((run.pk,), queue=queue, connection=connection)
        sent = time.monotonic()
        assert wait_for(lambda: checkpoint_step(out) > 0), (tmp_path / "first.log").read_text()[-3000:]
        kill(workers[0])
        killed = TrainingRun.objects.get(pk=run.pk)
        assert killed.status == TrainingRun.Status.RUNNING
        assert not killed.finished
        at_kill = checkpoint_step(out)
        # The task is redelivered once it has gone unacknowledged for the visibility timeout (what is tested, so a
        # wait for a length of time).
        time.sleep(max(0.0, VISIBILITY_TIMEOUT_S + 0.5 - (time.monotonic() - sent)))
        workers.append(start_worker("second", queue, env, tmp_path))
        assert wait_for(lambda: TrainingRun.objects.get(pk=run.pk).finished, timeout=HANG_GUARD_S), (
            tmp_path / "second.log"
        ).read_text()[-3000:]
    finally:
        for worker in workers:
            kill(worker)
        forget_queue(queue)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, (run.error, run.log)
    resumed_from = run.metrics["resumed_from"]
    assert resumed_from >= at_kill > 0
    assert run.step == run.total_steps
    claims = [line for line in run.log.splitlines() if "claimed by" in line]
    assert len(claims) == 2, run.log
    assert "starting" in claims[0]
    assert f"resuming from step {resumed_from}" in claims[1]
    assert claims[0].split("claimed by pid ")[1].split()[0] != claims[1].split("claimed by pid ")[1].split()[0]
    steps = [point["step"] for point in run.history]
    assert steps == sorted(set(steps)), "the history went back: the run restarted rather than resumed"
    assert steps[0] < resumed_from < steps[-1]
