"""Background work for training, on the gpu queue (CELERY_TASK_ROUTES): thin wrappers, ids in, one service call
out. Nothing here imports torch: the services import training.ml inside the task, in the pool process. The
watchdog that sends a dead worker's job here again runs on the default queue (training.watchdog_tasks)."""

import logging

from celery import shared_task

from training.models import ScoringJob, TrainingRun
from training.services.runs import training_run_execute
from training.services.scoring import scoring_run

logger = logging.getLogger(__name__)


@shared_task
def training_run_execute_task(run_id: int) -> None:
    """Train (or resume) a run. Safe to deliver twice: the run's job lock and claim decide who trains."""
    run = TrainingRun.objects.filter(pk=run_id).select_related("dataset_version", "project").first()
    if run is None:
        logger.warning("Training run %s does not exist (deleted before it ran?)", run_id)
        return
    training_run_execute(run=run)


@shared_task
def scoring_task(job_id: int) -> None:
    """Score a project's items with a reward model. Safe to deliver twice."""
    job = ScoringJob.objects.filter(pk=job_id).select_related("reward_model__run").first()
    if job is None:
        logger.warning("Scoring job %s does not exist (deleted before it ran?)", job_id)
        return
    scoring_run(job=job)
