"""Exporting consensus pairs as TRL preference data, which the "trl" importer reads back."""

import gzip
import io
import json
import secrets
from pathlib import Path
from typing import Any, Protocol

from annotate.models import Project
from annotate.selectors import ConsensusPair, consensus_pairs

EXPORT_FORMATS = ("trl",)


class TextSink(Protocol):
    def write(self, text: str, /) -> object: ...


def pair_to_trl(pair: ConsensusPair) -> dict[str, Any]:
    """One row of TRL's conversational preference format, with the prompt given explicitly."""
    return {
        "prompt": pair.prompt,
        "chosen": [{"role": "assistant", "content": pair.chosen}],
        "rejected": [{"role": "assistant", "content": pair.rejected}],
    }


def pairs_write(*, project: Project, sink: TextSink, format: str = "trl") -> int:
    """Stream the project's consensus pairs to `sink` as JSON lines; returns how many rows were written."""
    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    rows = 0
    for pair in consensus_pairs(project=project):
        sink.write(json.dumps(pair_to_trl(pair), ensure_ascii=False) + "\n")
        rows += 1
    return rows


def pairs_export(*, project: Project, path: Path, format: str = "trl") -> int:
    """Write the export to `path` (gzip when it ends in .gz); returns the number of rows.

    The rows go to a temporary file next to `path` that is renamed over it at the end, so a failed export
    never leaves a half-written file where a finished one is expected.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with temporary.open("xb") as raw:
            binary = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if path.suffix == ".gz" else raw
            with io.TextIOWrapper(binary, encoding="utf-8", newline="\n") as text:
                rows = pairs_write(project=project, sink=text, format=format)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return rows
