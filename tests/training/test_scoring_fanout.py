"""A scoring job fans out: its items, in id order, are cut into chunks that any number of gpu workers take; the
job ends once, with the chunk that ends its last open one, and a chunk whose worker died is sent again by the
watchdog."""

import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db.models import F
from django.urls import reverse
from django.utils import timezone
from django.utils.html import strip_tags

from annotate.models import Role
from concord import jobs, locks
from concord.celery import app as celery_app
from tests.annotate.factories import ItemFactory, ProjectFactory, member
from tests.locks import held_by_a_live_worker
from tests.training.conftest import frozen_version
from tests.training.test_kill import broker_url, forget_queue, kill, start_worker, worker_env
from tests.training.test_runs import make_run
from tests.waits import wait_for
from training import tasks
from training.models import ItemScore, RewardModel, ScoringChunk, ScoringJob
from training.services import scoring
from training.services.recovery import stale_jobs_recover
from training.services.scoring import scoring_job_create

LONG_AGO = timedelta(hours=2)
NOW = timedelta(0)


def project_with_model(model_path: Path, items: int):  # type: ignore[no-untyped-def]
    """A project of `items` items (4 of them in the version its model was trained on) and that model."""
    project = ProjectFactory()
    run = make_run(project, frozen_version(project, count=4), status="succeeded")
    ItemFactory.create_batch(items - 4, project=project)
    return project, RewardModel.objects.create(project=project, run=run, path=str(model_path), model_card={})


def job_in_four_chunks(settings, model_path: Path):  # type: ignore[no-untyped-def]
    """A scoring job over a project of 50 items in chunks of 16 (16, 16, 16 and 2 items), its project and model."""
    settings.CONCORD_SCORING_CHUNK_ITEMS = 16
    project, model = project_with_model(model_path, items=50)
    return project, model, scoring_job_create(project=project, created_by=None, reward_model=model)


@pytest.fixture
def ended(monkeypatch):  # type: ignore[no-untyped-def]
    """The scoring jobs whose follow-ups ran (a curation round woken, the review queue synced), in order."""
    ended: list[tuple[str, int]] = []
    monkeypatch.setattr(tasks, "campaign_rounds_notify", lambda scoring_job: ended.append(("round", scoring_job.pk)))
    monkeypatch.setattr(tasks, "review_queue_sync_send", lambda project_id: ended.append(("review", project_id)))
    return ended


def chunks_of(job: ScoringJob) -> list[ScoringChunk]:
    return list(ScoringChunk.objects.filter(job=job).order_by("number"))


def scoring_line(login, project) -> str:  # type: ignore[no-untyped-def]
    """The runs page's scoring paragraph, as text."""
    admin = login(member(project, Role.ADMIN))
    page = admin.get(reverse("training:run_list", args=[project.pk])).content.decode()
    paragraph = page.split('<p id="scoring">', 1)[1].split("</p>", 1)[0]
    return " ".join(strip_tags(paragraph).split())


@pytest.mark.django_db
def test_a_job_is_cut_into_chunks_that_cover_every_item_once_and_are_sent_after_the_commit(
    settings, sent_jobs, django_capture_on_commit_callbacks, trained_model_dir
):
    settings.CONCORD_SCORING_CHUNK_ITEMS = 16
    project, model = project_with_model(trained_model_dir, items=50)
    ItemFactory.create_batch(3)  # another project's items, between this one's ids: not this job's
    ItemFactory.create_batch(2, project=project)
    with django_capture_on_commit_callbacks(execute=True):
        job = scoring_job_create(project=project, created_by=None, reward_model=model)
    chunks = chunks_of(job)
    assert [chunk.size for chunk in chunks] == [16, 16, 16, 4]
    assert job.total == 52
    assert sent_jobs == [(jobs.SCORING_CHUNK, chunk.pk) for chunk in chunks]
    for item_id in project.items.values_list("pk", flat=True):
        assert len([c for c in chunks if c.first_item_id <= item_id <= c.last_item_id]) == 1
    # Ranges in order, each starting and ending on one of the job's items.
    ids = sorted(project.items.values_list("pk", flat=True))
    assert [(c.first_item_id, c.last_item_id) for c in chunks] == [
        (ids[n], ids[min(n + 15, len(ids) - 1)]) for n in range(0, len(ids), 16)
    ]


