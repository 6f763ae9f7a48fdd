"""Exports of a frozen dataset version, run by a Celery worker (curation.tasks.export_job_run).

Each streams the version's rows in position order a chunk at a time (memory holds one chunk whatever the
version's size) into a temporary file under MEDIA_ROOT, which is renamed into place when it is complete, and
keeps rows_done on the ExportJob row as it goes. Files are served by a view that checks membership, never by a
public media URL.

A chunk is one query by position (an index range scan: no server-side cursor, which Django would hold open
across transactions by materialising the whole result first), written with one call: a text format joins the
chunk's lines, Parquet makes it one row group. Outside a transaction a thread reads the next chunk on a
connection of its own meanwhile (curation.services.version_rows.read_ahead).
"""

import csv
import gzip
import io
import json
import logging
import math
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from concord import jobs, locks
from concord.jobs import enqueue_on_commit
from concord.locks import job_lock
from curation.models import DatasetRow, DatasetVersion, ExportJob
from curation.services.version_rows import read_ahead, reading_ahead_pays
from curation.services.versions import VersionError

logger = logging.getLogger(__name__)

ROW_CHUNK = 2000
EXPORT_DIR = "exports/versions"
# A Parquet export is a zip of one Parquet file per split (curation.services.version_parquet.splits_write).
EXTENSIONS = {"trl": "jsonl", "parquet": "parquet.zip", "fine": "jsonl", "csv": "csv"}
ROW_FIELDS = DatasetRow.CONTENT_FIELDS
JSON_FIELDS = ("prompt", "annotation_ids", "labels")
# Fields version_rows reads besides a row's own: a JSON field as PostgreSQL writes it, JSON text; a text field
# as a JSON string, which PostgreSQL escapes as json.dumps(text, ensure_ascii=False) does (a test holds them to it).
PROMPT_JSON, IDS_JSON, LABELS_JSON = (f"{name}_json" for name in JSON_FIELDS)
CHOSEN_JSON, REJECTED_JSON = "chosen_json", "rejected_json"
CSV_FIELDS = ("item_id", "split", "prompt", "context", "chosen", "rejected", "margin", "weight", "provenance", "source")
# OWASP CSV injection: a cell a spreadsheet would read as a formula starts with one of these.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

Progress = Callable[[int], None]
Row = TypeVar("Row")


@transaction.atomic
def export_job_create(*, version: DatasetVersion, format: str, created_by: AbstractBaseUser | None) -> ExportJob:
    """A queued export of a frozen version; its task is sent after the commit."""
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
    enqueue_on_commit(jobs.EXPORT, job.pk)
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
    try:
        rows = version_export_file(version=job.version, format=job.format, path=final, progress=_progress(job))
    except Exception as error:
        ExportJob.objects.filter(pk=job.pk).update(
            status=ExportJob.Status.FAILED, error=f"The export failed: {error}"[:2000], finished_at=timezone.now()
        )
        raise
    ExportJob.objects.filter(pk=job.pk).update(
        status=ExportJob.Status.DONE, file=relative, rows_done=rows, rows_total=rows, finished_at=timezone.now()
    )
    job.refresh_from_db()
    return job


# What a downloaded file's name ends with, by format: the format's name only where the extension does not say it.
FILE_ENDINGS = {"trl": "-trl.jsonl", "fine": "-fine-grained.jsonl", "csv": ".csv", "parquet": ".parquet"}
# A version tag already in a version's name ("helpful-v2", "v3 draft", "V1.1"): the file name adds none of its own.
_VERSION_TAG = re.compile(r"(?:^|[^a-z0-9])v\d+(?:\.\d+)*(?:$|[^a-z0-9])", re.IGNORECASE)


def export_file_name(job: ExportJob) -> str:
    """The name a finished export downloads as: the version's name (made safe), its id as "v<id>" unless the name
    carries a version tag already, and the format's ending ("helpful-v3-trl.jsonl", "release-v2.csv"); a Parquet
    export in splits ends in ".parquet.zip"."""
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in job.version.name).strip("-.")[:60] or "dataset"
    tagged = name if _VERSION_TAG.search(name) else f"{name}-v{job.version_id}"
    ending = FILE_ENDINGS[job.format]
    if job.file and job.file.name.endswith(".zip"):
        ending += ".zip"
    return tagged + ending


def _progress(job: ExportJob) -> Progress:
    def publish(rows_done: int) -> None:
        ExportJob.objects.filter(pk=job.pk).update(rows_done=rows_done)

    return publish


