"""Importing items from files: one batch per file, and all of a file or none of it."""

import logging
import os
import random
import secrets
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import IO

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.cache import cache
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from annotate.formats import (
    FORMAT_NAMES,
    FORMATS,
    Detection,
    ImportFormatError,
    ReadLimits,
    Record,
    format_detect,
    open_reader,
    parse_records,
)
from annotate.models import ImportBatch, ItemGroup, Project
from annotate.selectors import ImportProgress, import_progress_cache_key
from annotate.services.import_writer import ImportWriter
from concord import jobs
from concord.jobs import enqueue_on_commit

logger = logging.getLogger(__name__)

INSERT_BATCH_SIZE = 2000
READ_BUFFER_BYTES = 1 << 20
PROGRESS_TTL_SECONDS = 24 * 3600
FILE_NAME_MAX_CHARS = 255

ProgressCallback = Callable[[ImportProgress], None]
# The format choice that asks for detection from the file's first records (annotate.formats.detect).
AUTO_FORMAT = "auto"


def import_format_detect(*, raw: IO[bytes]) -> Detection:
    """The format of a file, from its first records, under the import's read limits; the file is left where it
    was. Raises ImportFormatError naming the likely formats when none fits."""
    return format_detect(raw, limits=ReadLimits(expanded_bytes=settings.CONCORD_MAX_EXPANDED_BYTES))


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
    """A queued import of one file. An upload is stored under MEDIA_ROOT, where a worker reads it: its task is sent
    after the commit. A file on disk (the command line) is imported by the caller with item_import."""
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
    if upload is not None:
        enqueue_on_commit(jobs.IMPORT, batch.pk)
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
    """Run a queued import: every record of the file becomes an item (a group record: a group and an item per
    compared pair), with the labels that came with it as imported annotations; or, at the first bad line or
    record, nothing does.

    Returns the batch, DONE with its counts or FAILED with a message naming the file and the line.
    Items already in the project (same prompt and responses, in either order) are skipped and counted; labels
    that came with them are still added where their annotator has none there yet.
    """
    if not import_batch_claim(batch=batch):
        logger.info("Import batch %s is %s; leaving it alone", batch.pk, batch.status)
        batch.refresh_from_db()
        return batch
    try:
        ran = _import_file(batch=batch, path=path, progress=progress)
    except ImportFormatError as error:
        ran = True
        _import_batch_fail(batch=batch, message=error.for_file(batch.file_name) + _format_hint(batch, path))
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
    pending: list[Record] = []
    pending_items = 0
    # A large buffer: fewer reads, each of which lets the writer's thread take the GIL.
    with path.open("rb", buffering=READ_BUFFER_BYTES) as raw:
        bytes_total = os.fstat(raw.fileno()).st_size
        limits = ReadLimits(expanded_bytes=settings.CONCORD_MAX_EXPANDED_BYTES)
        reader = open_reader(raw, format=batch.format, limits=limits)
        _publish(batch, ImportProgress(records_read=0, bytes_read=0, bytes_total=bytes_total), progress)
        with ImportWriter(batch=batch, rng=random.Random(batch.seed), unit=reader.unit) as writer:
            for record in parse_records(reader, format=batch.format):
                pending.append(record)
                pending_items += writer.items_in(record)
                if pending_items >= INSERT_BATCH_SIZE:
                    writer.write(pending)
                    pending, pending_items = [], 0
                    _publish(batch, ImportProgress(reader.records, reader.bytes_read, bytes_total), progress)
            writer.write(pending)
    # A group whose pairs all turned out to exist already (another import committed them meanwhile) is empty.
    ItemGroup.objects.filter(import_batch=batch, items__isnull=True).delete()
    _publish(batch, ImportProgress(reader.records, bytes_total, bytes_total), progress)
    _import_batch_finish(
        batch=batch,
        records=reader.records,
        items=writer.items_planned,
        created=writer.items_created,
        bytes_total=bytes_total,
    )
    logger.info("Import batch %s added %s prior annotations", batch.pk, writer.annotations_created)
    return True


def _import_batch_finish(*, batch: ImportBatch, records: int, items: int, created: int, bytes_total: int) -> None:
    """`records` read from the file asked for `items` items (a group record for one per pair), of which this
    batch inserted `created`: the rest were duplicates."""
    # The rows this batch's own INSERTs added (rather than the project's count before and after): right even
    # while another import into the same project commits in between.
    batch.items_created = created
    batch.records_read = records
    batch.duplicates_skipped = items - batch.items_created
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


def _format_hint(batch: ImportBatch, path: Path) -> str:
    """When a file fails in the format it was imported as but its first records fit another, name that one."""
    try:
        with path.open("rb") as raw:
            detected = import_format_detect(raw=raw)
    except (ImportFormatError, OSError):
        return ""
    if detected.format == batch.format:
        return ""
    return f" (The file looks like {FORMAT_NAMES[detected.format]}: import it with that format, or with auto.)"


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
