"""Import file formats: pure parsing, no database, one record in memory at a time.

Pairwise preference rows, one JSON object per line (annotate.formats.preference):
- "trl": TRL preference rows, {"prompt", "chosen", "rejected"}, each a string or a list of {role, content}
  messages; or TRL's implicit-prompt form, where "prompt" is left out and chosen/rejected are whole
  conversations that share all but their final assistant message.
- "hh-rlhf": Anthropic HH-RLHF rows, {"chosen", "rejected"}, each a "\\n\\nHuman: ...\\n\\nAssistant: ..." transcript.
- "pairs": our own rows, {"prompt", "response_a", "response_b"} with optional "label", "id", "metadata", "source".

Public datasets with labels of their own, imported as prior annotations (one module each):
- "finegrainedrlhf": Fine-Grained RLHF qa-feedback, a JSON array: groups of four predictions, error spans.
- "pandalm": PandaLM's test set, a JSON array: pairs labelled by three annotators.
- "oasst": OpenAssistant message trees, JSON lines: ranked replies become groups.
- "helpsteer2": HelpSteer2 ratings and HelpSteer2-Preference rows, JSON lines.

"auto" (annotate.formats.detect) picks the format from the file's first records.

Files may be gzip-compressed (detected by content, not by name). Every problem raises ImportFormatError with
the 1-based number of the line (JSON lines) or record (JSON arrays) and the field at fault. Reading is bounded
(annotate.formats.reading): how far gzip data may expand, how large and how deeply nested a record may be.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from .core import (
    EXTERNAL_ID_MAX_CHARS,
    PAIR_MODES,
    SOURCE_MAX_CHARS,
    GroupRecord,
    ImportFormatError,
    PairRecord,
    PreferenceRecord,
    PriorAnnotation,
    Ranking,
    Record,
    Response,
    canonical_prompt,
    content_digest,
    content_hash,
    group_hash,
    group_pairs,
    json_type,
    pair_hash,
)
from .detect import FORMAT_NAMES, Detection, format_detect
from .finegrained import parse_finegrained
from .helpsteer2 import parse_helpsteer2
from .oasst import parse_tree
from .pandalm import parse_pandalm
from .preference import parse_hh, parse_pairs, parse_trl
from .reading import JsonArrayReader, LineReader, ReadLimits, json_object, storable

__all__ = [
    "EXTERNAL_ID_MAX_CHARS",
    "FORMATS",
    "FORMAT_NAMES",
    "PAIR_MODES",
    "SOURCE_MAX_CHARS",
    "Detection",
    "GroupRecord",
    "ImportFormatError",
    "JsonArrayReader",
    "LineReader",
    "PairRecord",
    "PreferenceRecord",
    "PriorAnnotation",
    "Ranking",
    "ReadLimits",
    "Record",
    "Response",
    "canonical_prompt",
    "content_digest",
    "content_hash",
    "format_detect",
    "group_hash",
    "group_pairs",
    "open_reader",
    "pair_hash",
    "parse_records",
]

Objects = Iterator[tuple[int, dict[str, Any]]]
Parser = Callable[[Objects], Iterator[Record]]
Reader = LineReader | JsonArrayReader


def _each(parse: Callable[[dict[str, Any], int], Record | Iterable[Record]]) -> Parser:
    """A parser of a file from a parser of one object, which makes one record or several."""

    def parse_all(objects: Objects) -> Iterator[Record]:
        for number, obj in objects:
            made = parse(obj, number)
            if isinstance(made, PreferenceRecord | PairRecord | GroupRecord):
                yield made
            else:
                yield from made

    return parse_all


@dataclass(frozen=True)
class Format:
    description: str
    parse: Parser
    # "lines": one JSON object per line; "array": the file is one JSON array of objects.
    layout: str = "lines"


FORMAT_SPECS: dict[str, Format] = {
    "trl": Format("TRL preference (prompt / chosen / rejected)", _each(parse_trl)),
    "hh-rlhf": Format("Anthropic HH-RLHF transcripts (chosen / rejected)", _each(parse_hh)),
    "pairs": Format("Pairs (prompt / response_a / response_b / label)", _each(parse_pairs)),
    "finegrainedrlhf": Format(
        "Fine-Grained RLHF qa-feedback (4 predictions, error spans, preferences; JSON array)",
        _each(parse_finegrained),
        layout="array",
    ),
    "pandalm": Format("PandaLM test set (3 annotators per pair; JSON array)", _each(parse_pandalm), layout="array"),
    "oasst": Format("OpenAssistant message trees (ranked replies)", _each(parse_tree)),
    "helpsteer2": Format("HelpSteer2 ratings / HelpSteer2-Preference", parse_helpsteer2),
}
FORMATS: dict[str, str] = {name: spec.description for name, spec in FORMAT_SPECS.items()}


def _spec(format: str) -> Format:
    if format not in FORMAT_SPECS:
        raise ImportFormatError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    return FORMAT_SPECS[format]


def open_reader(raw: IO[bytes], *, format: str, limits: ReadLimits | None = None) -> Reader:
    """The reader for a format's layout: numbered lines, or numbered records of a JSON array."""
    reader = JsonArrayReader if _spec(format).layout == "array" else LineReader
    return reader(raw, limits)


def parse_records(source: Iterable[tuple[int, Any]], *, format: str) -> Iterator[Record]:
    """Records of the given format from numbered lines (or parsed records); raises ImportFormatError, naming the
    line or record, at the first bad one."""
    parse = _spec(format).parse
    unit = getattr(source, "unit", "line")
    decoded = getattr(source, "decoded", False)
    position = [0, 0]  # the number of the object being parsed, and how many there have been

    def objects() -> Objects:
        for number, value in source:
            position[0] = number
            position[1] += 1
            obj = value if decoded else json_object(value, number)
            if not isinstance(obj, dict):
                raise ImportFormatError(f"expected a JSON object, got {json_type(obj)}", line=number, unit=unit)
            if decoded:  # json_object has checked lines
                storable(obj)
            yield number, obj

    try:
        yield from parse(objects())
    except ImportFormatError as error:
        if error.line is not None or not position[0]:
            raise
        raise ImportFormatError(error.reason, line=position[0], unit=unit) from None
    if position[1] == 0:
        raise ImportFormatError("the file has no records")
