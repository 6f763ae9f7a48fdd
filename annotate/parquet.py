"""Item records (annotate.services.exports.item_record) as Parquet, written a row group at a time.

Nested parts are real Arrow types: the prompt is a list of {role, content}, the group a struct, annotations a
list of structs with ratings as map<response, map<attribute, value>>, spans and missing information as lists
of structs, corrections as map<response, text>. Two parts have no fixed shape and are JSON text instead: the
item's and the group's metadata, and a span's or missing entry's extra keys ("extra": the keys beyond the
fixed ones, such as an imported span's explanation and passage ids; null when there are none).
"""

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

SPAN_FIELDS = ("response", "start", "end", "category", "text")
MISSING_FIELDS = ("response", "category")

TURN = pa.struct([("role", pa.string()), ("content", pa.string())])
GROUP = pa.struct(
    [
        ("id", pa.int64()),
        ("external_id", pa.string()),
        ("size", pa.int32()),
        ("response_a_index", pa.int32()),
        ("response_b_index", pa.int32()),
        ("response_a_key", pa.string()),
        ("response_b_key", pa.string()),
        ("metadata", pa.string()),
    ]
)
SPAN = pa.struct(
    [
        ("response", pa.string()),
        ("start", pa.int32()),
        ("end", pa.int32()),
        ("category", pa.string()),
        ("text", pa.string()),
        ("extra", pa.string()),
    ]
)
MISSING = pa.struct([("response", pa.string()), ("category", pa.string()), ("extra", pa.string())])
ANNOTATION = pa.struct(
    [
        ("annotator", pa.string()),
        ("origin", pa.string()),
        ("schema_version", pa.int32()),
        ("scale", pa.string()),
        ("strength", pa.int8()),
        ("justification", pa.string()),
        ("ratings", pa.map_(pa.string(), pa.map_(pa.string(), pa.int32()))),
        ("spans", pa.list_(SPAN)),
        ("missing", pa.list_(MISSING)),
        ("corrections", pa.map_(pa.string(), pa.string())),
        ("seconds_spent", pa.float64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
SCHEMA = pa.schema(
    [
        ("item_id", pa.int64()),
        ("external_id", pa.string()),
        ("source", pa.string()),
        ("prompt", pa.list_(TURN)),
        ("context", pa.string()),
        ("response_a", pa.string()),
        ("response_b", pa.string()),
        ("group", GROUP),
        ("source_label", pa.int8()),
        ("is_gold", pa.bool_()),
        ("metadata", pa.string()),
        ("annotations", pa.list_(ANNOTATION)),
    ]
)


def records_write(records: Iterable[dict[str, Any]], path: Path, *, row_group_size: int) -> int:
    """Write item records to a new Parquet file, `row_group_size` items per row group; returns how many."""
    with path.open("xb") as sink:
        return row_groups_write((_row(record) for record in records), sink, schema=SCHEMA, size=row_group_size)


def row_groups_write(rows: Iterable[dict[str, Any]], sink: BinaryIO, *, schema: pa.Schema, size: int) -> int:
    """Stream rows (already in `schema`'s shape) into Parquet, `size` rows per row group, so memory holds one
    row group at a time; returns how many rows were written."""
    count = 0
    pending: list[dict[str, Any]] = []
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for row in rows:
            pending.append(row)
            count += 1
            if len(pending) >= size:
                writer.write_table(pa.Table.from_pylist(pending, schema=schema), row_group_size=size)
                pending = []
        if pending:
            writer.write_table(pa.Table.from_pylist(pending, schema=schema), row_group_size=size)
    return count


def _row(record: dict[str, Any]) -> dict[str, Any]:
    group = record["group"]
    return {
        **record,
        "metadata": _json(record["metadata"]),
        "group": None if group is None else {**group, "metadata": _json(group["metadata"])},
        "annotations": [_annotation(annotation) for annotation in record["annotations"]],
    }


def _annotation(annotation: dict[str, Any]) -> dict[str, Any]:
    return {
        **annotation,
        "spans": [_split(span, SPAN_FIELDS) for span in annotation["spans"]],
        "missing": [_split(entry, MISSING_FIELDS) for entry in annotation["missing"]],
    }


def _split(entry: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    extra = {key: value for key, value in entry.items() if key not in fields}
    return {**{key: entry.get(key) for key in fields}, "extra": _json(extra) if extra else None}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
