"""Importing items from files: one batch per file, and all of a file or none of it."""

import logging
import os
import random
import secrets
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.cache import cache
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from annotate.formats import (
    FORMATS,
    SOURCE_MAX_CHARS,
    ImportFormatError,
    LineReader,
    PairRecord,
    Record,
    content_hash,
    parse_records,
)
from annotate.models import ImportBatch, Item, Project
from annotate.selectors import ImportProgress, import_progress_cache_key

logger = logging.getLogger(__name__)

INSERT_BATCH_SIZE = 1000
PROGRESS_TTL_SECONDS = 24 * 3600
FILE_NAME_MAX_CHARS = 255

ProgressCallback = Callable[[ImportProgress], None]


@transaction.atomic
def import_batch_create(
    *,
    project: Project,
    created_by: AbstractBaseUser | None,
    file_name: str,
    format: str,
    seed: int | None = None,
    upload: File | None = None,
) -> ImportBatch:
    """A queued import of one file. An upload is stored under MEDIA_ROOT, where the worker reads it."""
    if format not in FORMATS:
        raise ValueError(f"unknown import format {format!r}; expected one of {', '.join(FORMATS)}")
    batch = ImportBatch(
        project=project,
        created_by_id=created_by.pk if created_by is not None else None,
        file_name=file_name[:FILE_NAME_MAX_CHARS],
        format=format,
        # 32 bits: enough to make shuffles differ, short enough to type back in to repeat one.
        seed=secrets.randbits(32) if seed is None else seed,
        bytes_total=(upload.size or 0) if upload is not None else 0,
    )
    batch.full_clean()
    if upload is not None:
        batch.upload.save(file_name, upload, save=False)
    batch.save()
    return batch


@transaction.atomic
def import_batch_claim(*, batch: ImportBatch) -> bool:
    """Mark a batch running. False when it already ended, or while another worker holds it.

    A batch already RUNNING may be claimed again: its worker may have died (its transaction rolled back, so
    nothing was written). A live worker holds the batch's row lock for its whole import (see _import_file),
    so SKIP LOCKED here tells the two cases apart without waiting.
    """
    active = [ImportBatch.Status.QUEUED, ImportBatch.Status.RUNNING]
    free = ImportBatch.objects.select_for_update(skip_locked=True).filter(pk=batch.pk, status__in=active)
    if not list(free.values_list("pk", flat=True)):
        return False
    ImportBatch.objects.filter(pk=batch.pk).update(status=ImportBatch.Status.RUNNING)
    batch.status = ImportBatch.Status.RUNNING
    return True


def item_import(*, batch: ImportBatch, path: Path, progress: ProgressCallback | None = None) -> ImportBatch:
    """Run a queued import: every record of the file becomes an item, or, at the first bad line, none does.

    Returns the batch, DONE with its counts or FAILED with a message naming the file and the line.
    Items already in the project (same prompt and responses, in either order) are skipped and counted.
    """
    if not import_batch_claim(batch=batch):
        logger.info("Import batch %s is %s; leaving it alone", batch.pk, batch.status)
        batch.refresh_from_db()
        return batch
    try:
        ran = _import_file(batch=batch, path=path, progress=progress)
    except ImportFormatError as error:
        ran = True
        _import_batch_fail(batch=batch, message=error.for_file(batch.file_name))
    except OSError as error:
        ran = True
        _import_batch_fail(batch=batch, message=f"{batch.file_name}: the file could not be read ({error})")
    except Exception:
        _import_batch_fail(batch=batch, message=f"{batch.file_name}: the import failed unexpectedly")
        _forget_progress(batch)
        raise
    if ran:
        _forget_progress(batch)
    batch.refresh_from_db()
    return batch


