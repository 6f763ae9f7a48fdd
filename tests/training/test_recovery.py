"""The watchdog: a running job whose worker died (its lock is free) is sent again and counted, then failed with
the reason after CONCORD_MAX_RECOVERIES; a job on a live worker (its lock held) is never touched."""

import io
import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker as in_process_worker
from celery.signals import task_postrun
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connections
from django.urls import reverse
from django.utils import timezone

from annotate.models import Role
from concord import jobs, locks
from concord.celery import app as celery_app
from concord.settings import base as base_settings
from tests.annotate.factories import ProjectFactory, member
from tests.locks import held_by_a_live_worker
from tests.training.conftest import frozen_version
from tests.training.test_kill import database_url, forget_queue, kill, start_worker
from tests.waits import HANG_GUARD_S, wait_for
from training import tasks
from training.models import RewardModel, ScoringJob, SelectionRun, TrainingRun
from training.services.recovery import stale_jobs_recover
from training.services.runs import checkpoint_step, training_run_enqueue

LONG_AGO = timedelta(hours=2)
NOW = timedelta(0)


@pytest.fixture
def sent(monkeypatch):  # type: ignore[no-untyped-def]
    """The tasks sent to the gpu queue, instead of sending them."""
    sent: list[tuple[str, int]] = []
    kinds = {jobs.TRAINING_RUN: "train", jobs.SCORING: "score", jobs.SCORING_CHUNK: "chunk", jobs.SELECTION: "select"}
    monkeypatch.setattr(jobs, "send", lambda name, pk: sent.append((kinds[name], pk)))
    return sent


def running_run(project=None, **fields):  # type: ignore[no-untyped-def]
    project = project or ProjectFactory()
    fields = {"status": "running", "step": 7, "total_steps": 20, "heartbeat_at": timezone.now() - LONG_AGO, **fields}
    run = TrainingRun.objects.create(
        project=project, dataset_version=frozen_version(project, count=4), config={"backbone": "/models/tiny"}, **fields
    )
    TrainingRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - LONG_AGO)
    return run


def running_scoring_job(**fields):  # type: ignore[no-untyped-def]
    run = running_run(status=TrainingRun.Status.SUCCEEDED)
    model = RewardModel.objects.create(project=run.project, run=run, path="/models/x", model_card={})
    fields = {"done": 0, "total": 16, "heartbeat_at": timezone.now() - LONG_AGO, **fields}
    job = ScoringJob.objects.create(project=run.project, reward_model=model, status=ScoringJob.Status.RUNNING, **fields)
    ScoringJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - LONG_AGO)
    return job


def recover(capture, **options):  # type: ignore[no-untyped-def]
    """Run the watchdog, then the callbacks it left for the commit (the re-sends)."""
    with capture(execute=True):
        return stale_jobs_recover(**options)


def worker_claims_and_dies(job) -> None:  # type: ignore[no-untyped-def]
    """What a worker taking the re-send does to the row (its claim moves heartbeat_at on), before it is killed."""
    type(job).objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())


@pytest.mark.django_db
def test_a_run_whose_worker_died_is_sent_again_once_and_counted(sent, django_capture_on_commit_callbacks):
    run = running_run()
    queued = running_run(status=TrainingRun.Status.QUEUED, heartbeat_at=None)
    recent = running_run(heartbeat_at=timezone.now())  # within the grace period: a restarting worker's turn

    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("recover_stale_jobs", stdout=out)
    assert sent == [("train", run.pk)]
    assert f"training run {run.pk}: resent; worker lost" in out.getvalue()
    run.refresh_from_db()
    assert (run.status, run.recoveries, run.step) == ("running", 1, 7)
    assert run.recovered_at is not None
    assert "watchdog: worker lost (last heartbeat at" in run.log
    assert "step 7/20); recovery 1 of 3; sent to a worker again" in run.log
    for other in (queued, recent):
        other.refresh_from_db()
        assert (other.recoveries, other.recovered_at, other.log) == (0, None, "")

    # Until a worker takes the re-send, the run is waiting for one (on a busy gpu queue, maybe for hours).
    TrainingRun.objects.filter(pk=run.pk).update(recovered_at=timezone.now() - timedelta(minutes=30))
    assert recover(django_capture_on_commit_callbacks) == []
    assert sent == [("train", run.pk)]
    # A re-send no worker took for an hour is sent once more (the broker may have lost it), but not counted.
    TrainingRun.objects.filter(pk=run.pk).update(recovered_at=timezone.now() - LONG_AGO)
    [again] = recover(django_capture_on_commit_callbacks)
    assert (again.action, again.job.recoveries) == ("resent", 1)
    assert sent == [("train", run.pk)] * 2


