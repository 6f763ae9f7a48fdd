"""Background work for the annotate app: thin wrappers, ids in, one service call out."""

import logging
from pathlib import Path

from celery import shared_task

from annotate.models import ImportBatch
from annotate.services.imports import item_import
from annotate.services.project_counts import project_counts_refresh

logger = logging.getLogger(__name__)


@shared_task
def import_batch_run(batch_id: int) -> None:
    """Import an uploaded file. Safe to run twice: only a queued batch is claimed."""
    batch = ImportBatch.objects.filter(pk=batch_id).select_related("project").first()
    if batch is None:
        logger.warning("Import batch %s does not exist (deleted before it ran?)", batch_id)
        return
    item_import(batch=batch, path=Path(batch.upload.path))


@shared_task
def project_counts_refresh_task(project_id: int) -> None:
    """Count a big project's items and annotations for its home page. Safe to run twice."""
    project_counts_refresh(project_id=project_id)