@pytest.mark.django_db
def test_chunks_run_in_any_order_and_twice_score_each_item_once_and_end_the_job_once(
    settings, sent_jobs, ended, login, trained_model_dir
):
    project, model, job = job_in_four_chunks(settings, trained_model_dir)
    first, second, third, fourth = chunks_of(job)
    assert job.total == 50
    for chunk in (third, first, first):  # the first one delivered twice: the second delivery does nothing
        tasks.scoring_chunk_task(chunk.pk)
    job.refresh_from_db()
    assert (job.status, job.done) == ("running", 32)
    assert not ended
    ScoringChunk.objects.filter(pk=fourth.pk).update(status="running")  # on a worker, as far as the page knows
    assert "32 / 50 items; 2 of 4 chunks done, 1 running" in scoring_line(login, project)
    ScoringChunk.objects.filter(pk=fourth.pk).update(status="queued")
    for chunk in (fourth, second, third):
        tasks.scoring_chunk_task(chunk.pk)
    job.refresh_from_db()
    assert (job.status, job.done, job.total) == ("done", 50, 50), job.error
    assert job.finished_at is not None
    assert ended == [("round", job.pk), ("review", project.pk)]
    scored = list(ItemScore.objects.filter(reward_model=model).values_list("item_id", flat=True))
    assert sorted(scored) == sorted(project.items.values_list("pk", flat=True))
    assert {(c.status, c.done) for c in chunks_of(job)} == {("done", 16), ("done", 2)}
    assert all(c.worker for c in chunks_of(job))
    assert "50 / 50 items; 4 of 4 chunks done" in scoring_line(login, project)


@pytest.mark.django_db
def test_a_failing_chunk_fails_the_job_with_its_error_once_and_the_rest_is_not_scored(
    settings, sent_jobs, ended, monkeypatch, trained_model_dir
):
    project, model, job = job_in_four_chunks(settings, trained_model_dir)
    first, second, *rest = chunks_of(job)
    tasks.scoring_chunk_task(first.pk)
    score_batch = scoring._score_batch

    def failing(scorer, model, batch, temperature):  # type: ignore[no-untyped-def]
        raise RuntimeError("out of memory")

    monkeypatch.setattr(scoring, "_score_batch", failing)
    tasks.scoring_chunk_task(second.pk)
    monkeypatch.setattr(scoring, "_score_batch", score_batch)
    for chunk in rest:
        tasks.scoring_chunk_task(chunk.pk)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error == "Scoring failed in chunk 2: out of memory"
    assert ended == [("round", job.pk), ("review", project.pk)]
    assert [(c.status, c.error) for c in chunks_of(job)] == [
        ("done", ""),
        ("failed", "Scoring failed in chunk 2: out of memory"),
        ("failed", "Not scored: the job failed"),
        ("failed", "Not scored: the job failed"),
    ]
    assert ItemScore.objects.filter(reward_model=model).count() == 16


@pytest.mark.django_db
def test_a_job_with_nothing_to_score_has_no_chunks_and_ends_at_once(sent_jobs, ended, trained_model_dir):
    project, model = project_with_model(trained_model_dir, items=4)
    project.items.all().delete()
    job = scoring_job_create(project=project, created_by=None, reward_model=model)
    assert not chunks_of(job)
    tasks.scoring_task(job.pk)
    job.refresh_from_db()
    assert (job.status, job.done, job.total) == ("done", 0, 0)
    assert ended == [("round", job.pk), ("review", project.pk)]


def chunk_s_worker_died(chunk: ScoringChunk, done: int, ago: timedelta = LONG_AGO) -> None:
    """What a worker killed mid-chunk leaves: the chunk running (its lock free) with its progress, in the job's."""
    ScoringChunk.objects.filter(pk=chunk.pk).update(
        status="running", done=done, worker="4242@gone", heartbeat_at=timezone.now() - ago
    )
    ScoringJob.objects.filter(pk=chunk.job_id).update(status="running", done=F("done") + done)