def version_rows(
    *, version: DatasetVersion, fields: tuple[str, ...] = ROW_FIELDS, chunk_size: int | None = None
) -> Iterator[dict[str, Any]]:
    """The version's rows as dicts of `fields`, in position order, read from the database a chunk at a time
    (memory holds one chunk). A JSON field is read as the model reads it; PROMPT_JSON, IDS_JSON or LABELS_JSON
    among the fields: that field as PostgreSQL writes it, JSON text; CHOSEN_JSON or REJECTED_JSON: that text as a
    JSON string."""
    for chunk in version_row_chunks(version=version, fields=fields, chunk_size=chunk_size):
        yield from chunk


# The columns are named by the caller's fields, each checked against the row's (_column).
_CHUNK_SQL = (
    "SELECT position, {columns} FROM {table} WHERE version_id = %s AND position > %s ORDER BY position LIMIT %s"
)


def version_row_chunks(
    *, version: DatasetVersion, fields: tuple[str, ...] = ROW_FIELDS, chunk_size: int | None = None
) -> Iterator[list[dict[str, Any]]]:
    """version_rows a chunk (ROW_CHUNK rows unless told) at a time."""
    for chunk in version_value_chunks(version=version, fields=fields, chunk_size=chunk_size):
        yield [dict(zip(fields, values, strict=True)) for values in chunk]


