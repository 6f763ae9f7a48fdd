"""Training runs in several processes (CONCORD_TRAIN_PROCESSES): started from the web app, trained by torchrun's
ranks under a real Celery worker on CPUs (gloo), relayed to the run's page; a rank killed with kill -9 is
restarted by torchrun from the last checkpoint and the run still succeeds."""

import os
import signal
import uuid
from pathlib import Path

import pytest
from django.urls import reverse

from annotate.models import Role
from concord import jobs
from concord.celery import app as celery_app
from tests.annotate.factories import ProjectFactory, member
from tests.training.conftest import frozen_version
from tests.training.test_kill import broker_url, forget_queue, kill, start_worker, worker_env
from tests.training.test_runs import create_url, form_data
from tests.waits import HANG_GUARD_S, wait_for
from training import tasks
from training.ml import launch
from training.models import TrainingRun
from training.services.runs import checkpoint_step, training_run_enqueue

pytestmark = pytest.mark.django_db(transaction=True)


def send(run: TrainingRun, queue: str) -> None:
    with celery_app.connection_for_write(broker_url()) as connection:
        tasks.training_run_execute_task.apply_async((run.pk,), queue=queue, connection=connection)


def finished(run: TrainingRun) -> bool:
    run.refresh_from_db()
    return run.finished


def test_a_run_started_from_the_web_app_trains_in_two_processes(  # type: ignore[no-untyped-def]
    settings, tmp_path, login, backbones, monkeypatch
) -> None:
    settings.TRAINING_ROOT = tmp_path / "training"
    sent: list[int] = []
    monkeypatch.setattr(jobs, "send", lambda name, run_id: sent.append(run_id))
    project = ProjectFactory()
    version = frozen_version(project, count=24, splits={"train": 0.7, "validation": 0.15, "test": 0.15})
    admin = login(member(project, Role.ADMIN))
    response = admin.post(create_url(project), form_data(version, backbone=backbones["llama"], epochs=2))
    assert response.status_code == 302, response.content.decode()[-2000:]
    run = TrainingRun.objects.get(pk=sent[0])
    queue = f"test-ddp-{uuid.uuid4().hex}"
    env = worker_env(settings.TRAINING_ROOT, CONCORD_TRAIN_PROCESSES="2", OMP_NUM_THREADS="1")
    worker = start_worker("ddp", queue, env, tmp_path)
    try:
        send(run, queue)
        assert wait_for(lambda: finished(run), timeout=HANG_GUARD_S), (tmp_path / "ddp.log").read_text()[-3000:]
    finally:
        kill(worker)
        forget_queue(queue)
    assert run.status == TrainingRun.Status.SUCCEEDED, (run.error, run.log)
    assert "2 processes started" in run.log
    assert "--nproc-per-node=2" in run.log
    assert run.step == run.total_steps > 0
    assert run.metrics["heldout"]["accuracy"] is not None
    assert "training on 2 processes, data-parallel (DDP)" in run.log  # the phase the run's page showed
    page = admin.get(reverse("training:run_detail", args=[project.pk, run.pk])).content.decode()
    assert "2 processes started" in page  # the run's log, on its page


def test_a_rank_killed_with_kill_9_is_restarted_from_the_checkpoint(  # type: ignore[no-untyped-def]
    settings, tmp_path, backbones, monkeypatch
) -> None:
    settings.TRAINING_ROOT = tmp_path / "training"
    monkeypatch.setattr(jobs, "send", lambda name, run_id: None)  # sent by hand below
    project = ProjectFactory()
    version = frozen_version(project, count=40, splits={"train": 0.8, "validation": 0.2, "test": 0.0})
    config = {
        "backbone": str(backbones["llama"]),
        "epochs": 40,
        "batch_size": 4,
        "max_length": 32,
        "learning_rate": 1e-3,
        "checkpoint_every": 5,
        "logging_every": 1,
    }
    run = training_run_enqueue(project=project, version=version, config=config, created_by=None)
    out = Path(run.output_dir)
    queue = f"test-ddp-kill-{uuid.uuid4().hex}"
    env = worker_env(settings.TRAINING_ROOT, CONCORD_TRAIN_PROCESSES="2", OMP_NUM_THREADS="1")
    worker = start_worker("ddp", queue, env, tmp_path)
    try:
        send(run, queue)
        rank_1 = out / launch.RANKS / "rank-1.pid"
        assert wait_for(lambda: checkpoint_step(out) > 0 and rank_1.exists()), (tmp_path / "ddp.log").read_text()[
            -3000:
        ]
        victim = int(rank_1.read_text())
        os.kill(victim, signal.SIGKILL)
        at_kill = checkpoint_step(out)
        assert wait_for(lambda: finished(run), timeout=HANG_GUARD_S), (out / "torchrun.log").read_text()[-3000:]
    finally:
        kill(worker)
        forget_queue(queue)
    assert run.status == TrainingRun.Status.SUCCEEDED, (run.error, run.log, (out / "torchrun.log").read_text()[-3000:])
    assert "a rank died: torchrun restarted the ranks from the last checkpoint (restart 1)" in run.log
    assert int((out / launch.RANKS / "rank-1.pid").read_text()) != victim
    assert run.step == run.total_steps > at_kill
    steps = [point["step"] for point in run.history]
    assert steps == sorted(set(steps)), "the history kept the steps trained again after the restart twice"
