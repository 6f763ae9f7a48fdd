"""Dataset versions: a draft holds its filters; freezing copies its rows once, after which nothing changes it.

Freezing claims the version (DRAFT or FAILED -> FREEZING, a compare-and-swap), writes rows with COPY in batches
with the count of rows written on the version as it goes (progress a page can poll), hashes the rows in position
order as it writes them (the same sha256 dataset_version_content_hash computes from the stored rows), and records
the manifest and stats. Rows are copies: later annotations, adjudications or deleted items never reach a frozen
version, and every service here refuses to change one.
"""

import hashlib
import json
import logging
import math
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from annotate.models import Item, LabelSchema, Project
from annotate.rules import RATING_SPREAD_LIMIT, STRENGTH_SPREAD_LIMIT
from concord import jobs, locks
from concord.errors import FieldError, ServiceError
from concord.jobs import enqueue_on_commit
from concord.locks import job_lock
from curation.models import DatasetRow, DatasetVersion
from curation.services.version_rows import (
    Candidate,
    PlannedRow,
    VersionFilters,
    candidate_chunks,
    canonical_json,
    prompt_json_hash,
    split_for,
)

logger = logging.getLogger(__name__)

INSERT_BATCH = 5000
HASH_CHUNK = 2000
HISTOGRAM_BINS = 10
# Versions drawn from at most this many candidate items are frozen in the request that asks; larger ones by a
# Celery worker (curation.tasks.dataset_version_freeze_run).
INLINE_FREEZE_MAX_ITEMS = 2000
ROW_HASH_FIELDS = DatasetRow.CONTENT_FIELDS


class VersionError(ServiceError):
    """A request a version cannot take: bad filters, or a change to a version that is no longer a draft."""


@transaction.atomic
def dataset_version_create(
    *,
    name: str,
    projects: Iterable[Project],
    filters: VersionFilters | dict[str, Any],
    parent: DatasetVersion | None = None,
    created_by: AbstractBaseUser | None,
) -> DatasetVersion:
    """A draft version of the given projects under `filters` (VersionFilters, or its JSON form)."""
    parsed = filters if isinstance(filters, VersionFilters) else VersionFilters.from_json(filters)
    projects = list(projects)
    errors = parsed.errors() + ([] if projects else [FieldError("projects", "a version needs at least one project")])
    if errors:
        raise VersionError(errors=errors)
    version = DatasetVersion(
        name=name,
        parent=parent,
        filters=parsed.to_json(),
        created_by_id=created_by.pk if created_by is not None else None,
    )
    version.full_clean(exclude=["created_by"])  # null for versions made by scripts
    version.save()
    version.projects.set(projects)
    return version


def dataset_version_update(*, version: DatasetVersion, name: str, filters: VersionFilters) -> DatasetVersion:
    """Change a draft's name and filters; a version being frozen or frozen is refused."""
    if filters.errors():
        raise VersionError(errors=filters.errors())
    changed = DatasetVersion.objects.filter(pk=version.pk, status=DatasetVersion.Status.DRAFT).update(
        name=name, filters=filters.to_json()
    )
    if changed != 1:
        raise VersionError(f"version {version.pk} is not a draft; a frozen version never changes")
    version.refresh_from_db()
    return version


def dataset_version_candidate_count(*, version: DatasetVersion) -> int:
    """An upper bound on the rows of a version (items that might qualify), to choose inline or worker."""
    return Item.objects.filter(project__in=version.projects.all()).count()


def dataset_version_freeze_start(*, version: DatasetVersion) -> DatasetVersion:
    """Freeze a draft (or retry a failed one): a small version in this request, a larger one on a worker (its
    task sent after the commit), whose progress the version's page shows."""
    if dataset_version_candidate_count(version=version) <= INLINE_FREEZE_MAX_ITEMS:
        return dataset_version_freeze(version=version)
    enqueue_on_commit(jobs.FREEZE, version.pk)
    return version


def dataset_version_claim(*, version: DatasetVersion) -> bool:
    """DRAFT (or FAILED, to retry) -> FREEZING; False when it is frozen.

    Call it holding the version's job lock (concord.locks): then a version still marked FREEZING is one whose
    worker died mid-freeze (its lock went with its connection), and it may be claimed again.
    """
    claimable = [DatasetVersion.Status.DRAFT, DatasetVersion.Status.FAILED, DatasetVersion.Status.FREEZING]
    changed = DatasetVersion.objects.filter(pk=version.pk, status__in=claimable).update(
        status=DatasetVersion.Status.FREEZING, row_count=0, error=""
    )
    return changed == 1