@pytest.mark.django_db
def test_the_watchdog_sends_a_dead_worker_s_chunk_again_and_it_finishes(
    settings, sent_jobs, ended, django_capture_on_commit_callbacks, trained_model_dir
):
    project, model, job = job_in_four_chunks(settings, trained_model_dir)
    first, second, *rest = chunks_of(job)
    sent_jobs.clear()
    tasks.scoring_chunk_task(first.pk)
    chunk_s_worker_died(second, done=5)
    with django_capture_on_commit_callbacks(execute=True):
        [recovery] = stale_jobs_recover(grace=NOW)
    assert str(recovery).startswith(f"chunk 2 of scoring job {job.pk}: resent; worker lost (last heartbeat at ")
    assert "5/16 items on worker 4242@gone); recovery 1 of 3" in str(recovery)
    # The chunk, not the job: a job with chunks has no worker of its own.
    assert sent_jobs == [(jobs.SCORING_CHUNK, second.pk)]
    for chunk in (second, *rest):
        tasks.scoring_chunk_task(chunk.pk)
    job.refresh_from_db()
    # The dead worker's 5 items were taken back from the job's progress when the chunk was claimed again.
    assert (job.status, job.done, job.total) == ("done", 50, 50), job.error
    second.refresh_from_db()
    assert (second.status, second.done, second.recoveries) == ("done", 16, 1)
    assert second.worker != "4242@gone"
    assert ItemScore.objects.filter(reward_model=model).count() == 50
    assert ended == [("round", job.pk), ("review", project.pk)]


@pytest.mark.django_db(transaction=True)
def test_a_chunk_on_a_live_worker_is_left_alone_and_one_that_keeps_dying_fails_its_job(
    settings, sent_jobs, trained_model_dir
):
    settings.CONCORD_MAX_RECOVERIES = 1
    _, _, job = job_in_four_chunks(settings, trained_model_dir)
    _, second, *_ = chunks_of(job)
    sent_jobs.clear()
    chunk_s_worker_died(second, done=5)
    with held_by_a_live_worker((locks.SCORING_CHUNK, second.pk)):
        assert stale_jobs_recover(grace=NOW) == []
    [recovery] = stale_jobs_recover(grace=NOW)
    assert recovery.action == "resent"
    chunk_s_worker_died(second, done=0, ago=NOW)  # the re-send's worker claimed it, then died too
    [recovery] = stale_jobs_recover(grace=NOW)
    assert recovery.action == "failed"
    assert sent_jobs == [(jobs.SCORING_CHUNK, second.pk)]
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error.startswith("Chunk 2: worker lost 2 times; last heartbeat at ")
    assert [c.status for c in chunks_of(job)] == ["failed"] * 4  # the queued ones are closed with it
    assert stale_jobs_recover(grace=NOW) == []


@pytest.mark.django_db
def test_a_dead_worker_s_chunk_of_a_job_that_failed_meanwhile_is_closed_not_sent_again(
    settings, sent_jobs, trained_model_dir
):
    _, _, job = job_in_four_chunks(settings, trained_model_dir)
    first, *_ = chunks_of(job)
    sent_jobs.clear()
    chunk_s_worker_died(first, done=5)
    scoring.scoring_job_fail(job_id=job.pk, error="Scoring failed in chunk 2: out of memory")
    [recovery] = stale_jobs_recover(grace=NOW)
    assert recovery.action == "cancelled"
    assert not sent_jobs
    first.refresh_from_db()
    assert first.status == "failed"
    assert first.error.startswith("Not scored: worker lost after its job ended (failed); last heartbeat at ")
    assert stale_jobs_recover(grace=NOW) == []


@pytest.mark.django_db
def test_a_queued_chunk_whose_task_was_lost_is_sent_again_uncounted_once_an_hour(
    settings, sent_jobs, django_capture_on_commit_callbacks, trained_model_dir
):
    _, _, job = job_in_four_chunks(settings, trained_model_dir)
    _, second, *_ = chunks_of(job)
    sent_jobs.clear()
    assert stale_jobs_recover(grace=NOW) == []  # just queued: it waits its turn
    ScoringChunk.objects.filter(pk=second.pk).update(created_at=timezone.now() - LONG_AGO)
    with django_capture_on_commit_callbacks(execute=True):
        [recovery] = stale_jobs_recover(grace=NOW)
    assert str(recovery).startswith(f"chunk 2 of scoring job {job.pk}: resent; queued since ")
    assert sent_jobs == [(jobs.SCORING_CHUNK, second.pk)]
    assert stale_jobs_recover(grace=NOW) == []  # not again within the hour
    second.refresh_from_db()
    assert (second.status, second.recoveries) == ("queued", 0)
    ScoringChunk.objects.filter(pk=second.pk).update(recovered_at=timezone.now() - LONG_AGO)
    assert len(stale_jobs_recover(grace=NOW)) == 1


