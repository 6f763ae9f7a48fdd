"""Exports of every item with all of its annotations, fine-grained labels included, as JSON lines or Parquet,
streamed with bounded memory. Training data (consensus pairs) comes from a frozen dataset version instead
(curation.services.version_exports), which decides every item's label by the rules once."""

import gzip
import io
import json
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from annotate.models import Annotation, Item, Project
from annotate.selectors import annotation_scale, items_for_export, schema_scales, schema_versions

ITEM_EXPORT_FORMATS = ("jsonl", "parquet")
# Items per database round trip (and per Parquet row group) in an item export.
ITEM_CHUNK = 500


class TextSink(Protocol):
    def write(self, text: str, /) -> object: ...


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file next to `path`, renamed over it when the block succeeds and removed when it fails, so
    a failed export never leaves a half-written file where a finished one is expected."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield temporary
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def _text_file(path: Path, *, gz: bool) -> Iterator[io.TextIOWrapper]:
    with path.open("xb") as raw:
        binary: IO[bytes] | gzip.GzipFile = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if gz else raw
        with io.TextIOWrapper(binary, encoding="utf-8", newline="\n") as text:
            yield text


# Items with their annotations.


def item_records(*, project: Project, chunk_size: int = ITEM_CHUNK) -> Iterator[dict[str, Any]]:
    """Every item of the project as a record (item_record), in id order."""
    schemas = _Schemas(scales=schema_scales(project=project), versions=schema_versions(project=project))
    for item in items_for_export(project=project, chunk_size=chunk_size):
        yield item_record(item, schemas)


@dataclass(frozen=True)
class _Schemas:
    """A project's schema versions, looked up once per export rather than once per annotation."""

    scales: dict[int, str]
    versions: dict[int, int]


def item_record(item: Item, schemas: _Schemas) -> dict[str, Any]:
    """An item and everything said about it. Annotations keep their spans' extra keys (an imported span's
    explanation, passage and sentence ids); each says the scale its strength is on."""
    return {
        "item_id": item.pk,
        "external_id": item.external_id,
        "source": item.source,
        "prompt": item.prompt,
        "context": item.context,
        "response_a": item.response_a,
        "response_b": item.response_b,
        "group": _group_record(item),
        "source_label": item.source_label,
        "is_gold": item.is_gold,
        "metadata": item.metadata,
        "annotations": [_annotation_record(a, item, schemas) for a in item.annotations.all()],
    }


def _group_record(item: Item) -> dict[str, Any] | None:
    group = item.group
    if group is None or item.response_a_index is None or item.response_b_index is None:
        return None
    keys = [response.get("key", "") for response in group.responses]
    return {
        "id": group.pk,
        "external_id": group.external_id,
        "size": len(keys),
        "response_a_index": item.response_a_index,
        "response_b_index": item.response_b_index,
        "response_a_key": keys[item.response_a_index],
        "response_b_key": keys[item.response_b_index],
        "metadata": group.metadata,
    }


def _annotation_record(annotation: Annotation, item: Item, schemas: _Schemas) -> dict[str, Any]:
    texts = {"a": item.response_a, "b": item.response_b}
    has_strength = annotation.strength is not None
    return {
        "annotator": annotation.annotator.username,
        "origin": annotation.origin,
        "schema_version": schemas.versions.get(annotation.schema_id) if annotation.schema_id is not None else None,
        "scale": annotation_scale(annotation, item, schemas.scales) if has_strength else None,
        "strength": annotation.strength,
        "justification": annotation.justification,
        "ratings": annotation.ratings,
        # A span's text is stored with it; older ones without are filled in from the response.
        "spans": [{"text": texts[s["response"]][s["start"] : s["end"]], **s} for s in annotation.spans],
        "missing": annotation.missing,
        "corrections": annotation.corrections,
        "seconds_spent": annotation.seconds_spent,
        "created_at": annotation.created_at,
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def items_write(*, records: Iterable[dict[str, Any]], sink: TextSink) -> int:
    """Item records as JSON lines; returns how many were written."""
    count = 0
    for record in records:
        sink.write(json.dumps(record, ensure_ascii=False, default=_json_default) + "\n")
        count += 1
    return count


def items_export(*, project: Project, path: Path, format: str = "jsonl", chunk_size: int = ITEM_CHUNK) -> int:
    """Write every item with its annotations to `path`: JSON lines (gzip when it ends in .gz) or Parquet, in
    row groups of `chunk_size` items. Returns the number of items."""
    if format not in ITEM_EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; expected one of {', '.join(ITEM_EXPORT_FORMATS)}")
    records = item_records(project=project, chunk_size=chunk_size)
    with _replacing(path) as temporary:
        if format == "parquet":
            # Imported here: pyarrow is large, and only this export needs it.
            from annotate.parquet import records_write

            return records_write(records, temporary, row_group_size=chunk_size)
        with _text_file(temporary, gz=path.suffix == ".gz") as text:
            return items_write(records=records, sink=text)