def version_value_chunks(
    *, version: DatasetVersion, fields: tuple[str, ...] = ROW_FIELDS, chunk_size: int | None = None
) -> Iterator[list[tuple[Any, ...]]]:
    """version_row_chunks with each row a tuple of its `fields`' values: each chunk one query, the rows after the
    last one's by position, read one chunk ahead by a thread of its own where that pays (read_ahead)."""
    chunk_size = chunk_size or ROW_CHUNK
    reads = partial(_value_chunks, version.pk, fields, chunk_size)
    if not reading_ahead_pays(-(-version.row_count // chunk_size)):
        yield from reads()
        return
    with read_ahead(reads) as read:
        yield from read


def _value_chunks(version_id: int, fields: tuple[str, ...], chunk_size: int) -> Iterator[list[tuple[Any, ...]]]:
    columns = ", ".join(_column(field) for field in fields)
    sql = _CHUNK_SQL.format(columns=columns, table=DatasetRow._meta.db_table)
    parsed = [index for index, field in enumerate(fields) if field in JSON_FIELDS]
    after = -1
    while True:
        with connection.cursor() as cursor:
            cursor.execute(sql, [version_id, after, chunk_size])
            rows = cursor.fetchall()
        if not rows:
            return
        after = rows[-1][0]
        yield [_values(values, parsed) for values in rows] if parsed else [values[1:] for values in rows]
        if len(rows) < chunk_size:
            return


def _column(field: str) -> str:
    if field in JSON_FIELDS or field in (PROMPT_JSON, IDS_JSON, LABELS_JSON):
        return f"{field.removesuffix('_json')}::text"
    if field in (CHOSEN_JSON, REJECTED_JSON):
        return f"to_json({field.removesuffix('_json')})::text"
    if field not in ROW_FIELDS:
        raise ValueError(f"a dataset row has no field {field!r}")
    return field


def _values(values: tuple[Any, ...], parsed: list[int]) -> tuple[Any, ...]:
    """A row's values after its position, its JSON fields decoded as the model decodes them."""
    row = list(values[1:])
    for index in parsed:
        row[index] = json.loads(row[index])
    return tuple(row)


def version_export_file(*, version: DatasetVersion, format: str, path: Path, progress: Progress | None = None) -> int:
    """version_export into a temporary file beside `path`, renamed to `path` once complete: a failed export leaves
    nothing where a finished one is expected (and nothing half-written beside it)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    zipped = path.suffix == ".zip"
    try:
        rows = version_export(
            version=version, format=format, path=temporary, progress=progress, gz=path.suffix == ".gz", zipped=zipped
        )
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return rows


def version_export(
    *,
    version: DatasetVersion,
    format: str,
    path: Path,
    progress: Progress | None = None,
    gz: bool | None = None,
    zipped: bool | None = None,
) -> int:
    """Write the version to a new file at `path` in `format`, a text format gzipped when `gz` (by default: when
    the name ends in .gz), Parquet as a zip of a file per split when `zipped` (by default: when the name ends in
    .zip), else as one file; returns the number of rows."""
    if version.status != DatasetVersion.Status.FROZEN:
        raise VersionError("only a frozen version can be exported")
    if format == "parquet":
        # Imported here: pyarrow is large, and only this export needs it.
        from curation.services.version_parquet import FIELDS, ROW_GROUP, chunks_write, splits_write

        chunks = version_value_chunks(version=version, fields=FIELDS, chunk_size=ROW_GROUP)
        write_parquet = splits_write if (path.suffix == ".zip" if zipped is None else zipped) else chunks_write
        return write_parquet(_counting(chunks, progress), path)
    if format not in TEXT_WRITERS:
        raise ValueError(f"unknown export format {format!r}")
    fields, write = TEXT_WRITERS[format]
    with _text_sink(path, gz=path.suffix == ".gz" if gz is None else gz) as sink:
        return write(_counting(version_row_chunks(version=version, fields=fields), progress), sink)


@contextmanager
def _text_sink(path: Path, *, gz: bool) -> Iterator[io.TextIOBase]:
    """A new text file at `path` (never an existing one), gzip-compressed when `gz`."""
    with path.open("xb") as raw, ExitStack() as stack:
        binary: IO[bytes] | gzip.GzipFile = raw
        if gz:
            binary = stack.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0))
        with io.TextIOWrapper(binary, encoding="utf-8", newline="") as text:
            yield text


def _counting(chunks: Iterator[list[Row]], progress: Progress | None) -> Iterator[list[Row]]:
    """The chunks, publishing the count of rows done after each whole ROW_CHUNK of them."""
    done = 0
    for chunk in chunks:
        yield chunk
        done += len(chunk)
        if progress is not None and chunk and done % ROW_CHUNK == 0:
            progress(done)


# One mapping from a stored row to each format. A row (version_rows) carries every field of DatasetRow; the fine
# format is the row itself, which is also what a training run reads (training.ml.data.example_from_row).

_encode = json.JSONEncoder(ensure_ascii=False).encode
_string = json.encoder.encode_basestring  # what _encode makes of a str, without its dispatch


def trl_line(row: dict[str, Any]) -> str:
    """A row in TRL's conversational preference format with an explicit prompt, plus its margin and split, as a
    JSON line. A row read with PROMPT_JSON carries the prompt as PostgreSQL stores it (JSON text), which goes into
    the line as it is: decoding it and encoding it again was a third of the export's time. Likewise the responses
    of a row read with CHOSEN_JSON and REJECTED_JSON, escaped by the database (on the connection that reads ahead,
    while this one writes)."""
    prompt = row[PROMPT_JSON] if PROMPT_JSON in row else _encode(row["prompt"])
    chosen = row[CHOSEN_JSON] if CHOSEN_JSON in row else _string(row["chosen"])
    rejected = row[REJECTED_JSON] if REJECTED_JSON in row else _string(row["rejected"])
    split = _SPLITS.get(row["split"]) or _string(row["split"])
    return (
        f'{{"prompt": {prompt}, "chosen": [{{"role": "assistant", "content": {chosen}}}], '
        f'"rejected": [{{"role": "assistant", "content": {rejected}}}], '
        f'"margin": {_number(row["margin"])}, "split": {split}}}\n'
    )


_SPLITS = {split: _string(split) for split in DatasetRow.Split.values}


def _number(value: float) -> str:
    """_encode of a float (a row's margin is one)."""
    return float.__repr__(value) if math.isfinite(value) else _encode(value)


def trl_row(row: dict[str, Any]) -> dict[str, Any]:
    """The object trl_line writes."""
    return dict(json.loads(trl_line(row)))


def _write_trl(chunks: Iterator[list[dict[str, Any]]], sink: io.TextIOBase) -> int:
    count = 0
    for chunk in chunks:
        sink.write("".join([trl_line(row) for row in chunk]))
        count += len(chunk)
    return count


def _write_json_lines(chunks: Iterable[list[dict[str, Any]]], sink: io.TextIOBase) -> int:
    count = 0
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    for chunk in chunks:
        sink.write("".join([dumps(row) + "\n" for row in chunk]))
        count += len(chunk)
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


def csv_row(row: dict[str, Any]) -> list[Any]:
    """A row as CSV cells, in CSV_FIELDS order: the prompt as readable text, every cell spreadsheet-safe."""
    values = {**row, "prompt": prompt_text(row["prompt"])}
    return [csv_cell(values[name]) for name in CSV_FIELDS]


def _write_csv(chunks: Iterator[list[dict[str, Any]]], sink: io.TextIOBase) -> int:
    writer = csv.writer(sink)
    writer.writerow(CSV_FIELDS)
    count = 0
    for chunk in chunks:
        writer.writerows([csv_row(row) for row in chunk])
        count += len(chunk)
    return count


# Each text format: the row fields it reads, and its writer.
Writer = Callable[[Iterator[list[dict[str, Any]]], io.TextIOBase], int]
TEXT_WRITERS: dict[str, tuple[tuple[str, ...], Writer]] = {
    "trl": ((PROMPT_JSON, CHOSEN_JSON, REJECTED_JSON, "margin", "split"), _write_trl),
    "fine": (ROW_FIELDS, _write_json_lines),
    "csv": (CSV_FIELDS, _write_csv),
}
