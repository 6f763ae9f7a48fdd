"""Exports of a frozen dataset version, run by a Celery worker (curation.tasks.export_job_run).

Each streams the version's rows in position order a chunk at a time (memory holds one chunk whatever the
version's size) into a temporary file under MEDIA_ROOT, which is renamed into place when it is complete, and
keeps rows_done on the ExportJob row as it goes. Files are served by a view that checks membership, never by a
public media URL.
"""

import csv
import io
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils import timezone

from concord import locks
from concord.locks import job_lock
from curation.models import DatasetRow, DatasetVersion, ExportJob
from curation.services.versions import VersionError

logger = logging.getLogger(__name__)

ROW_CHUNK = 2000
EXPORT_DIR = "exports/versions"
EXTENSIONS = {"trl": "jsonl", "parquet": "parquet", "fine": "jsonl", "csv": "csv"}
ROW_FIELDS = DatasetRow.CONTENT_FIELDS
CSV_FIELDS = ("item_id", "split", "prompt", "context", "chosen", "rejected", "margin", "weight", "provenance", "source")
# OWASP CSV injection: a cell a spreadsheet would read as a formula starts with one of these.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

Progress = Callable[[int], None]


@transaction.atomic
def export_job_create(*, version: DatasetVersion, format: str, created_by: AbstractBaseUser | None) -> ExportJob:
    """A queued export of a frozen version; enqueue curation.tasks.export_job_run after the commit."""
    if version.status != DatasetVersion.Status.FROZEN:
        raise VersionError("only a frozen version can be exported")
    job = ExportJob(
        version=version,
        format=format,
        rows_total=version.row_count,
        created_by_id=created_by.pk if created_by is not None else None,
    )
    job.full_clean(exclude=["created_by"])
    job.save()
    return job


def export_job_run(*, job: ExportJob) -> ExportJob:
    """Run a queued export. Safe to deliver twice: only the delivery holding the job's lock writes, and a job
    left RUNNING by a killed worker is run again by the next delivery; a failure leaves it FAILED and no file."""
    with job_lock(locks.EXPORT, job.pk) as mine:
        # Under the lock a RUNNING job is one whose worker died: its connection, and lock, went with it.
        active = [ExportJob.Status.QUEUED, ExportJob.Status.RUNNING]
        claimed = mine and ExportJob.objects.filter(pk=job.pk, status__in=active).update(
            status=ExportJob.Status.RUNNING, rows_done=0
        )
        if not claimed:
            logger.info("Export job %s is running elsewhere or has ended; leaving it alone", job.pk)
            job.refresh_from_db()
            return job
        return _run_claimed(job)


def _run_claimed(job: ExportJob) -> ExportJob:
    relative = f"{EXPORT_DIR}/version-{job.version_id}-{job.pk}-{job.format}.{EXTENSIONS[job.format]}"
    final = Path(settings.MEDIA_ROOT) / relative
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
    try:
        rows = version_export(version=job.version, format=job.format, path=temporary, progress=_progress(job))
        temporary.replace(final)
    except Exception as error:
        temporary.unlink(missing_ok=True)
        ExportJob.objects.filter(pk=job.pk).update(
            status=ExportJob.Status.FAILED, error=f"The export failed: {error}"[:2000], finished_at=timezone.now()
        )
        raise
    ExportJob.objects.filter(pk=job.pk).update(
        status=ExportJob.Status.DONE, file=relative, rows_done=rows, rows_total=rows, finished_at=timezone.now()
    )
    job.refresh_from_db()
    return job


def _progress(job: ExportJob) -> Progress:
    def publish(rows_done: int) -> None:
        ExportJob.objects.filter(pk=job.pk).update(rows_done=rows_done)

    return publish


def version_rows(
    *, version: DatasetVersion, fields: tuple[str, ...] = ROW_FIELDS, chunk_size: int = ROW_CHUNK
) -> Iterator[dict[str, Any]]:
    """The version's rows as dicts of `fields`, in position order, read from the database a chunk at a time
    (a server-side cursor: memory holds one chunk)."""
    rows = DatasetRow.objects.filter(version=version).order_by("position").values_list(*fields)
    for values in rows.iterator(chunk_size=chunk_size):
        yield dict(zip(fields, values, strict=True))


