"""The watchdog: training runs, scoring jobs and their chunks, curation rounds and selection runs whose worker died
are sent to the gpu queue again, or failed.

Celery beat runs it every minute on the default queue (training.watchdog_tasks: on the gpu queue it would wait
behind the very job it checks); `manage.py recover_stale_jobs` runs it by hand or from cron.

How a dead worker is told from a live one. A worker executes a job holding the job's advisory lock
(concord.locks) on its database connection from before its claim (QUEUED/RUNNING -> RUNNING) until after its
last write (succeeded, failed, cancelled, done), and nothing in between closes that connection. So a RUNNING row
whose lock is free has lost its worker: PostgreSQL dropped the lock with the dead worker's connection. Redis
would redeliver its unacknowledged task only after the visibility timeout (hours), so the watchdog sends the task
again. It decides with the lock itself, holding it while it reads the row again and writes its decision, so a
worker claiming the job at that moment either holds the lock first (the job is left alone) or finds it taken and
drops its delivery (and gets the watchdog's re-send instead): never two workers at once.

A free lock can also mean that the job was sent again and no worker has taken it yet, perhaps for hours behind
other jobs on a busy gpu queue. A re-send is therefore recorded (recovered_at) and counted (recoveries), and the
job is left alone until a worker's claim moves heartbeat_at past recovered_at; a job that dies again after that
is counted again. Only a re-send that no worker took for RESEND_AFTER is sent once more, uncounted, in case the
broker lost it. A job is also left alone while it has been heard from within the grace period
(CONCORD_RECOVERY_GRACE_S), which gives a restarting worker's own redelivery the first chance.

After CONCORD_MAX_RECOVERIES re-sends, a job whose worker is lost again is marked failed with the reason (a job
that kills its worker each time, by running out of memory say, must not loop forever). A run whose cancellation
was asked for is marked cancelled rather than sent again.

A scoring job with chunks (training.models.ScoringChunk) has no worker of its own: each chunk is a job here, under
its own lock (concord.locks.SCORING_CHUNK), and a chunk given up on fails its job. A running chunk of a job that
has ended meanwhile (another chunk failed) is closed ("cancelled") rather than sent again.

QUEUED rows are left alone: a queued job's age says nothing (it may wait its turn for hours), and whether its
message is still in the broker cannot be asked cheaply. Its task is lost only if the broker loses data or was
down when the job was enqueued; the run page's "Resume on a worker" (training_run_resume) sends a queued run
again, and a scoring job can simply be started again. Queued chunks follow the curation rounds' rule
(training.services.campaigns.campaign_rounds_check) instead, since nobody is there to start a chunk again: a
chunk of an open job still queued QUEUED_RESEND_AFTER after it was created is sent again, uncounted, at most once
per RESEND_AFTER. A second delivery of a chunk that was only waiting its turn costs its worker a claim that fails.

Limit: a worker whose machine vanishes without closing its connection keeps its lock until PostgreSQL notices
the dead connection (TCP keepalive, up to hours with default settings); the watchdog waits for that too.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from concord import jobs, locks
from concord.locks import job_lock
from training.models import Campaign, CampaignRound, ScoringChunk, ScoringJob, SelectionRun, TrainingRun
from training.selectors import Job, jobs_to_recover
from training.services.campaigns import QUEUED_RESEND_AFTER, campaign_round_unroute
from training.services.runs import run_log
from training.services.scoring import OPEN, scoring_job_fail

logger = logging.getLogger(__name__)

AnyJob = TrainingRun | ScoringJob | ScoringChunk | CampaignRound | SelectionRun

# A re-send that no worker has taken for this long is sent once more (uncounted), in case the broker lost it.
RESEND_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class Recovery:
    """What the watchdog did to one job: `action` is "resent", "failed" or "cancelled"."""

    job: "AnyJob"
    action: str
    reason: str

    def __str__(self) -> str:
        return f"{_name(self.job)}: {self.action}; {self.reason}"


def stale_jobs_recover(
    *, grace: timedelta | None = None, max_recoveries: int | None = None, resend_after: timedelta = RESEND_AFTER
) -> list[Recovery]:
    """Send every running training run and scoring job whose worker is gone to the gpu queue again, or fail it
    after `max_recoveries` re-sends, and send scoring chunks whose task was lost (see the module's doc); returns
    what was done. Defaults from settings."""
    now = timezone.now()
    policy = _Policy(
        silent_before=now - (grace if grace is not None else timedelta(seconds=settings.CONCORD_RECOVERY_GRACE_S)),
        resend_before=now - resend_after,
        max_recoveries=max_recoveries if max_recoveries is not None else settings.CONCORD_MAX_RECOVERIES,
        queued_before=now - QUEUED_RESEND_AFTER,
    )
    return (
        _recover_all(TrainingRun, locks.TRAINING, policy)
        + _recover_all(ScoringJob, locks.SCORING, policy)
        + _recover_all(ScoringChunk, locks.SCORING_CHUNK, policy)
        + _resend_queued_chunks(policy)
        + _recover_all(CampaignRound, locks.CAMPAIGN_ROUND, policy)
        + _recover_all(SelectionRun, locks.SELECTION, policy)
    )


@dataclass(frozen=True)
class _Policy:
    silent_before: datetime
    resend_before: datetime
    max_recoveries: int
    queued_before: datetime


def _candidates(model: type[Job], policy: _Policy) -> QuerySet[Job]:
    candidates = jobs_to_recover(model, silent_before=policy.silent_before, resend_before=policy.resend_before)
    if model is ScoringJob:
        # A job with chunks is never a worker's: its chunks are recovered instead.
        candidates = candidates.filter(~Exists(ScoringChunk.objects.filter(job=OuterRef("pk"))))
    return candidates


def _recover_all(model: type[Job], namespace: int, policy: _Policy) -> list[Recovery]:
    candidates = _candidates(model, policy)
    done = []
    for pk in list(candidates.values_list("pk", flat=True)):
        with job_lock(namespace, pk) as free:
            recovery = _recover(model, pk, policy) if free else None  # taken: a live worker has it
        if recovery is None:
            continue
        if recovery.action == "resent":
            # After the lock is released, so that a worker taking the task at once can take the lock too.
            transaction.on_commit(partial(_send, recovery.job))
        logger.warning("Watchdog: %s", recovery)
        done.append(recovery)
    return done


@transaction.atomic
def _recover(model: type[Job], pk: int, policy: _Policy) -> Recovery | None:
    """Decide and write what becomes of a job whose lock the caller holds. It is read again under the lock, so
    what a worker or another watchdog did since the candidates were listed is seen here."""
    job = _candidates(model, policy).filter(pk=pk).first()
    if job is None:
        return None
    action, reason, changes = _decide(job, policy)
    if not model.objects.filter(pk=pk, status=model.Status.RUNNING, recoveries=job.recoveries).update(**changes):
        return None
    if isinstance(job, TrainingRun):
        run_log(job, f"watchdog: {reason}; " + ("sent to a worker again" if action == "resent" else action))
    if isinstance(job, ScoringChunk) and action == "failed":
        scoring_job_fail(job_id=job.job_id, error=f"Chunk {job.number}: {reason}")
    if isinstance(job, CampaignRound) and action == "failed":
        campaign_round_unroute(round_=job)
        Campaign.objects.filter(pk=job.campaign_id, status=Campaign.Status.RUNNING).update(
            status=Campaign.Status.FAILED, stop_reason=f"round {job.number}: {reason}", finished_at=timezone.now()
        )
    job.refresh_from_db()
    return Recovery(job=job, action=action, reason=reason)


def _decide(job: AnyJob, policy: _Policy) -> tuple[str, str, dict[str, Any]]:
    """The action, its reason and the row's changes for a running job whose worker is gone."""
    last = f"last heartbeat at {_when(job.heartbeat_at)}, {_progress(job)}"
    if isinstance(job, TrainingRun) and job.cancel_requested:
        changes = {"status": TrainingRun.Status.CANCELLED, "finished_at": timezone.now()}
        return "cancelled", f"worker lost while the run was cancelling; {last}", changes
    if isinstance(job, ScoringChunk) and job.job.finished:
        reason = f"worker lost after its job ended ({job.job.status}); {last}"
        changes = {
            "status": ScoringChunk.Status.FAILED,
            "error": f"Not scored: {reason}",
            "finished_at": timezone.now(),
        }
        return "cancelled", reason, changes
    if _waiting(job):
        return "resent", f"no worker took the re-send of {_when(job.recovered_at)}", {"recovered_at": Now()}
    lost = job.recoveries + 1
    if job.recoveries >= policy.max_recoveries:
        reason = f"worker lost {lost} times; {last}"
        changes = {"status": job.Status.FAILED, "error": reason[:1].upper() + reason[1:], "finished_at": timezone.now()}
        return "failed", reason, changes
    changes = {"recoveries": F("recoveries") + 1, "recovered_at": Now()}
    return "resent", f"worker lost ({last}); recovery {lost} of {policy.max_recoveries}", changes


def _waiting(job: AnyJob) -> bool:
    """Sent again before, and no worker has claimed it since."""
    if job.recovered_at is None:
        return False
    return job.heartbeat_at is None or job.heartbeat_at <= job.recovered_at


def _resend_queued_chunks(policy: _Policy) -> list[Recovery]:
    """Send again the chunks of open jobs queued since before `queued_before` and not sent again since
    `resend_before`: their task may have been lost (uncounted: no worker died)."""
    unsent = ScoringChunk.objects.filter(
        Q(recovered_at__isnull=True) | Q(recovered_at__lte=policy.resend_before),
        status=ScoringChunk.Status.QUEUED,
        job__status__in=OPEN,
        created_at__lt=policy.queued_before,
    )
    done = []
    for chunk in unsent.order_by("pk"):
        with job_lock(locks.SCORING_CHUNK, chunk.pk) as free:
            # The same row as read, still queued: a worker's claim or another watchdog's re-send since wins.
            still = ScoringChunk.objects.filter(pk=chunk.pk, status=chunk.status, recovered_at=chunk.recovered_at)
            resent = free and still.update(recovered_at=Now())
        if not resent:
            continue
        transaction.on_commit(partial(_send, chunk))
        recovery = Recovery(job=chunk, action="resent", reason=f"queued since {_when(chunk.created_at)}")
        logger.warning("Watchdog: %s", recovery)
        done.append(recovery)
    return done


def _send(job: AnyJob) -> None:
    if isinstance(job, TrainingRun):
        jobs.send(jobs.TRAINING_RUN, job.pk)
    elif isinstance(job, ScoringJob):
        jobs.send(jobs.SCORING, job.pk)
    elif isinstance(job, ScoringChunk):
        jobs.send(jobs.SCORING_CHUNK, job.pk)
    elif isinstance(job, SelectionRun):
        jobs.send(jobs.SELECTION, job.pk)
    else:
        jobs.send(jobs.CAMPAIGN_ROUND, job.pk)


def _name(job: AnyJob) -> str:
    if isinstance(job, TrainingRun):
        return f"training run {job.pk}"
    if isinstance(job, SelectionRun):
        return f"selection run {job.pk}"
    if isinstance(job, ScoringChunk):
        return f"chunk {job.number} of scoring job {job.job_id}"
    return f"scoring job {job.pk}" if isinstance(job, ScoringJob) else f"curation round {job.pk}"


def _progress(job: AnyJob) -> str:
    if isinstance(job, TrainingRun):
        return f"step {job.step}/{job.total_steps}"
    if isinstance(job, CampaignRound):
        return f"stage {job.stage}, {job.done}/{job.total}"
    if isinstance(job, ScoringChunk):
        return f"{job.done}/{job.size} items" + (f" on worker {job.worker}" if job.worker else "")
    return f"{job.done}/{job.total} items"


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S %Z}" if moment is not None else "never"
