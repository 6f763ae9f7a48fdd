"""Curators steering annotators: pause one (no new work is handed out) or discount their labels; and the cached
statistics of the annotators page and the dashboard (and the pool counts of the campaign pages), computed by a
worker in one refresh (project_quality_refresh) and asked for by those pages, a curator's refresh button or a
change of weights (project_quality_request)."""

import logging
import time
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from annotate.models import Membership, Project
from concord.jobs import enqueue_on_commit
from curation.models import ProjectQuality
from curation.selectors_quality import (
    QUALITY_STEPS,
    quality_fingerprint,
    quality_report,
    quality_report_dump,
    quality_report_has_dashboard,
)

logger = logging.getLogger(__name__)

# The task that runs project_quality_refresh (curation.tasks), sent by name.
QUALITY_REFRESH = "curation.tasks.project_quality_refresh_run"
# A page view asks a worker to look again once the last request is this old; the worker recomputes only when
# the labels changed (quality_fingerprint), so an idle project costs one cheap check per STALE_AFTER.
STALE_AFTER = timedelta(minutes=5)
# A refresh queued or running with no news for this long is taken for lost (its worker died, or its message
# went) and asked for again; a second task for one refresh is harmless, as only a queued one is claimed.
LOST_AFTER = timedelta(minutes=30)
IN_FLIGHT = (ProjectQuality.Status.QUEUED, ProjectQuality.Status.RUNNING)


@transaction.atomic
def membership_pause(*, membership: Membership, paused: bool) -> Membership:
    """Pause or resume an annotator in a project. A lease they hold now runs out as usual; assignment_next
    hands a paused annotator nothing new."""
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    membership.is_paused = paused
    membership.full_clean()
    membership.save(update_fields=["is_paused"])
    return membership


@transaction.atomic
def membership_weight_set(*, membership: Membership, weight: float) -> Membership:
    """How much an annotator's labels count in weighted aggregation, from 0 (not at all) to 1 (fully)."""
    if not 0 <= weight <= 1:
        raise ValidationError({"weight": "The weight must lie between 0 and 1."})
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    membership.weight = weight
    membership.full_clean()
    membership.save(update_fields=["weight"])
    # Agreement with the others' weighted mean moves with the weights: the page's figures are computed again.
    project_quality_request(project=membership.project)
    return membership


@transaction.atomic
def project_model_threshold_set(*, project: Project, threshold: float) -> Project:
    """How sure the active reward model must be of the other side (its calibrated probability, 0.5 to 1) before
    its disagreement with agreeing annotators sends an item to the review queue."""
    project = Project.objects.select_for_update().get(pk=project.pk)
    project.model_threshold = threshold
    project.full_clean()
    project.save(update_fields=["model_threshold"])
    return project


def _lost(quality: ProjectQuality, now: datetime) -> bool:
    last_news = quality.heard_at if quality.status == ProjectQuality.Status.RUNNING else quality.requested_at
    return (last_news or quality.requested_at) < now - LOST_AFTER


def project_quality_refresh_due(*, quality: ProjectQuality | None, now: datetime) -> bool:
    """Whether a page view should ask for a refresh: nothing asked yet, the last request older than STALE_AFTER,
    a refresh lost on its way, or a report cached before it held the dashboard's figures."""
    if quality is None:
        return True
    if quality.status in IN_FLIGHT:
        return _lost(quality, now)
    if quality.status == ProjectQuality.Status.DONE and not quality_report_has_dashboard(quality.report):
        return True
    return quality.requested_at < now - STALE_AFTER


def project_quality_ensure(*, project: Project) -> ProjectQuality:
    """The call of the pages that show cached statistics (annotators, dashboard, campaigns): the project's row,
    after asking a worker for a refresh when one is due (project_quality_refresh_due). Never computes anything
    itself; one indexed read when not due."""
    quality = ProjectQuality.objects.filter(project=project).first()
    if quality is not None and not project_quality_refresh_due(quality=quality, now=timezone.now()):
        return quality
    return project_quality_request(project=project)


