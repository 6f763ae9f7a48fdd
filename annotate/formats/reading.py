"""Reading import files, plain or gzip: numbered JSON lines, or the numbered records of one JSON array. Pure Python:
no Django import.

A file comes from anyone who may import, so every limit is checked while the file streams in, before a record is
built, and every refusal is an ImportFormatError naming the line (or record) and, where there is one, the field:
- a gzip file may expand to ReadLimits.expanded_bytes, and to at most ReadLimits.gzip_ratio times the compressed
  bytes read so far once past GZIP_RATIO_GRACE_BYTES, so a small bomb stops within its first megabytes;
- a line holds at most MAX_LINE_BYTES, a record of an array at most MAX_RECORD_BYTES;
- a record nests at most MAX_NESTING_DEPTH levels and holds at most MAX_RECORD_VALUES values;
- an object holds each key once (json.loads and ijson would keep the last without a word), there is no NaN or
  Infinity (no database column holds them), and no number of more than MAX_NUMBER_DIGITS digits;
- text holds no U+0000 and no unpaired surrogate, which PostgreSQL cannot store.
Long runs of blank lines are skipped a buffer at a time: a file of nothing but newlines costs no Python per line.
"""

import gzip
import io
import json
import math
import re
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast

import ijson

from annotate.text import unstorable, unstorable_in

from .core import ImportFormatError, json_type

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MIB = 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
# A line longer than this is refused rather than read into memory.
MAX_LINE_BYTES = 64 * MIB
# A record of a JSON array as large as the largest line.
MAX_RECORD_BYTES = MAX_LINE_BYTES
# Records of real data are shallow (the record itself is level 1): PandaLM's are 1 level deep, Fine-Grained RLHF's 5,
# an OpenAssistant tree 2 more per message of its longest thread (13 for the sample of 100 trees). Without a limit,
# ijson.items' memory grew with the square of the depth (a 200 KB file of 100,000 '[' took 19.7 GB), and json.loads
# stops at Python's recursion limit with a RecursionError.
MAX_NESTING_DEPTH = 64
# Real records hold at most a few hundred values; a million small ones already take some 100 MB of Python objects.
MAX_RECORD_VALUES = 1_000_000
# Python's own limit on reading an integer (sys.get_int_max_str_digits()), checked here so the error names the field.
MAX_NUMBER_DIGITS = 4300
DEFAULT_MAX_EXPANDED_BYTES = 1024 * MIB
# JSON text compresses some 3 to 15 times; a file of blank lines, over 1000 times.
MAX_GZIP_RATIO = 100
# Small files may be as repetitive as they like: the ratio applies once this much has been decompressed.
GZIP_RATIO_GRACE_BYTES = 8 * MIB
READ_BUFFER_BYTES = MIB
# How much of a JSON array is handed to ijson at a time: a record that grows past its limit is refused within this.
ARRAY_CHUNK_BYTES = 64 * 1024
# A long run of blank lines is skipped a buffer at a time (peek copies the buffer, as long as 1000 blank lines take
# to read one by one); a short one, a line at a time.
BLANK_LINES_BEFORE_SKIPPING = 1000
# JSON's whitespace; a run of it up to its last newline is a run of blank lines.
_BLANK_RUN = re.compile(rb"[ \t\r\n]*\n")
_WHITESPACE = re.compile(r"[ \t\r\n]*")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# The JSON escapes of text no database column can hold: U+0000, and a surrogate (unpaired, once json.loads has
# joined the pairs).
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


@dataclass(frozen=True)
class ReadLimits:
    """How far a gzip file may expand: in all, and as a multiple of the compressed bytes read."""

    expanded_bytes: int = DEFAULT_MAX_EXPANDED_BYTES
    gzip_ratio: int = MAX_GZIP_RATIO


def _size(count: int) -> str:
    return f"{count / MIB:g} MiB" if count >= MIB else f"{count} bytes"


# Opening: gzip detected by content, decompressed under the limits.


class _TooLarge(Exception):
    """Decompressed data past a limit; the reader says at which line or record."""