@pytest.mark.django_db(transaction=True)
def test_a_job_on_a_live_worker_is_left_alone(sent):
    run = running_run()
    job = running_scoring_job()
    with held_by_a_live_worker((locks.TRAINING, run.pk), (locks.SCORING, job.pk)):
        # Silent for two hours (evaluating, say), but its worker holds the lock: alive.
        assert stale_jobs_recover(grace=NOW, max_recoveries=0) == []
    assert not sent
    run.refresh_from_db()
    job.refresh_from_db()
    assert (run.status, run.recoveries, run.log, job.status, job.recoveries) == ("running", 0, "", "running", 0)
    # Once the worker is gone, its lock is free.
    assert {r.action for r in stale_jobs_recover(grace=NOW)} == {"resent"}
    assert sorted(sent) == [("score", job.pk), ("train", run.pk)]


@pytest.mark.django_db
def test_a_run_that_keeps_losing_its_worker_fails_with_the_reason_on_its_page(
    sent, settings, login, django_capture_on_commit_callbacks
):
    settings.CONCORD_MAX_RECOVERIES = 2
    run = running_run()
    for attempt in (1, 2):
        [recovery] = recover(django_capture_on_commit_callbacks, grace=NOW)
        assert (recovery.action, recovery.job.recoveries) == ("resent", attempt)
        worker_claims_and_dies(run)
    [recovery] = recover(django_capture_on_commit_callbacks, grace=NOW)
    assert recovery.action == "failed"
    assert sent == [("train", run.pk)] * 2
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert run.finished_at is not None
    assert run.error.startswith("Worker lost 3 times; last heartbeat at ")
    assert run.error.endswith(" UTC, step 7/20")
    assert "watchdog: worker lost 3 times" in run.log
    admin = login(member(run.project, Role.ADMIN))
    page = admin.get(reverse("training:run_detail", args=[run.project_id, run.pk])).content.decode()
    assert run.error in page
    assert "Sent to a worker again 2 times after its worker was lost." in page
    assert recover(django_capture_on_commit_callbacks, grace=NOW) == []


@pytest.mark.django_db
def test_a_scoring_job_whose_worker_died_is_sent_again_then_failed(
    sent, settings, login, django_capture_on_commit_callbacks
):
    settings.CONCORD_MAX_RECOVERIES = 1
    job = running_scoring_job()
    [recovery] = recover(django_capture_on_commit_callbacks)
    assert str(recovery).startswith(f"scoring job {job.pk}: resent; worker lost (last heartbeat at ")
    assert sent == [("score", job.pk)]
    worker_claims_and_dies(job)
    [recovery] = recover(django_capture_on_commit_callbacks, grace=NOW)
    assert recovery.action == "failed"
    job.refresh_from_db()
    assert (job.status, job.recoveries) == ("failed", 1)
    assert job.error.startswith("Worker lost 2 times; last heartbeat at ")
    assert job.error.endswith(", 0/16 items")
    admin = login(member(job.project, Role.ADMIN))
    assert job.error in admin.get(reverse("training:run_list", args=[job.project_id])).content.decode()
    assert sent == [("score", job.pk)]


@pytest.mark.django_db
def test_a_selection_whose_worker_died_is_sent_again_then_failed_with_the_reason(
    sent, settings, login, django_capture_on_commit_callbacks
):
    settings.CONCORD_MAX_RECOVERIES = 1
    project = ProjectFactory()
    job = SelectionRun.objects.create(
        project=project,
        strategy="random",
        batch_size=10,
        random_share=0,
        pool_limit=100,
        status="running",
        done=3,
        total=40,
        heartbeat_at=timezone.now() - LONG_AGO,
    )
    SelectionRun.objects.filter(pk=job.pk).update(created_at=timezone.now() - LONG_AGO)
    [recovery] = recover(django_capture_on_commit_callbacks)
    assert str(recovery).startswith(f"selection run {job.pk}: resent; worker lost (last heartbeat at ")
    assert sent == [("select", job.pk)]
    worker_claims_and_dies(job)
    [recovery] = recover(django_capture_on_commit_callbacks, grace=NOW)
    job.refresh_from_db()
    assert (recovery.action, job.status, job.recoveries) == ("failed", "failed", 1)
    assert job.error.startswith("Worker lost 2 times; last heartbeat at ")
    page = login(member(project, Role.ADMIN)).get(reverse("training:selection", args=[project.pk])).content.decode()
    assert job.error in page


@pytest.mark.django_db
def test_a_cancelled_run_whose_worker_died_is_cancelled_not_sent_again(sent, django_capture_on_commit_callbacks):
    run = running_run(cancel_requested=True)
    [recovery] = recover(django_capture_on_commit_callbacks)
    assert recovery.action == "cancelled"
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert not sent


@pytest.mark.django_db
def test_resume_on_a_worker_is_not_sent_again_by_the_watchdog(sent, login, django_capture_on_commit_callbacks):
    run = running_run()
    admin = login(member(run.project, Role.ADMIN))
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(reverse("training:run_resume", args=[run.project_id, run.pk]))
    assert response.status_code == 302
    assert sent == [("train", run.pk)]
    assert recover(django_capture_on_commit_callbacks, grace=NOW) == []
    run.refresh_from_db()
    assert run.recoveries == 0  # by hand: not counted against the limit
    worker_claims_and_dies(run)
    [recovery] = recover(django_capture_on_commit_callbacks, grace=NOW)
    assert (recovery.action, recovery.job.recoveries) == ("resent", 1)


