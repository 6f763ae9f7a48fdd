"""Keeping the review queue's columns (curation.services.review_state) computed for the model the queue weighs
annotators against (training.selectors.queue_model): the active reward model, or a running campaign's ensemble.

That model changes when a model is activated, a scoring job finishes, a campaign round is scored or a campaign
ends; each changes the model's key, so the queue finds its columns out of date on its next look (and a finished
scoring job sends the update at once). A small project is brought up to date in that request; a big one on a
worker of the default queue, one at a time per project, while the queue says that it is updating.
"""

from django.core.cache import cache

from annotate.models import Project
from annotate.selectors import project_is_small
from concord import jobs, locks
from curation.selectors_review import ModelScores
from curation.services.review_state import review_is_current, review_queue_sync
from training.selectors import queue_model

# How long a sent update keeps further page views from sending another one.
SEND_THROTTLE_S = 60


def review_queue_bring_up_to_date(*, project: Project, model: ModelScores | None) -> bool:
    """Whether the review queue's columns are current for the queue model (queue_model(project), which the caller
    has looked up for the page as well) once this returns: recomputed now for a small project, else sent to a
    worker (False until it has run)."""
    if review_is_current(project=project, model=model):
        return True
    if project_is_small(project=project):
        review_queue_sync(project=project, model=model)
        return True
    review_queue_sync_send(project_id=project.pk)
    return False


def review_queue_sync_send(*, project_id: int) -> None:
    """Send the worker's update of this project's review columns, unless one was sent within the throttle."""
    if cache.add(f"concord:review-sync:{project_id}", 1, timeout=SEND_THROTTLE_S):
        jobs.enqueue_on_commit(jobs.REVIEW_SYNC, project_id)


def review_queue_sync_run(*, project_id: int) -> None:
    """The worker's side: recompute the project's review columns for its queue model, one worker at a time."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return
    with locks.job_lock(locks.REVIEW_SYNC, project_id) as taken:
        if taken:
            review_queue_sync(project=project, model=queue_model(project))
    cache.delete(f"concord:review-sync:{project_id}")