class _BoundedGunzip(io.RawIOBase):
    """The decompressed bytes of a gzip file, refused as soon as they grow past the limits."""

    def __init__(self, raw: IO[bytes], limits: ReadLimits) -> None:
        self._raw = raw
        self._gzip = gzip.GzipFile(fileobj=raw, mode="rb")
        self._limits = limits
        self._expanded = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: "WriteableBuffer") -> int:
        # One chunk at a time (readinto would fill the whole buffer), so the limits are checked, and corrupt data
        # is found, close to where it starts.
        count = self._gzip.readinto1(buffer)
        self._expanded += count
        if self._expanded > self._limits.expanded_bytes:
            raise _TooLarge(
                f"the gzip data expands to more than {_size(self._limits.expanded_bytes)}, the limit for one file"
            )
        if self._expanded > GZIP_RATIO_GRACE_BYTES and self._expanded > self._limits.gzip_ratio * self._raw.tell():
            raise _TooLarge(
                f"the gzip data expands to more than {self._limits.gzip_ratio} times its compressed size, "
                "which real data does not (a compression bomb?)"
            )
        return count


def _open(raw: IO[bytes], limits: ReadLimits) -> io.BufferedReader:
    magic = raw.read(2)
    raw.seek(0)
    if magic == GZIP_MAGIC:
        return io.BufferedReader(_BoundedGunzip(raw, limits), buffer_size=READ_BUFFER_BYTES)
    if isinstance(raw, io.BufferedReader):
        return raw
    # Anything else (a BytesIO) gets a buffer too, for peek().
    return io.BufferedReader(cast(io.RawIOBase, raw), buffer_size=READ_BUFFER_BYTES)


def _read_failure(error: Exception, position: int, unit: str) -> ImportFormatError:
    """An error reading the file as an import error at this line or record."""
    if isinstance(error, _TooLarge):
        return ImportFormatError(str(error), line=position, unit=unit)
    return ImportFormatError(f"the gzip data is corrupt or truncated ({error})", line=position, unit=unit)


# gzip.BadGzipFile is an OSError.
_READ_ERRORS = (_TooLarge, OSError, EOFError, zlib.error)


# JSON lines.


class LineReader:
    """Numbered, non-blank text lines of a plain or gzip file, and how far into the file reading has got."""

    unit = "line"
    decoded = False

    def __init__(self, raw: IO[bytes], limits: ReadLimits | None = None) -> None:
        self._raw = raw
        self._stream = _open(raw, limits or ReadLimits())
        self._line = 0
        self.records = 0

    @property
    def bytes_read(self) -> int:
        """Bytes of the file as stored (compressed, for gzip) consumed so far."""
        return self._raw.tell()

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        try:
            yield from self._lines()
        except _READ_ERRORS as error:
            raise _read_failure(error, self._line, self.unit) from None

    def _lines(self) -> Iterator[tuple[int, str]]:
        blank = 0  # blank lines in a row
        while True:
            self._line += 1
            data = self._stream.readline(MAX_LINE_BYTES + 1)
            if not data:
                return
            if len(data) > MAX_LINE_BYTES:
                raise ImportFormatError(f"the line is longer than {_size(MAX_LINE_BYTES)}", line=self._line)
            if data.isspace():
                blank += 1
                if blank >= BLANK_LINES_BEFORE_SKIPPING:
                    self._skip_blank_lines()
                    blank = 0
                continue
            blank = 0
            text = _decode(data, self._line)
            if text.strip():
                self.records += 1
                yield self._line, text

    def _skip_blank_lines(self) -> None:
        """Consume the blank lines that come next, a buffer at a time, counting them."""
        while ahead := self._stream.peek(1):
            run = _BLANK_RUN.match(ahead)
            if run is None:
                return
            self._line += ahead.count(b"\n", 0, run.end())
            self._stream.read(run.end())
            if run.end() < len(ahead):  # a line with text starts in this buffer
                return


