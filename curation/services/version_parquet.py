"""Dataset version rows as Parquet, a row group at a time, in the shape Hugging Face `datasets` and TRL read:
prompt, chosen and rejected as lists of {role, content} turns (TRL's conversational preference format), the
margin, weight, split and provenance as columns, and the per-response labels as JSON text (their shape
depends on the project's label schema)."""

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from annotate.parquet import row_groups_write

TURN = pa.struct([("role", pa.string()), ("content", pa.string())])
SCHEMA = pa.schema(
    [
        ("position", pa.int64()),
        ("item_id", pa.int64()),
        ("split", pa.string()),
        ("prompt", pa.list_(TURN)),
        ("context", pa.string()),
        ("chosen", pa.list_(TURN)),
        ("rejected", pa.list_(TURN)),
        ("margin", pa.float64()),
        ("weight", pa.float64()),
        ("provenance", pa.string()),
        ("source", pa.string()),
        ("annotation_ids", pa.list_(pa.int64())),
        ("labels", pa.string()),
    ]
)


def rows_write(rows: Iterable[dict[str, Any]], path: Path, *, row_group_size: int) -> int:
    """Write version rows to a new Parquet file, `row_group_size` rows per row group; returns how many."""
    with path.open("xb") as sink:
        return row_groups_write((_row(row) for row in rows), sink, schema=SCHEMA, size=row_group_size)


def _row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "prompt": [{"role": turn.get("role"), "content": turn.get("content")} for turn in row["prompt"]],
        "chosen": [{"role": "assistant", "content": row["chosen"]}],
        "rejected": [{"role": "assistant", "content": row["rejected"]}],
        "labels": json.dumps(row["labels"], ensure_ascii=False, sort_keys=True),
    }