# The real thing: two worker processes on one queue, one killed -9 while it holds a chunk.

# A worker whose scoring hangs (its pool process inherits the patch): it holds the first chunk it claims until killed.
HANGING_WORKER = (
    "import sys, threading, django; django.setup(); from training.services import scoring; "
    "scoring._score_batch = lambda *args: threading.Event().wait(); "
    "from concord.celery import app; app.worker_main(sys.argv[1:])"
)


def start_hanging_worker(name: str, queue: str, env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", HANGING_WORKER, "worker", "-Q", queue, "--concurrency=1", "--pool=prefork"]
    command += ["--prefetch-multiplier=1", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    command += ["-l", "info", "-n", f"{name}-{queue}@%h"]
    log = (log_dir / f"{name}.log").open("wb")
    return subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=django_settings.BASE_DIR
    )


@pytest.mark.django_db(transaction=True)
def test_two_workers_share_a_job_and_a_killed_one_s_chunk_is_finished_by_the_other(
    settings, tmp_path, monkeypatch, login, trained_model_dir
):
    settings.CONCORD_SCORING_CHUNK_ITEMS = 25
    queue = f"test-fanout-{uuid.uuid4().hex}"

    def send(name: str, job_id: int) -> None:  # the job's and the watchdog's sends, to this test's queue
        with celery_app.connection_for_write(broker_url()) as connection:
            celery_app.send_task(name, args=[job_id], queue=queue, connection=connection)

    monkeypatch.setattr(jobs, "send", send)
    project, model = project_with_model(trained_model_dir, items=300)
    # 12 hours, as in production: the killed worker's task is not redelivered; the watchdog must send it.
    env = worker_env(tmp_path / "training", CELERY_VISIBILITY_TIMEOUT="43200")
    logs = lambda: "".join((tmp_path / f"{n}.log").read_text()[-3000:] for n in ("hanging", "other"))  # noqa: E731
    workers = [start_hanging_worker("hanging", queue, env, tmp_path)]
    try:
        job = scoring_job_create(project=project, created_by=None, reward_model=model)
        assert len(chunks_of(job)) == 12
        running = ScoringChunk.objects.filter(job=job, status="running")
        assert wait_for(running.exists), logs()
        [held] = running
        workers.append(start_worker("other", queue, env, tmp_path))
        done = ScoringChunk.objects.filter(job=job, status="done")
        assert wait_for(lambda: done.count() == 11), logs()
        assert ScoringJob.objects.get(pk=job.pk).status == "running"
        assert "11 of 12 chunks done, 1 running" in scoring_line(login, project)
        kill(workers[0])
        # PostgreSQL drops the dead worker's chunk lock as soon as it sees its connection close.
        recovered: list[object] = []
        assert wait_for(lambda: recovered.extend(stale_jobs_recover(grace=NOW)) or recovered)
        assert wait_for(lambda: ScoringJob.objects.get(pk=job.pk).finished), logs()
    finally:
        for worker in workers:
            kill(worker)
        forget_queue(queue)
        forget_queue(django_settings.CELERY_TASK_DEFAULT_QUEUE)  # the review sync the job's end sent: nobody reads it
    job.refresh_from_db()
    assert (job.status, job.done, job.total) == ("done", 300, 300), job.error
    scored = list(ItemScore.objects.filter(reward_model=model).values_list("item_id", flat=True))
    assert sorted(scored) == sorted(project.items.values_list("pk", flat=True))
    finished = ScoringChunk.objects.get(pk=held.pk)
    assert (finished.status, finished.done, finished.recoveries) == ("done", 25, 1)
    assert finished.worker != held.worker  # the other worker's pool process
    assert {chunk.worker for chunk in chunks_of(job)} == {finished.worker}