@transaction.atomic
def project_quality_request(*, project: Project, force: bool = False) -> ProjectQuality:
    """Ask a worker to refresh the project's statistics (`force`: recompute even if no label changed). One
    refresh at a time: asked while one is queued, that one serves; while one runs, another follows it."""
    now = timezone.now()
    quality, created = ProjectQuality.objects.get_or_create(project=project, defaults={"requested_at": now})
    quality = ProjectQuality.objects.select_for_update().get(pk=quality.pk)
    if not created and quality.status in IN_FLIGHT and not _lost(quality, now):
        if quality.status == ProjectQuality.Status.RUNNING:
            quality.again = True  # it may have read the labels already
        quality.force = quality.force or force
        quality.save(update_fields=["again", "force"])
        return quality
    quality.status = ProjectQuality.Status.QUEUED
    quality.force, quality.again, quality.requested_at = force, False, now
    quality.step, quality.steps, quality.step_name, quality.error = 0, len(QUALITY_STEPS), "", ""
    quality.full_clean()
    quality.save(update_fields=["status", "force", "again", "requested_at", "step", "steps", "step_name", "error"])
    enqueue_on_commit(QUALITY_REFRESH, quality.pk)
    return quality


def project_quality_refresh(*, quality_id: int) -> None:
    """Compute a project's statistics into its ProjectQuality row (on a worker). Safe to run twice: only a
    queued refresh is claimed, and only the run that claimed it writes its result."""
    quality = ProjectQuality.objects.filter(pk=quality_id).select_related("project").first()
    if quality is None or quality.status != ProjectQuality.Status.QUEUED:
        return
    started = timezone.now()
    claimed = ProjectQuality.objects.filter(
        pk=quality_id, status=ProjectQuality.Status.QUEUED, requested_at=quality.requested_at, force=quality.force
    ).update(status=ProjectQuality.Status.RUNNING, started_at=started, heard_at=started, force=False)
    if claimed != 1:
        return
    mine = ProjectQuality.objects.filter(pk=quality_id, started_at=started)
    try:
        _refresh(quality, mine, force=quality.force)
    except Exception as error:
        logger.exception("Refreshing the quality statistics of project %s failed", quality.project_id)
        mine.update(status=ProjectQuality.Status.FAILED, error=f"{type(error).__name__}: {error}"[:2000])
    _follow_up(quality_id)


def _refresh(quality: ProjectQuality, mine: QuerySet[ProjectQuality], *, force: bool) -> None:
    fingerprint = quality_fingerprint(project=quality.project)
    unchanged = fingerprint == quality.fingerprint and quality_report_has_dashboard(quality.report)
    if not force and unchanged:
        mine.update(status=ProjectQuality.Status.DONE, checked_at=timezone.now(), step_name="")
        return

    def progress(step: int, name: str) -> None:
        mine.update(step=step, step_name=name, heard_at=timezone.now())

    start = time.perf_counter()
    report = quality_report(project=quality.project, progress=progress)
    now = timezone.now()
    mine.update(
        status=ProjectQuality.Status.DONE,
        report=quality_report_dump(report),
        computed_at=now,
        checked_at=now,
        compute_seconds=time.perf_counter() - start,
        annotation_count=report.labels,
        fingerprint=fingerprint,
        step=len(QUALITY_STEPS),
        step_name="",
    )


@transaction.atomic
def _follow_up(quality_id: int) -> None:
    """A refresh asked for while this one ran (`again`) is queued now that it is over."""
    quality = ProjectQuality.objects.select_for_update().select_related("project").get(pk=quality_id)
    if quality.again and quality.status not in IN_FLIGHT:
        quality.again = False
        quality.save(update_fields=["again"])
        project_quality_request(project=quality.project, force=quality.force)
