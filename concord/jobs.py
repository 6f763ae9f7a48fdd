"""Enqueuing background jobs: by task name, after the commit that wrote the job's row.

The service that creates a job (an import batch, a freeze, an export, a training run, a scoring job) calls
enqueue_on_commit in its transaction. The task is sent only once that transaction commits, so a worker never
looks for a row that is not there yet, and a rolled-back request sends nothing. Sending by name means no service
imports a tasks module (tasks import services, not the other way round) and views never enqueue. Routing to the
gpu queue still applies: CELERY_TASK_ROUTES matches on the name.
"""

from functools import partial

from django.db import transaction

from concord.celery import app

# The task names, one per kind of job.
IMPORT = "annotate.tasks.import_batch_run"
FREEZE = "curation.tasks.dataset_version_freeze_run"
EXPORT = "curation.tasks.export_job_run"
TRAINING_RUN = "training.tasks.training_run_execute_task"
# A scoring job with chunks sends one task per chunk (by chunk id), taken by any gpu worker; scoring_task scores a
# job with none (nothing to score, or a row from before chunks) whole.
SCORING = "training.tasks.scoring_task"
SCORING_CHUNK = "training.tasks.scoring_chunk_task"
CAMPAIGN_ROUND = "training.tasks.campaign_round_task"
SELECTION = "training.tasks.selection_run_task"
# Not jobs with a row: counting a big project for its home page, by project id (annotate.services.project_counts);
# bringing a project's review queue columns up to date with its queue model, by project id.
REVIEW_SYNC = "training.review_tasks.review_queue_sync_task"
PROJECT_COUNTS = "annotate.tasks.project_counts_refresh_task"


def enqueue_on_commit(task_name: str, job_id: int) -> None:
    """Send the task for this job once the current transaction commits (at once outside a transaction)."""
    transaction.on_commit(partial(send, task_name, job_id))


def send(task_name: str, job_id: int) -> None:
    """Send a task by name now. Tests replace this to keep a job's task from leaving, or to route it elsewhere."""
    app.send_task(task_name, args=[job_id])