def dataset_version_freeze(
    *,
    version: DatasetVersion,
    rows: Callable[[], Iterator[PlannedRow]] | None = None,
    manifest_extra: dict[str, Any] | None = None,
) -> DatasetVersion:
    """Freeze a draft: write its rows, hash them, record manifest and stats. A version that is frozen, or being
    frozen by a live worker, raises VersionError; a failure leaves it FAILED without rows.

    The rows are those its filters select (curation.services.version_rows), unless `rows` gives them: a caller
    with rows of its own making (a curation round's decisions, training.services.campaigns) hands them in with
    what the manifest should say about them."""
    with job_lock(locks.FREEZE, version.pk) as mine:
        if not mine:
            raise VersionError(f"version {version.pk} is being frozen by another worker")
        if not dataset_version_claim(version=version):
            version.refresh_from_db()
            raise VersionError(f"version {version.pk} is {version.status}, not a draft; it cannot be frozen again")
        return _freeze_claimed(version, rows, manifest_extra or {})


def _freeze_claimed(
    version: DatasetVersion, rows: Callable[[], Iterator[PlannedRow]] | None, manifest_extra: dict[str, Any]
) -> DatasetVersion:
    try:
        # Rows of an earlier, failed or killed attempt go first.
        DatasetRow.objects.filter(version=version).delete()
        summary, content_hash = _write(version, rows)
        _finish(version, summary, content_hash, manifest_extra)
    except Exception as error:
        logger.exception("Freezing dataset version %s failed", version.pk)
        DatasetRow.objects.filter(version=version).delete()
        DatasetVersion.objects.filter(pk=version.pk).update(
            status=DatasetVersion.Status.FAILED, row_count=0, error=f"Freezing failed: {error}"[:2000]
        )
        raise
    version.refresh_from_db()
    return version


class _Summary:
    """Counts gathered while the rows are written, for the manifest and stats."""

    def __init__(self) -> None:
        self.rows = 0
        self.splits: Counter[str] = Counter()
        self.provenance: Counter[str] = Counter()
        self.states: Counter[str] = Counter()
        self.histogram = [0] * HISTOGRAM_BINS
        self.agreement_sum = 0.0
        self.schema_ids: set[int] = set()

    def add(self, row: PlannedRow) -> None:
        self.rows += 1
        self.splits[row.fields["split"]] += 1
        self.provenance[row.fields["provenance"]] += 1
        self.states[row.state] += 1
        self.histogram[min(HISTOGRAM_BINS - 1, int(row.fields["margin"] * HISTOGRAM_BINS))] += 1
        self.agreement_sum += row.agreement
        self.schema_ids |= row.schema_ids


def _filtered_chunks(version: DatasetVersion) -> Iterator[Iterator[PlannedRow]]:
    """The rows the version's filters select, each with the split of its prompt, a chunk of items at a time
    (candidate_chunks: a chunk is read when it is taken, and making its rows reads nothing)."""
    filters = VersionFilters.from_json(version.filters)
    for project in version.projects.order_by("pk"):
        for chunk in candidate_chunks(project=project, filters=filters):
            yield (candidate.planned(split=_split(candidate, filters)) for candidate in chunk)


def _split(candidate: Candidate, filters: VersionFilters) -> str:
    return split_for(prompt_json_hash(candidate.item.prompt_json), seed=filters.seed, fractions=filters.splits)


