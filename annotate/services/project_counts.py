"""A project's counts for its home page (items, complete items, annotations): counted in the request for a small
project; for a big one, counted by a worker into the cache and shown with their age, so no page load scans a
project of a million items."""

from django.core.cache import cache

from annotate.models import Project
from annotate.selectors import (
    PROJECT_COUNTS_FRESH_S,
    ProjectCounts,
    project_counts,
    project_counts_cache_key,
    project_counts_count,
    project_is_small,
)
from concord import jobs

# How long the cache keeps counts: long past their freshness, so a page has the last figures while new ones are
# counted.
KEEP_S = 7 * 24 * 3600


def project_counts_current(*, project: Project) -> ProjectCounts | None:
    """The counts to show: counted now for a small project; else the last ones counted (None before the first),
    with a recount sent to a worker once they are older than PROJECT_COUNTS_FRESH_S."""
    if project_is_small(project=project):
        return project_counts_count(project=project)
    cached = project_counts(project=project)
    if cached is None or cached.age_s > PROJECT_COUNTS_FRESH_S:
        project_counts_refresh_send(project_id=project.pk)
    return cached


def project_counts_refresh_send(*, project_id: int) -> None:
    """Send a recount to a worker, unless one was sent within the freshness period."""
    if cache.add(f"concord:project-counts-sent:{project_id}", 1, timeout=PROJECT_COUNTS_FRESH_S):
        jobs.enqueue_on_commit(jobs.PROJECT_COUNTS, project_id)


def project_counts_refresh(*, project_id: int) -> None:
    """The worker's side: count the project and keep the counts in the cache."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return
    counts = project_counts_count(project=project)
    cache.set(project_counts_cache_key(project_id), counts.__dict__, timeout=KEEP_S)