@transaction.atomic
def _import_file(*, batch: ImportBatch, path: Path, progress: ProgressCallback | None) -> bool:
    # One transaction for the whole file, so that a bad line anywhere leaves nothing behind. It holds the
    # batch's row lock throughout: a second delivery of the same task finds the row locked and leaves, while
    # a delivery after a worker died finds it free (the dead connection's lock went with it) and runs.
    running = ImportBatch.objects.select_for_update(skip_locked=True).filter(
        pk=batch.pk, status=ImportBatch.Status.RUNNING
    )
    if not list(running.values_list("pk", flat=True)):
        logger.info("Import batch %s is being run by another worker or has ended", batch.pk)
        return False
    rng = random.Random(batch.seed)
    pending: list[Item] = []
    records = 0
    with path.open("rb") as raw:
        bytes_total = os.fstat(raw.fileno()).st_size
        reader = LineReader(raw)
        _publish(batch, ImportProgress(records_read=0, bytes_read=0, bytes_total=bytes_total), progress)
        for record in parse_records(reader, format=batch.format):
            pending.append(_item(record, batch=batch, rng=rng))
            records += 1
            if len(pending) >= INSERT_BATCH_SIZE:
                Item.objects.bulk_create(pending, ignore_conflicts=True)
                pending = []
                _publish(batch, ImportProgress(records, reader.bytes_read, bytes_total), progress)
        Item.objects.bulk_create(pending, ignore_conflicts=True)
    _publish(batch, ImportProgress(records, bytes_total, bytes_total), progress)
    _import_batch_finish(batch=batch, records=records, bytes_total=bytes_total)
    return True


def _item(record: Record, *, batch: ImportBatch, rng: random.Random) -> Item:
    """An unsaved item; chosen/rejected go to A/B by the batch's seeded coin, so a shuffle can be repeated."""
    if isinstance(record, PairRecord):
        a, b, label = record.response_a, record.response_b, record.label
    elif rng.random() < 0.5:
        a, b, label = record.chosen, record.rejected, Item.SourceLabel.A
    else:
        a, b, label = record.rejected, record.chosen, Item.SourceLabel.B
    # formats.py has checked every field, and full_clean() per row would cost a query each; so no full_clean.
    return Item(
        project_id=batch.project_id,
        import_batch=batch,
        prompt=record.prompt,
        response_a=a,
        response_b=b,
        source=record.source or batch.file_name[:SOURCE_MAX_CHARS],
        external_id=record.external_id or f"line {record.line}",
        metadata={"import": {"file": batch.file_name, "line": record.line}, **record.metadata},
        content_hash=content_hash(record.prompt, a, b),
        source_label=label,
    )


def _import_batch_finish(*, batch: ImportBatch, records: int, bytes_total: int) -> None:
    # Counting this batch's rows (rather than the project's before and after) stays right while another
    # import into the same project commits in between.
    batch.items_created = Item.objects.filter(import_batch=batch).count()
    batch.records_read = records
    batch.duplicates_skipped = records - batch.items_created
    batch.bytes_read = batch.bytes_total = bytes_total
    batch.status = ImportBatch.Status.DONE
    batch.error = ""
    batch.finished_at = timezone.now()
    batch.save(
        update_fields=[
            "items_created",
            "records_read",
            "duplicates_skipped",
            "bytes_read",
            "bytes_total",
            "status",
            "error",
            "finished_at",
        ]
    )


@transaction.atomic
def _import_batch_fail(*, batch: ImportBatch, message: str) -> None:
    # Runs after the import's transaction has rolled back, so the failure is recorded on its own.
    batch.status = ImportBatch.Status.FAILED
    batch.error = message
    batch.finished_at = timezone.now()
    batch.save(update_fields=["status", "error", "finished_at"])


def _publish(batch: ImportBatch, current: ImportProgress, callback: ProgressCallback | None) -> None:
    """Progress goes through the cache: rows written inside the import's transaction are invisible until it ends."""
    if callback is not None:
        callback(current)
    try:
        cache.set(import_progress_cache_key(batch.pk), asdict(current), PROGRESS_TTL_SECONDS)
    except Exception:  # progress is a nicety; a cache outage must not fail an import
        logger.warning("Could not publish progress of import batch %s", batch.pk, exc_info=True)


def _forget_progress(batch: ImportBatch) -> None:
    try:
        cache.delete(import_progress_cache_key(batch.pk))
    except Exception:
        logger.warning("Could not clear progress of import batch %s", batch.pk, exc_info=True)
