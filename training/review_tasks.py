"""Review queue upkeep on the default queue: its module is not under training.tasks.*, which go to the gpu queue,
where it would wait behind training."""

from celery import shared_task

from training.services.review_sync import review_queue_sync_run


@shared_task
def review_queue_sync_task(project_id: int) -> None:
    """Recompute a project's review columns for its queue model. Safe to deliver twice."""
    review_queue_sync_run(project_id=project_id)