def version_export(*, version: DatasetVersion, format: str, path: Path, progress: Progress | None = None) -> int:
    """Write the version to a new file at `path` in `format`; returns the number of rows."""
    if version.status != DatasetVersion.Status.FROZEN:
        raise VersionError("only a frozen version can be exported")
    if format == "trl":
        with path.open("x", encoding="utf-8", newline="") as sink:
            return _write_trl(version, sink, progress)
    if format == "parquet":
        # Imported here: pyarrow is large, and only this export needs it.
        from curation.services.version_parquet import rows_write

        return rows_write(_counting(version_rows(version=version), progress), path, row_group_size=ROW_CHUNK)
    if format == "fine":
        with path.open("x", encoding="utf-8", newline="") as sink:
            return _write_fine(_counting(version_rows(version=version), progress), sink)
    if format == "csv":
        rows = _counting(version_rows(version=version, fields=CSV_FIELDS), progress)
        with path.open("x", encoding="utf-8", newline="") as sink:
            return _write_csv(rows, sink)
    raise ValueError(f"unknown export format {format!r}")


def _counting(rows: Iterator[dict[str, Any]], progress: Progress | None) -> Iterator[dict[str, Any]]:
    for done, row in enumerate(rows, start=1):
        yield row
        if progress is not None and done % ROW_CHUNK == 0:
            progress(done)


def trl_row(row: dict[str, Any]) -> dict[str, Any]:
    """TRL's conversational preference format with an explicit prompt, as annotate's TRL export writes it,
    with the margin and the split. _write_trl writes the same object without building it."""
    return {
        "prompt": row["prompt"],
        "chosen": [{"role": "assistant", "content": row["chosen"]}],
        "rejected": [{"role": "assistant", "content": row["rejected"]}],
        "margin": row["margin"],
        "split": row["split"],
    }


def _write_trl(version: DatasetVersion, sink: io.TextIOBase, progress: Progress | None) -> int:
    # The prompt comes as PostgreSQL's JSON text and goes into the line as it is: decoding it and encoding it
    # again was a third of the export's time.
    rows = (
        DatasetRow.objects.filter(version=version)
        .order_by("position")
        .annotate(prompt_json=Cast("prompt", TextField()))
        .values_list("prompt_json", "chosen", "rejected", "margin", "split")
    )
    count = 0
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    for prompt, chosen, rejected, margin, split in rows.iterator(chunk_size=ROW_CHUNK):
        sink.write(
            f'{{"prompt": {prompt}, "chosen": [{{"role": "assistant", "content": {dumps(chosen)}}}], '
            f'"rejected": [{{"role": "assistant", "content": {dumps(rejected)}}}], '
            f'"margin": {dumps(margin)}, "split": {dumps(split)}}}\n'
        )
        count += 1
        if progress is not None and count % ROW_CHUNK == 0:
            progress(count)
    return count


def _write_fine(rows: Iterator[dict[str, Any]], sink: io.TextIOBase) -> int:
    count = 0
    for row in rows:
        sink.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    return count


def csv_cell(value: Any) -> Any:
    """A cell safe to open in a spreadsheet: text that would start a formula gets a leading apostrophe.
    Numbers stay numbers (margins and weights are never negative)."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def prompt_text(prompt: Any) -> str:
    """Chat turns as readable text for a spreadsheet cell."""
    if not isinstance(prompt, list):
        return str(prompt)
    return "\n\n".join(f"{turn.get('role', '')}: {turn.get('content', '')}" for turn in prompt)


def _write_csv(rows: Iterator[dict[str, Any]], sink: io.TextIOBase) -> int:
    writer = csv.writer(sink)
    writer.writerow(CSV_FIELDS)
    count = 0
    for row in rows:
        values = {**row, "prompt": prompt_text(row["prompt"])}
        writer.writerow([csv_cell(values[name]) for name in CSV_FIELDS])
        count += 1
    return count
