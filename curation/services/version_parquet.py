"""Dataset version rows as Parquet, a row group per chunk of rows, in the shape Hugging Face `datasets` and TRL
read: prompt, chosen and rejected as lists of {role, content} turns (TRL's conversational preference format),
the margin, weight, split and provenance as columns, and the per-response labels as JSON text (their shape
depends on the project's label schema), as PostgreSQL writes it: the same JSON as json.dumps would write, in
PostgreSQL's order of keys.

An export for download (splits_write) is a zip of one Parquet file per split, train.parquet, validation.parquet
and test.parquet (a split without rows has none: `datasets` refuses an empty split), so that Hugging Face
`datasets` loads the splits as splits, the file names naming them once the zip is unpacked into a folder:

    unzip helpful-v3.parquet.zip -d helpful-v3
    datasets.load_dataset("parquet", data_dir="helpful-v3")  # DatasetDict: train, validation, test

The columns are built a chunk at a time rather than row by row: the prompts and annotation ids are parsed from
the JSON text PostgreSQL hands over by Arrow's JSON reader, and chosen and rejected become one-turn lists
around their text columns.
"""

import io
import tempfile
import zipfile
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from curation.services.version_exports import IDS_JSON, LABELS_JSON, PROMPT_JSON
from curation.services.version_rows import SPLITS

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
# Rows a row group, each read as a tuple of these fields (curation.services.version_exports.version_rows).
ROW_GROUP = 10_000
FIELDS = tuple(
    {"prompt": PROMPT_JSON, "annotation_ids": IDS_JSON, "labels": LABELS_JSON}.get(name, name) for name in SCHEMA.names
)
# What Arrow's JSON reader parses: a turn's keys other than role and content are left out.
_PARSED = pa.schema([("prompt", SCHEMA.field("prompt").type), ("annotation_ids", SCHEMA.field("annotation_ids").type)])
_PARSE = pa_json.ParseOptions(explicit_schema=_PARSED, unexpected_field_behavior="ignore")


# Dictionaries and statistics only where they pay: not for long texts, nearly every one different.
_SMALL = ["position", "item_id", "split", "margin", "weight", "provenance", "source"]
_WRITER = {"compression": "zstd", "use_dictionary": ["split", "provenance", "source"], "write_statistics": _SMALL}


def chunks_write(chunks: Iterable[list[tuple[Any, ...]]], path: Path) -> int:
    """Write chunks of version rows (tuples of FIELDS) to a new Parquet file, a row group each; returns how many
    rows. A row group is encoded and compressed by a thread of its own (Arrow lets go of the GIL) while the next
    one is built."""
    count = 0
    pending: Future[None] | None = None
    with (
        path.open("xb") as sink,
        pq.ParquetWriter(sink, SCHEMA, **_WRITER) as writer,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-write") as pool,
    ):
        for chunk in chunks:
            if chunk:
                built = table(chunk)
                if pending is not None:
                    pending.result()
                pending = pool.submit(writer.write_table, built, row_group_size=len(chunk))
                count += len(chunk)
        if pending is not None:
            pending.result()
    return count


def splits_write(chunks: Iterable[list[tuple[Any, ...]]], path: Path) -> int:
    """Write chunks of version rows to a new zip at `path` holding a Parquet file per split (SPLITS, each in
    position order, a row group per chunk's rows of it); returns how many rows. The files are built beside
    `path` and stored uncompressed in the zip: Parquet compresses its own pages. A split without rows gets no
    file."""
    count = 0
    written: set[str] = set()
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".splits-") as folder:
        files = {split: Path(folder) / f"{split}.parquet" for split in SPLITS}
        writers = {split: pq.ParquetWriter(file, SCHEMA, **_WRITER) for split, file in files.items()}
        try:
            for chunk in chunks:
                if chunk:
                    built = table(chunk)
                    for split, writer in writers.items():
                        part = built.filter(pc.equal(built.column("split"), split))
                        if part.num_rows:
                            writer.write_table(part, row_group_size=part.num_rows)
                            written.add(split)
                    count += len(chunk)
        finally:
            for writer in writers.values():
                writer.close()
        with zipfile.ZipFile(path, "x", compression=zipfile.ZIP_STORED) as archive:
            for split, file in files.items():
                if split in written:
                    archive.write(file, f"{split}.parquet")
    return count


def table(rows: list[tuple[Any, ...]]) -> pa.Table:
    """Version rows (tuples of FIELDS) as an Arrow table in SCHEMA: the one mapping from a stored row to
    Parquet."""
    values = dict(zip(FIELDS, zip(*rows, strict=True), strict=True))
    prompt, annotation_ids = _parsed(values[PROMPT_JSON], values[IDS_JSON])
    columns = {
        "prompt": prompt,
        "chosen": _assistant_turns(values["chosen"]),
        "rejected": _assistant_turns(values["rejected"]),
        "annotation_ids": annotation_ids,
        "labels": pa.array(values[LABELS_JSON], pa.string()),
    }
    for field in SCHEMA:
        if field.name not in columns:
            columns[field.name] = pa.array(values[field.name], field.type)
    return pa.Table.from_arrays([columns[name] for name in SCHEMA.names], schema=SCHEMA)


def _parsed(prompts: tuple[str, ...], ids: tuple[str, ...]) -> tuple[pa.Array, pa.Array]:
    """Prompts and annotation ids parsed from their JSON text, as one JSON lines document."""
    lines = "\n".join(
        [f'{{"prompt":{prompt},"annotation_ids":{row_ids}}}' for prompt, row_ids in zip(prompts, ids, strict=True)]
    )
    data = lines.encode()
    # One block: a block boundary inside a long line would be an error.
    read = pa_json.ReadOptions(block_size=max(1 << 20, len(data) + 1))
    parsed = pa_json.read_json(io.BytesIO(data), read_options=read, parse_options=_PARSE)
    return parsed.column("prompt").combine_chunks(), parsed.column("annotation_ids").combine_chunks()


def _assistant_turns(texts: tuple[str, ...]) -> pa.Array:
    """Each text as a list of one turn, {"role": "assistant", "content": text}."""
    turns = pa.StructArray.from_arrays(
        [pa.repeat("assistant", len(texts)), pa.array(texts, pa.string())], fields=list(TURN)
    )
    return pa.ListArray.from_arrays(pa.array(range(len(texts) + 1), pa.int32()), turns)