def _decode(data: bytes, line_no: int) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = data[error.start]
        raise ImportFormatError(
            f"the text is not valid UTF-8 (byte 0x{bad:02x} at column {error.start + 1})", line=line_no
        ) from None
    # Editors on Windows start UTF-8 files with a byte-order mark; it is not part of the JSON.
    return text.removeprefix("\ufeff") if line_no == 1 else text


class _Refused(ValueError):
    """A value json.loads would read but an import refuses: `problem` says what the field holds."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey(_first_repeated([key for key, _ in pairs]))
    return obj


def _first_repeated(keys: list[str]) -> str:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            return key
        seen.add(key)
    return ""


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name}, which JSON does not allow")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused(f"the number {text[:40]}, too large to store")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _Refused(f"a number of more than {MAX_NUMBER_DIGITS} digits")
    return int(text)


# json.loads with hooks that refuse what an import cannot take. The object hook runs once per object (a dict of its
# pairs and a length check: lost in the noise of the import benchmark), the number hooks once per number; without
# it, json.loads (and orjson) keep a repeated key's last value without a word.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_float=_finite_float, parse_int=_bounded_int
)


def json_object(text: str, line_no: int) -> dict[str, Any]:
    _refuse_too_many_values(text, line_no)
    try:
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as error:
        raise ImportFormatError(f"invalid JSON: {error.msg} (column {error.colno})", line=line_no) from None
    except (ValueError, RecursionError) as error:
        raise ImportFormatError(_refusal(error, _field_at_fault(text)), line=line_no) from None
    if not isinstance(obj, dict):
        raise ImportFormatError(f"expected a JSON object, got {json_type(obj)}", line=line_no)
    # More brackets than levels allowed: only then can it nest too deep (json.loads stops near 1000 levels).
    if text.count("[") + text.count("{") > MAX_NESTING_DEPTH:
        _refuse_deep_fields(obj, line_no)
    if "\\u" in text and _UNSTORABLE_ESCAPE.search(text):
        storable(obj)
    return obj


def _refusal(error: BaseException, field: str | None) -> str:
    """What is wrong with a line json.loads (or one of its hooks) refused, and in which field."""
    if isinstance(error, _DuplicateKey) and field is None:  # the object with the key twice is the line's own
        return f"field '{error.key}' appears twice"
    where = f"field '{field}'" if field is not None else "the line"
    if isinstance(error, RecursionError):
        return f"{where} is nested more than {MAX_NESTING_DEPTH} levels deep"
    if isinstance(error, _DuplicateKey):
        return f"{where} holds an object with the key '{error.key}' twice"
    problem = error.problem if isinstance(error, _Refused) else "a value that cannot be read"
    return f"{where} holds {problem}"


def _field_at_fault(text: str) -> str | None:
    """The top-level field whose value the decoder refuses, read member by member once the whole line has failed;
    None if no one member fails (a key twice in the line's own object)."""
    try:
        position = _skip_space(text, 0)
        if text[position] != "{":
            return None
        position = _skip_space(text, position + 1)
        while text[position] == '"':
            key, position = _DECODER.raw_decode(text, position)
            position = _skip_space(text, position)
            if text[position] != ":":
                return None
            try:
                _, position = _DECODER.raw_decode(text, _skip_space(text, position + 1))
            except (ValueError, RecursionError):
                return str(key)
            position = _skip_space(text, position)
            if text[position] != ",":
                return None
            position = _skip_space(text, position + 1)
    except (IndexError, ValueError, RecursionError):
        return None
    return None


def _skip_space(text: str, position: int) -> int:
    match = _WHITESPACE.match(text, position)
    return match.end() if match else position


def _refuse_too_many_values(text: str, line_no: int) -> None:
    """Count a long line's values before json.loads builds them: a value takes two characters at least (a digit and
    a comma, or "[]"), so only a line this long can hold too many."""
    if len(text) <= 2 * MAX_RECORD_VALUES:
        return
    # Every value but the first follows a comma or opens its container: an upper bound, at C speed.
    if _value_bound(text) <= MAX_RECORD_VALUES:
        return
    # Commas and brackets inside strings were counted too: count again without the strings.
    if _value_bound(_JSON_STRING.sub('""', text)) > MAX_RECORD_VALUES:
        raise ImportFormatError(f"the record holds more than {MAX_RECORD_VALUES:,} values", line=line_no)


def _value_bound(text: str) -> int:
    return 1 + text.count(",") + text.count("[") + text.count("{")


def _refuse_deep_fields(obj: dict[str, Any], line_no: int) -> None:
    for name, value in obj.items():
        if _deeper_than(value, MAX_NESTING_DEPTH - 1):
            raise ImportFormatError(f"field '{name}' is nested more than {MAX_NESTING_DEPTH} levels deep", line=line_no)


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether containers nest in `value` more than `levels` deep (a scalar is 0 deep, [] is 1)."""
    pending = [(value, 1)]
    while pending:
        current, depth = pending.pop()
        children = current.values() if isinstance(current, dict) else current if isinstance(current, list) else None
        if children is None:
            continue
        if depth > levels:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


# A JSON array.


class JsonArrayReader:
    """The records of a file that is one JSON array (plain or gzip), parsed one at a time from ijson's events (which
    hold no path, unlike ijson.items, whose prefixes grow with the depth), so memory stays bounded by the largest
    record allowed rather than the file."""

    unit = "record"
    decoded = True

    def __init__(self, raw: IO[bytes], limits: ReadLimits | None = None) -> None:
        self._raw = raw
        self._stream = _open(raw, limits or ReadLimits())
        self.records = 0

    @property
    def bytes_read(self) -> int:
        return self._raw.tell()

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        builder = _RecordBuilder()
        try:
            for record in builder.records(self._events()):
                self.records += 1
                yield self.records, record
        except ijson.JSONError as error:
            if builder.ended:
                reason = (
                    f"the array of records ends after this record, then more data follows ({_ijson_message(error)})"
                )
                raise ImportFormatError(reason, line=self.records, unit=self.unit) from None
            where = f" in field '{builder.field}'" if builder.field is not None else ""
            reason = f"invalid JSON{where}: {_ijson_message(error)}"
            raise ImportFormatError(reason, line=self.records + 1, unit=self.unit) from None
        except _READ_ERRORS as error:
            raise _read_failure(error, self.records + 1, self.unit) from None

    def _events(self) -> Iterator[tuple[str, Any]]:
        """ijson's events, and after each chunk of the file ("read", bytes read so far)."""
        events = ijson.sendable_list()
        parser = ijson.basic_parse_coro(events, use_float=True)
        if self._stream.peek(len(UTF8_BOM)).startswith(UTF8_BOM):  # editors on Windows start UTF-8 files with one
            self._stream.read(len(UTF8_BOM))
        fed, seen = 0, False
        while chunk := self._stream.read(ARRAY_CHUNK_BYTES):
            fed += len(chunk)
            failure = _send(parser, chunk)
            # The events before a syntax error still count: they place it (the record, the field).
            seen = seen or bool(events)
            yield from events
            del events[:]
            if failure is not None:
                raise failure
            yield "read", fed
        failure = _send(parser, None)
        if failure is not None and not (seen or events):
            raise ImportFormatError("expected a JSON array of records, got nothing")
        yield from events
        if failure is not None:
            raise failure