def _batches(rows: Iterator[PlannedRow]) -> Iterator[list[PlannedRow]]:
    """A caller's rows, INSERT_BATCH at a time, each batch taken whole before it is written: making them may
    query the database, which a connection cannot do while its COPY is open."""
    batch: list[PlannedRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= INSERT_BATCH:
            yield batch
            batch = []
    yield batch


def _write(version: DatasetVersion, rows: Callable[[], Iterator[PlannedRow]] | None) -> tuple[_Summary, str]:
    """Write the given rows, or else those the filters select."""
    return _write_rows(version, _batches(rows()) if rows is not None else _filtered_chunks(version))


def _write_rows(version: DatasetVersion, chunks: Iterator[Iterable[PlannedRow]]) -> tuple[_Summary, str]:
    """COPY each chunk of rows in, one transaction each with the count of rows so far, hashing every row as
    dataset_version_content_hash reads it back. A chunk's rows are made while its COPY is open, so the database
    stores each batch of them while the next are made."""
    summary = _Summary()
    digest = hashlib.sha256()
    statement = f"COPY {DatasetRow._meta.db_table} ({', '.join(_COPY_COLUMNS)}) FROM STDIN"
    for chunk in chunks:
        with transaction.atomic(), connection.cursor() as cursor:
            # A batch's commit need not wait for its WAL to reach disk: a crash before then leaves the version
            # FREEZING, to be frozen again from scratch, and _finish's commit (synchronous) flushes it all.
            cursor.execute("SET LOCAL synchronous_commit = off")
            with cursor.cursor.copy(statement) as copy:
                for row in chunk:
                    values, line = _stored(version.pk, summary.rows, row.fields, row.prompt_json)
                    copy.write_row(values)
                    digest.update(line.encode())
                    summary.add(row)
            _progress(version, summary.rows)
    return summary, digest.hexdigest()


def _progress(version: DatasetVersion, written: int) -> None:
    # The count of rows written so far is the freeze's progress; the version is not frozen until _finish.
    DatasetVersion.objects.filter(pk=version.pk).update(row_count=written)


_COPY_COLUMNS = ("version_id", *DatasetRow.CONTENT_FIELDS)
# What a row's fields are when a maker leaves them out: what the model would give them.
_ROW_DEFAULTS = {
    field.name: field.get_default()
    for field in DatasetRow._meta.concrete_fields
    if field.name in DatasetRow.CONTENT_FIELDS and field.name != "position"
}
_ROW_FIELDS = _ROW_DEFAULTS.keys()
_string_json = json.encoder.encode_basestring  # json.dumps of a str with ensure_ascii=False


def _stored(
    version_id: int, position: int, given: dict[str, Any], prompt_json: str | None
) -> tuple[tuple[Any, ...], str]:
    """A planned row as COPY values, and as its line of the content hash: canonical JSON of the row as it reads
    back from the database (stored_json), its fields in sorted order (ROW_HASH_FIELDS; a test holds the two
    equal)."""
    row = given if given.keys() == _ROW_FIELDS else _with_defaults(given)
    item_id, margin, weight = int(row["item_id"]), float(row["margin"]), float(row["weight"])
    split, context, chosen = _text(row["split"]), _text(row["context"]), _text(row["chosen"])
    rejected, provenance, source = _text(row["rejected"]), _text(row["provenance"]), _text(row["source"])
    prompt = prompt_json if prompt_json is not None else stored_json(row["prompt"])
    ids, labels = _ids_json(row["annotation_ids"]), stored_json(row["labels"])
    line = (
        f'{{"annotation_ids":{ids},"chosen":{_string_json(chosen)},"context":{_string_json(context)},'
        f'"item_id":{item_id},"labels":{labels},"margin":{_float_json(margin)},"position":{position},'
        f'"prompt":{prompt},"provenance":{_string_json(provenance)},"rejected":{_string_json(rejected)},'
        f'"source":{_string_json(source)},"split":{_string_json(split)},"weight":{_float_json(weight)}}}\n'
    )
    values = (version_id, position, item_id, split, prompt, context, chosen, rejected, margin, weight, provenance)
    return (*values, source, ids, labels), line


def _with_defaults(given: dict[str, Any]) -> dict[str, Any]:
    unknown = given.keys() - _ROW_FIELDS
    if unknown:
        raise TypeError(f"a dataset row has no field {', '.join(sorted(unknown))}")
    return {**_ROW_DEFAULTS, **given}


def _text(value: Any) -> str:
    """A text field's value as stored: a str (a choice's value for a choice); anything else is refused, as the
    column would refuse it."""
    if not isinstance(value, str):
        raise TypeError(f"a dataset row's text field got {type(value).__name__}")
    return str(value)


def _ids_json(ids: Any) -> str:
    """stored_json of the annotation ids: for a list of ints, the ints joined."""
    if type(ids) is list and all(type(pk) is int for pk in ids):
        return "[" + ",".join(map(str, ids)) + "]"
    return stored_json(ids)


def _float_json(number: float) -> str:
    return float.__repr__(number) if math.isfinite(number) else json.dumps(number)


def stored_json(value: Any) -> str:
    """canonical_json of `value` as a jsonb column gives it back: PostgreSQL keeps a number as its decimal digits,
    so a float written in exponent form from 1e16 up reads back as a whole number, and -0.0 as 0.0. Rarely
    needed, so looked for in the text first."""
    text = canonical_json(value)
    if "e+" in text or "-0.0" in text:
        text = canonical_json(_as_stored(value))
    return text


def _as_stored(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        if value == 0:
            return 0.0
        return int(Decimal(repr(value))) if abs(value) >= 1e16 else value
    if isinstance(value, dict):
        return {key: _as_stored(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_as_stored(item) for item in value]
    return value


def dataset_version_content_hash(*, version: DatasetVersion) -> str:
    """sha256 over the stored rows in position order, one canonical JSON line each, read a chunk at a time."""
    digest = hashlib.sha256()
    rows = DatasetRow.objects.filter(version=version).order_by("position").values_list(*ROW_HASH_FIELDS)
    for values in rows.iterator(chunk_size=HASH_CHUNK):
        digest.update(canonical_json(dict(zip(ROW_HASH_FIELDS, values, strict=True))).encode())
        digest.update(b"\n")
    return digest.hexdigest()


@transaction.atomic
def _finish(version: DatasetVersion, summary: _Summary, content_hash: str, manifest_extra: dict[str, Any]) -> None:
    projects = list(version.projects.order_by("pk"))
    version.refresh_from_db()
    version.status = DatasetVersion.Status.FROZEN
    version.row_count = summary.rows
    version.content_hash = content_hash
    version.frozen_at = timezone.now()
    version.manifest = {
        "filters": version.filters,
        "seed": version.filters.get("seed"),
        "projects": [{"id": p.pk, "name": p.name} for p in projects],
        "parent": version.parent_id,
        "schema_versions": _schema_versions(summary.schema_ids),
        "code_version": code_version(),
        "row_count": summary.rows,
        # How agreed and disputed items were labelled, and each row's weight: the consensus rule's confidence.
        "consensus": {"rule": version.filters.get("consensus", "mean"), "weight": "the rule's confidence"},
        "counts": {
            "split": dict(summary.splits),
            "provenance": dict(summary.provenance),
            "state": dict(summary.states),
        },
        "content_hash": content_hash,
        "row_schema": 1,
        # Which items may be rows and how each state is decided: annotate.rules.
        "rules": {
            "states": "annotate.rules.item_state",
            "strength_spread_limit": STRENGTH_SPREAD_LIMIT,
            "rating_spread_limit": RATING_SPREAD_LIMIT,
        },
        **manifest_extra,
    }
    version.stats = {
        "rows": summary.rows,
        "split": {split: summary.splits.get(split, 0) for split in DatasetRow.Split.values},
        "provenance": dict(summary.provenance),
        "margin_histogram": [
            {"low": i / HISTOGRAM_BINS, "high": (i + 1) / HISTOGRAM_BINS, "count": count}
            for i, count in enumerate(summary.histogram)
        ],
        "mean_agreement": round(summary.agreement_sum / summary.rows, 4) if summary.rows else None,
    }
    version.full_clean(exclude=["created_by"])  # null for versions made by scripts
    version.save(
        update_fields=["status", "row_count", "content_hash", "frozen_at", "manifest", "stats", "error"],
    )


def _schema_versions(schema_ids: set[int]) -> dict[str, list[int]]:
    """The label schema versions the rows' annotations were made under, by project id."""
    used: dict[str, list[int]] = {}
    rows = LabelSchema.objects.filter(pk__in=schema_ids).order_by("project_id", "version")
    for project_id, number in rows.values_list("project_id", "version"):
        used.setdefault(str(project_id), []).append(number)
    return used


def code_version() -> str:
    """The commit the code runs at (`git rev-parse HEAD`), or "unknown" outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607  # git from PATH, no shell, fixed arguments
            cwd=Path(settings.BASE_DIR),
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"
