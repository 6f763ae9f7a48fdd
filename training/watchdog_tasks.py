"""The watchdog's task, on the default queue: not under training.tasks.*, which CELERY_TASK_ROUTES sends to the
gpu queue, where it would wait behind the long job it is checking. Celery beat sends it (CELERY_BEAT_SCHEDULE);
workers import this module through CELERY_IMPORTS."""

from celery import shared_task

from training.services.campaigns import campaign_rounds_check
from training.services.recovery import stale_jobs_recover
from training.services.selection import selection_runs_due


@shared_task
def stale_jobs_recover_task() -> None:
    """Recover running training runs, scoring jobs and curation rounds whose worker died
    (training.services.recovery), wake the rounds whose awaited work has ended, and start the selections that
    enough new labels call for."""
    stale_jobs_recover()
    campaign_rounds_check()
    selection_runs_due()