def _send(parser: Any, chunk: bytes | None) -> ijson.JSONError | None:
    """Feed ijson a chunk (None: the end of the file); the syntax error it found, if any."""
    try:
        if chunk is None:
            parser.close()
        else:
            parser.send(chunk)
    except ijson.JSONError as error:
        return error
    return None


class _RecordBuilder:
    """Builds the records of a JSON array from ijson's events, and refuses one, before it is built, once it nests
    more than MAX_NESTING_DEPTH levels, holds more than MAX_RECORD_VALUES values or MAX_RECORD_BYTES of the file,
    or has a key twice in an object."""

    def __init__(self) -> None:
        self._containers: list[dict[str, Any] | list[Any]] = []  # open, outermost first
        self._keys: list[str | None] = []  # the key of each open object's next value
        self._values = 0
        self._number = 1  # of the record being built
        self._fed = 0  # bytes of the file read
        self._record_from = 0  # bytes read when the last record ended
        self.field: str | None = None  # the record's top-level field being built, for error messages
        self.ended = False  # the array of records has closed

    def records(self, events: Iterator[tuple[str, Any]]) -> Iterator[Any]:
        started = False
        for event, value in events:
            if event == "read":
                self._check_size(value)
            elif not started:
                if event != "start_array":
                    raise ImportFormatError(f"expected a JSON array of records, got {_kind(event)}")
                started = True
            elif self.ended:
                raise ImportFormatError(f"the array of records ends after this record, then {_kind(event)} follows")
            elif event == "end_array" and not self._containers:
                # Read on to the end, so that nothing after the array (a second array, stray text) goes unsaid.
                self.ended = True
            elif (record := self._add(event, value)) is not _OPEN:
                yield record
                self._values, self._number, self.field, self._record_from = 0, self._number + 1, None, self._fed

    def _refuse(self, reason: str) -> ImportFormatError:
        return ImportFormatError(reason, line=self._number, unit="record")

    def _check_size(self, fed: int) -> None:
        self._fed = fed
        if fed - self._record_from > MAX_RECORD_BYTES:
            raise self._refuse(f"the record is larger than {_size(MAX_RECORD_BYTES)}")

    def _add(self, event: str, value: Any) -> Any:
        """Add an event to the record being built; the record once it is whole, else _OPEN."""
        if event == "map_key":
            self._key(value)
            return _OPEN
        if event in ("end_map", "end_array"):
            done = self._containers.pop()
            self._keys.pop()
            return done if not self._containers else _OPEN
        self._values += 1
        if self._values > MAX_RECORD_VALUES:
            raise self._refuse(f"the record holds more than {MAX_RECORD_VALUES:,} values")
        if event not in ("start_map", "start_array"):
            if not self._containers:
                return value  # a record that is not an object, which parse_records refuses
            self._place(value)
            return _OPEN
        if len(self._containers) >= MAX_NESTING_DEPTH:
            where = f"field '{self.field}'" if self.field is not None else "the record"
            raise self._refuse(f"{where} is nested more than {MAX_NESTING_DEPTH} levels deep")
        container: dict[str, Any] | list[Any] = {} if event == "start_map" else []
        if self._containers:
            self._place(container)
        self._containers.append(container)
        self._keys.append(None)
        return _OPEN

    def _key(self, key: str) -> None:
        if len(self._containers) == 1:
            self.field = key
        if key in self._containers[-1]:
            if len(self._containers) == 1:
                raise self._refuse(f"field '{key}' appears twice")
            raise self._refuse(f"field '{self.field}' holds an object with the key '{key}' twice")
        self._keys[-1] = key

    def _place(self, value: Any) -> None:
        parent = self._containers[-1]
        if isinstance(parent, list):
            parent.append(value)
        else:
            parent[cast(str, self._keys[-1])] = value


_OPEN = object()  # a record still being built


def _kind(event: str) -> str:
    return {"start_map": "an object", "start_array": "another array"}.get(event, "a single value")


def _ijson_message(error: Exception) -> str:
    # yajl's messages run over several lines, with the text around the error and an arrow; the first line says it.
    message = str(error).removeprefix("b'").removeprefix('b"')
    return message.replace("\\n", "\n").split("\n", 1)[0].strip()


# Text a database can store.


def storable(obj: Mapping[str, Any]) -> None:
    """Refuse, naming the field, text PostgreSQL cannot store (annotate.text): JSON can write it as escapes."""
    for name, value in obj.items():
        if problem := unstorable(name):
            raise ImportFormatError(f"a field's name holds {problem}, which cannot be stored")
        if found := unstorable_in(value):
            raise ImportFormatError(f"field '{name}' holds {found.problem}, which cannot be stored")
