"""Background work for training, on the gpu queue (CELERY_TASK_ROUTES): thin wrappers, ids in, one service call
out. Nothing here imports torch: the services import training.ml inside the task, in the pool process. The
watchdog that sends a dead worker's job here again runs on the default queue (training.watchdog_tasks)."""

import logging

from celery import shared_task

from training.models import CampaignRound, ScoringChunk, ScoringJob, SelectionRun, TrainingRun
from training.services.campaigns import campaign_round_advance, campaign_rounds_notify
from training.services.review_sync import review_queue_sync_send
from training.services.runs import training_run_execute
from training.services.scoring import scoring_chunk_run, scoring_run
from training.services.selection import selection_run_execute

logger = logging.getLogger(__name__)


@shared_task
def training_run_execute_task(run_id: int) -> None:
    """Train (or resume) a run. Safe to deliver twice: the run's job lock and claim decide who trains."""
    run = TrainingRun.objects.filter(pk=run_id).select_related("dataset_version", "project").first()
    if run is None:
        logger.warning("Training run %s does not exist (deleted before it ran?)", run_id)
        return
    try:
        training_run_execute(run=run)
    finally:
        # A curation round waiting for this run goes on (or fails) at once rather than at the next check.
        run.refresh_from_db()
        if run.finished:
            campaign_rounds_notify(training_run=run)


@shared_task
def scoring_task(job_id: int) -> None:
    """Score every item of a scoring job that has no chunks (nothing to score, or a row from before chunks). Safe
    to deliver twice."""
    job = ScoringJob.objects.filter(pk=job_id).select_related("reward_model__run").first()
    if job is None:
        logger.warning("Scoring job %s does not exist (deleted before it ran?)", job_id)
        return
    try:
        scoring_run(job=job)
    finally:
        job.refresh_from_db()
        if job.finished:
            scoring_job_ended(job)


@shared_task
def scoring_chunk_task(chunk_id: int) -> None:
    """Score one chunk of a scoring job, on whichever gpu worker takes it. Safe to deliver twice."""
    chunk = ScoringChunk.objects.filter(pk=chunk_id).select_related("job__reward_model__run").first()
    if chunk is None:
        logger.warning("Scoring chunk %s does not exist (its job deleted before it ran?)", chunk_id)
        return
    ended = scoring_chunk_run(chunk=chunk)
    if ended is not None:  # this chunk ended the job: once per job
        scoring_job_ended(ended)


def scoring_job_ended(job: ScoringJob) -> None:
    """What follows a scoring job's end: the curation round waiting for it goes on, and the review queue weighs
    the annotators against these scores now (its columns follow at once)."""
    campaign_rounds_notify(scoring_job=job)
    review_queue_sync_send(project_id=job.project_id)


@shared_task
def campaign_round_task(round_id: int) -> None:
    """Run a curation round's stages until one waits (training.services.campaigns). Safe to deliver twice."""
    round_ = CampaignRound.objects.filter(pk=round_id).select_related("campaign__project").first()
    if round_ is None:
        logger.warning("Campaign round %s does not exist (deleted before it ran?)", round_id)
        return
    campaign_round_advance(round_=round_)


@shared_task
def selection_run_task(run_id: int) -> None:
    """Rank a project's unlabelled pool under its selection strategy (training.services.selection). Safe to
    deliver twice."""
    run = SelectionRun.objects.filter(pk=run_id).select_related("project", "reward_model__run").first()
    if run is None:
        logger.warning("Selection run %s does not exist (deleted before it ran?)", run_id)
        return
    selection_run_execute(run=run)
