"""Which format a file is in, from its first records only: the layout (JSON lines or one JSON array) from its first
byte, then the formats of that layout whose parsers take the first SAMPLE_RECORDS records. Pure Python: no Django
import. Reading goes through annotate.formats.reading, so its limits (gzip expansion, record size, nesting) hold
here too, and at most SAMPLE_RECORDS records are read however large the file.

A file no format takes is refused with the formats it looks most like, by layout and field names, each with the
reason its parser gave: "this looks like a JSON array: PandaLM or FineGrainedRLHF? ...".
"""

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, cast

from .core import ImportFormatError
from .reading import UTF8_BOM, JsonArrayReader, LineReader, ReadLimits, _open, json_object

# Enough for a pair of HelpSteer2 ratings rows and for a second look at a format whose first record is odd.
SAMPLE_RECORDS = 4
# How far the first byte of JSON may hide behind whitespace.
PEEK_BYTES = 64 * 1024

# How people call the formats, in the order ties are decided (the more specific first).
FORMAT_NAMES: dict[str, str] = {
    "pairs": "pairs",
    "trl": "TRL",
    "hh-rlhf": "HH-RLHF",
    "oasst": "OpenAssistant",
    "helpsteer2": "HelpSteer2",
    "pandalm": "PandaLM",
    "finegrainedrlhf": "FineGrainedRLHF",
}
# The fields that give each format away, for naming the likely ones when none parses.
TELLING_FIELDS: dict[str, frozenset[str]] = {
    "pairs": frozenset({"prompt", "response_a", "response_b", "label"}),
    "trl": frozenset({"prompt", "chosen", "rejected"}),
    "hh-rlhf": frozenset({"chosen", "rejected"}),
    "oasst": frozenset({"prompt", "message_tree_id", "tree_state"}),
    "helpsteer2": frozenset(
        {"prompt", "response", "helpfulness", "correctness", "response_1", "response_2", "preference_strength"}
    ),
    "pandalm": frozenset({"instruction", "input", "response1", "response2", "annotator1", "annotator2"}),
    "finegrainedrlhf": frozenset({"question", "passages", "prediction 1", "prediction 2", "feedback", "preference"}),
}
LAYOUT_WORDS = {"lines": "JSON lines", "array": "a JSON array"}


@dataclass(frozen=True)
class Detection:
    """The format a file's first records parse as, and any others they also parse as."""

    format: str
    also: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return FORMAT_NAMES[self.format]

    def describe(self) -> str:
        """For a person: "Detected format: PandaLM." (and what else it would parse as)."""
        others = " or ".join(FORMAT_NAMES[name] for name in self.also)
        return f"Detected format: {self.name}." + (f" (It also parses as {others}.)" if others else "")


def format_detect(raw: IO[bytes], *, limits: ReadLimits | None = None) -> Detection:
    """Detect the format of a file from its first records; raw is left at its start. Raises ImportFormatError
    naming the likely formats when none takes the records."""
    from . import FORMAT_SPECS  # the registry imports this module

    start = raw.tell()
    try:
        layout = _layout(_borrow(raw), limits or ReadLimits())
        raw.seek(start)
        view = _borrow(raw)
        reader = JsonArrayReader(view, limits) if layout == "array" else LineReader(view, limits)
        sample, more = _sample(reader)
    finally:
        raw.seek(start)
    if not sample:
        raise ImportFormatError("the file has no records")
    candidates = [name for name in FORMAT_NAMES if FORMAT_SPECS[name].layout == layout]
    reasons: dict[str, ImportFormatError] = {}
    fitting = []
    for name in candidates:
        problem = _misfit(name, sample, unit=reader.unit, more=more)
        if problem is None:
            fitting.append(name)
        else:
            reasons[name] = problem
    if fitting:
        return Detection(fitting[0], tuple(fitting[1:]))
    raise _no_format(layout, sample, reasons)


class _Borrowed(io.RawIOBase):
    """The caller's file, read from its start, and left open: the readers' buffers close what they wrap once they
    are collected, and the caller still has the whole file to store or import."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._start = raw.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            offset += self._start
        return self._raw.seek(offset, whence) - self._start

    def tell(self) -> int:
        return self._raw.tell() - self._start


def _borrow(raw: IO[bytes]) -> IO[bytes]:
    return cast(IO[bytes], _Borrowed(raw))


def _layout(raw: IO[bytes], limits: ReadLimits) -> str:
    stream = _open(raw, limits)
    head = stream.peek(PEEK_BYTES)[:PEEK_BYTES].removeprefix(UTF8_BOM).lstrip()
    if not head:
        raise ImportFormatError("the file is empty")
    if head[:1] == b"[":
        return "array"
    if head[:1] == b"{":
        return "lines"
    raise ImportFormatError(
        "the file is neither JSON lines (one object per line, starting with '{') nor a JSON array (starting with '[')"
    )


def _sample(reader: LineReader | JsonArrayReader) -> tuple[list[tuple[int, Any]], bool]:
    """The first SAMPLE_RECORDS numbered records, each decoded once (a JSON line under the readers' checks), and
    whether more follow."""
    sample: list[tuple[int, Any]] = []
    for number, value in reader:
        if len(sample) == SAMPLE_RECORDS:
            return sample, True
        sample.append((number, value if reader.decoded else json_object(value, number)))
        del value  # a long line's text goes before the next is read
    return sample, False


class _Sample:
    """Numbered records as parse_records reads them from a reader."""

    decoded = True

    def __init__(self, records: list[tuple[int, Any]], *, unit: str) -> None:
        self.records, self.unit = records, unit
        self.consumed = 0

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        for record in self.records:
            yield record
            self.consumed += 1


def _misfit(name: str, sample: list[tuple[int, Any]], *, unit: str, more: bool) -> ImportFormatError | None:
    """Why the sample is not in this format; None if it parses (a problem that only the rest of the file could
    settle, such as a HelpSteer2 row waiting for its pair, does not count)."""
    from . import parse_records

    source = _Sample(sample, unit=unit)
    try:
        for _ in parse_records(source, format=name):
            pass
    except ImportFormatError as error:
        if more and source.consumed == len(sample) and (error.line is None or error.line == sample[-1][0]):
            return None
        return error
    return None


def _no_format(layout: str, sample: list[tuple[int, Any]], reasons: dict[str, ImportFormatError]) -> ImportFormatError:
    likely = _likely(sample, list(reasons))
    guesses = " or ".join(FORMAT_NAMES[name] for name in likely)
    why = "; ".join(f"as {FORMAT_NAMES[name]}, {reasons[name]}" for name in likely)
    return ImportFormatError(f"no format fits; this looks like {LAYOUT_WORDS[layout]}: {guesses}? ({why})")


def _likely(sample: list[tuple[int, Any]], names: list[str]) -> list[str]:
    """The formats whose telling fields the first record shares most (all of the layout's when it shares none),
    most alike first."""
    first = sample[0][1] if sample else None
    fields = set(first) if isinstance(first, dict) else set()
    shared = {name: len(fields & TELLING_FIELDS[name]) for name in names}
    best = max(shared.values(), default=0)
    if best == 0:
        return names
    return sorted((name for name in names if shared[name] > 0), key=lambda name: -shared[name])[:2]