def test_beat_sends_the_watchdog_to_the_default_queue_not_the_gpu_queue():
    celery_app.loader.import_default_modules()  # what a worker imports at start (CELERY_IMPORTS included)
    [entry] = django_settings.CELERY_BEAT_SCHEDULE.values()
    assert entry["task"] in celery_app.tasks
    assert entry["schedule"] == 60
    route = celery_app.amqp.router.route({}, entry["task"])
    assert route["queue"].name == django_settings.CELERY_TASK_DEFAULT_QUEUE == "test-default"
    assert celery_app.amqp.router.route({}, tasks.training_run_execute_task.name)["queue"].name == "test-gpu"
    # And with the settings the Procfile's workers run on.
    app = Celery(set_as_current=False)
    app.conf.update(
        task_default_queue=base_settings.CELERY_TASK_DEFAULT_QUEUE, task_routes=base_settings.CELERY_TASK_ROUTES
    )
    assert app.amqp.router.route({}, entry["task"])["queue"].name == "default"
    assert app.amqp.router.route({}, tasks.training_run_execute_task.name)["queue"].name == "gpu"
    procfile = (Path(django_settings.BASE_DIR) / "Procfile").read_text()
    assert "celery -A concord beat" in procfile


# The real thing: kill -9 a worker mid-run; with redelivery hours away, the watchdog brings the run back.


@pytest.fixture
def worker_closes_connections():  # type: ignore[no-untyped-def]
    """The in-process worker's connections are closed after each task, so the test database can be flushed."""

    def close(**_: object) -> None:
        connections.close_all()

    task_postrun.connect(close, weak=False)
    yield
    task_postrun.disconnect(close)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_closes_connections")
def test_the_watchdog_resumes_a_killed_worker_s_run_on_another_worker(settings, tmp_path, tiny_backbone, monkeypatch):
    settings.TRAINING_ROOT = tmp_path / "training"
    queue = f"test-watchdog-{uuid.uuid4().hex}"
    # The enqueue's and the watchdog's sends, to this test's queue.
    monkeypatch.setattr(jobs, "send", lambda name, run_id: celery_app.send_task(name, args=[run_id], queue=queue))
    project = ProjectFactory()
    version = frozen_version(project, count=40, splits={"train": 0.8, "validation": 0.2, "test": 0.0})
    config = {
        "backbone": str(tiny_backbone),
        "epochs": 2,
        "batch_size": 2,
        "max_length": 32,
        "learning_rate": 1e-3,
        "checkpoint_every": 8,
        "logging_every": 1,
    }
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "concord.settings.test",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
        # 12 hours, as in production: the killed worker's task is not redelivered within this test.
        "CELERY_VISIBILITY_TIMEOUT": "43200",
        "TRAINING_ROOT": str(settings.TRAINING_ROOT),
        "CONCORD_MODEL_ROOTS": ",".join(django_settings.CONCORD_MODEL_ROOTS),  # where the tiny backbones are
    }
    first = start_worker("first", queue, env, tmp_path)
    try:
        run = training_run_enqueue(project=project, version=version, config=config, created_by=None)
        out = Path(run.output_dir)
        assert wait_for(lambda: checkpoint_step(out) > 0), (tmp_path / "first.log").read_text()[-3000:]
        kill(first)
        at_kill = checkpoint_step(out)
        assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.RUNNING
        # PostgreSQL drops the dead worker's lock as soon as it sees its connection close.
        recovered: list[object] = []
        assert wait_for(lambda: recovered.extend(stale_jobs_recover(grace=NOW)) or recovered)
        # The second worker runs in this process, where torch is loaded already: a quicker start.
        with in_process_worker(celery_app, perform_ping_check=False, queues=[queue], shutdown_timeout=HANG_GUARD_S):
            assert wait_for(lambda: TrainingRun.objects.get(pk=run.pk).finished)
    finally:
        kill(first)
        forget_queue(queue, url=django_settings.CELERY_BROKER_URL)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, (run.error, run.log)
    assert run.recoveries == 1
    assert run.metrics["resumed_from"] >= at_kill > 0
    lines = run.log.splitlines()
    claims = [n for n, line in enumerate(lines) if "claimed by" in line]
    [watchdog] = [n for n, line in enumerate(lines) if "watchdog: worker lost" in line]
    assert len(claims) == 2, run.log
    assert claims[0] < watchdog < claims[1], run.log
    # First the killed worker's pool process, then the second worker, here.
    assert claimed_pid(lines[claims[0]]) != os.getpid() == claimed_pid(lines[claims[1]])
    assert f"resuming from step {run.metrics['resumed_from']}" in lines[claims[1]]


def claimed_pid(log: str) -> int:
    """The pid in the first "claimed by pid N on HOST" of a run's log."""
    return int(log.split("claimed by pid ")[1].split()[0])
