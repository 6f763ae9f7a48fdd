"""Background work for the curation app: thin wrappers, ids in, one service call out."""

import logging

from celery import shared_task

from curation.models import DatasetVersion, ExportJob
from curation.services.quality import project_quality_refresh
from curation.services.version_exports import export_job_run as export_job_run_service
from curation.services.versions import VersionError, dataset_version_freeze

logger = logging.getLogger(__name__)


@shared_task
def dataset_version_freeze_run(version_id: int) -> None:
    """Freeze a draft version. Safe to run twice: only a draft is claimed."""
    version = DatasetVersion.objects.filter(pk=version_id).first()
    if version is None:
        logger.warning("Dataset version %s does not exist (deleted before it ran?)", version_id)
        return
    try:
        dataset_version_freeze(version=version)
    except VersionError as error:
        logger.info("Not freezing dataset version %s: %s", version_id, error)


@shared_task
def export_job_run(job_id: int) -> None:
    """Export a frozen version to a file. Safe to run twice: only a queued job is claimed."""
    job = ExportJob.objects.filter(pk=job_id).select_related("version").first()
    if job is None:
        logger.warning("Export job %s does not exist (deleted before it ran?)", job_id)
        return
    export_job_run_service(job=job)


@shared_task
def project_quality_refresh_run(quality_id: int) -> None:
    """Compute a project's annotator-quality statistics. Safe to run twice: only a queued refresh is claimed."""
    project_quality_refresh(quality_id=quality_id)
