"""Import file formats: pure parsing, no database, one line in memory at a time.

- "trl": TRL preference rows, {"prompt", "chosen", "rejected"}, each a string or a list of {role, content}
  messages; or TRL's implicit-prompt form, where "prompt" is left out and chosen/rejected are whole
  conversations that share all but their final assistant message.
- "hh-rlhf": Anthropic HH-RLHF rows, {"chosen", "rejected"}, each a "\\n\\nHuman: ...\\n\\nAssistant: ..." transcript.
- "pairs": our own rows, {"prompt", "response_a", "response_b"} with optional "label", "id", "metadata", "source".

Files may be gzip-compressed (detected by content, not by name). Every problem raises ImportFormatError with
the 1-based line number and the field at fault.
"""

import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

Turn = dict[str, str]

FORMATS: dict[str, str] = {
    "trl": "TRL preference (prompt / chosen / rejected)",
    "hh-rlhf": "Anthropic HH-RLHF transcripts (chosen / rejected)",
    "pairs": "Pairs (prompt / response_a / response_b / label)",
}
ROLES = ("user", "assistant", "system")
GZIP_MAGIC = b"\x1f\x8b"
# A line longer than this is refused rather than read into memory.
MAX_LINE_BYTES = 64 * 1024 * 1024
EXTERNAL_ID_MAX_CHARS = 200
SOURCE_MAX_CHARS = 200
LABELS: dict[str, int] = {"a": -1, "tie": 0, "b": 1}


class ImportFormatError(ValueError):
    """A file that cannot be imported; `line` is None for problems with the file as a whole."""

    def __init__(self, reason: str, *, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)

    def for_file(self, name: str) -> str:
        """The message for a person: "data.jsonl line 7: ..." or "data.jsonl: ..."."""
        return f"{name} {self}" if self.line is not None else f"{name}: {self}"


@dataclass(frozen=True)
class PreferenceRecord:
    """A chosen and a rejected response; the importer decides which one is shown as A."""

    line: int
    prompt: list[Turn]
    chosen: str
    rejected: str
    external_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class PairRecord:
    """Two responses in a fixed order, with the source's preference if it has one (-1 A, 0 tie, +1 B)."""

    line: int
    prompt: list[Turn]
    response_a: str
    response_b: str
    label: int | None = None
    external_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""


Record = PreferenceRecord | PairRecord


def content_hash(prompt: list[Turn], response_a: str, response_b: str) -> str:
    """Identity of an item: the prompt and the two responses as an unordered pair, so A/B swapped is the same."""
    canonical = json.dumps(
        {"prompt": prompt, "responses": sorted([response_a, response_b])},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class LineReader:
    """Numbered, non-blank text lines of a plain or gzip file, and how far into the file reading has got."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        magic = raw.read(2)
        raw.seek(0)
        self._stream: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=raw, mode="rb") if magic == GZIP_MAGIC else raw

    @property
    def bytes_read(self) -> int:
        """Bytes of the file as stored (compressed, for gzip) consumed so far."""
        return self._raw.tell()

    def __iter__(self) -> Iterator[tuple[int, str]]:
        line_no = 0
        while True:
            line_no += 1
            data = self._read_line(line_no)
            if not data:
                return
            text = _decode(data, line_no)
            if text.strip():
                yield line_no, text

    def _read_line(self, line_no: int) -> bytes:
        try:
            data = self._stream.readline(MAX_LINE_BYTES + 1)
        except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
            raise ImportFormatError(f"the gzip data is corrupt or truncated ({error})", line=line_no) from None
        if len(data) > MAX_LINE_BYTES:
            raise ImportFormatError(f"the line is longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB", line=line_no)
        return data


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


def parse_records(lines: Iterable[tuple[int, str]], *, format: str) -> Iterator[Record]:
    """Records of the given format from numbered lines; raises ImportFormatError at the first bad line."""
    if format not in _PARSERS:
        raise ImportFormatError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    parse = _PARSERS[format]
    count = 0
    for line_no, text in lines:
        obj = _json_object(text, line_no)
        try:
            record = parse(obj, line_no)
        except ImportFormatError as error:
            raise ImportFormatError(error.reason, line=line_no) from None
        count += 1
        yield record
    if count == 0:
        raise ImportFormatError("the file has no records")


def _json_object(text: str, line_no: int) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as error:
        raise ImportFormatError(f"invalid JSON: {error.msg} (column {error.colno})", line=line_no) from None
    if not isinstance(obj, dict):
        raise ImportFormatError(f"expected a JSON object, got {_json_type(obj)}", line=line_no)
    return obj


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


# Fields. These raise ImportFormatError without a line; parse_records adds it.


def _require(obj: dict[str, Any], name: str) -> Any:
    if name not in obj or obj[name] is None:
        raise ImportFormatError(f"field '{name}' is missing")
    return obj[name]


def _text(obj: dict[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = _require(obj, name)
    if not isinstance(value, str):
        raise ImportFormatError(f"field '{name}' must be a string, got {_json_type(value)}")
    if not allow_empty and not value.strip():
        raise ImportFormatError(f"field '{name}' is empty")
    return value


def _messages(value: Any, name: str) -> list[Turn]:
    """A non-empty list of {role, content} messages, reduced to exactly those two keys."""
    if not isinstance(value, list):
        raise ImportFormatError(
            f"field '{name}' must be a string or a list of {{role, content}} messages, got {_json_type(value)}"
        )
    if not value:
        raise ImportFormatError(f"field '{name}' is empty")
    return [_message(message, name, n) for n, message in enumerate(value, start=1)]


def _message(message: Any, name: str, n: int) -> Turn:
    if not isinstance(message, dict) or "role" not in message or "content" not in message:
        raise ImportFormatError(
            f"field '{name}' message {n} must be an object with 'role' and 'content', got {_json_type(message)}"
        )
    role, content = message["role"], message["content"]
    if role not in ROLES:
        raise ImportFormatError(f"field '{name}' message {n} has role {role!r}; expected user, assistant or system")
    if not isinstance(content, str):
        raise ImportFormatError(f"field '{name}' message {n}: 'content' must be a string, got {_json_type(content)}")
    return {"role": role, "content": content}


def _prompt(obj: dict[str, Any]) -> list[Turn]:
    value = _require(obj, "prompt")
    if isinstance(value, str):
        return [{"role": "user", "content": _text(obj, "prompt")}]
    return _messages(value, "prompt")


def _shared_prompt(chosen: list[Turn], rejected: list[Turn], *, unit: str) -> list[Turn]:
    """The turns both conversations share before their final assistant turn, which is all they may differ in."""
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns[-1]["role"] != "assistant":
            raise ImportFormatError(f"field '{name}' must end with an assistant {unit}")
        if len(turns) < 2:
            raise ImportFormatError(f"field '{name}' has no {unit}s before its final assistant {unit}")
    if chosen[:-1] != rejected[:-1]:
        shorter = min(len(chosen), len(rejected)) - 1
        at = next(
            (n for n, (c, r) in enumerate(zip(chosen[:-1], rejected[:-1], strict=False), 1) if c != r), shorter + 1
        )
        raise ImportFormatError(
            f"fields 'chosen' and 'rejected' must share all {unit}s but the final assistant {unit} "
            f"(they differ at {unit} {at})"
        )
    return chosen[:-1]


def _optional_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """external_id, metadata and source, which every format may carry."""
    return {"external_id": _external_id(obj), "metadata": _metadata(obj), "source": _source(obj)}


def _external_id(obj: dict[str, Any]) -> str:
    name = "external_id" if obj.get("external_id") is not None else "id"
    value = obj.get(name)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ImportFormatError(f"field '{name}' must be a string or a number, got {_json_type(value)}")
    if len(str(value)) > EXTERNAL_ID_MAX_CHARS:
        raise ImportFormatError(f"field '{name}' is longer than {EXTERNAL_ID_MAX_CHARS} characters")
    return str(value)


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImportFormatError(f"field 'metadata' must be an object, got {_json_type(value)}")
    return value


def _source(obj: dict[str, Any]) -> str:
    if obj.get("source") is None:
        return ""
    value = _text(obj, "source")
    if len(value) > SOURCE_MAX_CHARS:
        raise ImportFormatError(f"field 'source' is longer than {SOURCE_MAX_CHARS} characters")
    return value


# Formats.


def _parse_trl(obj: dict[str, Any], line: int) -> PreferenceRecord:
    if "prompt" in obj:
        prompt = _prompt(obj)
        chosen, rejected = _completion(obj, "chosen"), _completion(obj, "rejected")
    else:
        prompt, chosen, rejected = _implicit_prompt(obj)
    return PreferenceRecord(line=line, prompt=prompt, chosen=chosen, rejected=rejected, **_optional_fields(obj))


def _completion(obj: dict[str, Any], name: str) -> str:
    # An empty reply is allowed: in real data (HH-RLHF and TRL's conversions of it) saying nothing is
    # sometimes the preferred response.
    value = _require(obj, name)
    if isinstance(value, str):
        return value
    messages = _messages(value, name)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise ImportFormatError(f"field '{name}' must be a string or a list with one assistant message")
    return messages[0]["content"]


def _implicit_prompt(obj: dict[str, Any]) -> tuple[list[Turn], str, str]:
    chosen, rejected = _require(obj, "chosen"), _require(obj, "rejected")
    if isinstance(chosen, str) or isinstance(rejected, str):
        raise ImportFormatError(
            "field 'prompt' is missing (it may only be left out when 'chosen' and 'rejected' are conversations)"
        )
    chosen_turns, rejected_turns = _messages(chosen, "chosen"), _messages(rejected, "rejected")
    prompt = _shared_prompt(chosen_turns, rejected_turns, unit="message")
    return prompt, chosen_turns[-1]["content"], rejected_turns[-1]["content"]


_HH_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _hh_turns(obj: dict[str, Any], name: str) -> list[Turn]:
    """Split a transcript into turns.

    Two quirks of the real data (harmless-base test: 2312 rows) are smoothed over, both harmless:
    - some replies contain "\\n\\nAssistant:" again (the model went on talking), which would look like two
      assistant turns in a row; a repeated marker is kept as text of the turn it is in, so the reply is whole;
    - turns carry stray spaces ("Assistant:  Hi"), so each turn is stripped before transcripts are compared.
    An empty final reply is kept: 4 rows prefer saying nothing to a harmful answer.
    """
    text = _text(obj, name)
    markers = list(_HH_MARKER.finditer(text))
    if not markers:
        raise ImportFormatError(f"field '{name}' has no '\\n\\nHuman:' or '\\n\\nAssistant:' turns")
    if text[: markers[0].start()].strip():
        raise ImportFormatError(f"field '{name}' has text before its first 'Human:' turn")
    starts = [m for i, m in enumerate(markers) if i == 0 or m.group(1) != markers[i - 1].group(1)]
    ends = [m.start() for m in starts[1:]] + [len(text)]
    return [
        {"role": _HH_ROLES[m.group(1)], "content": text[m.end() : end].strip()}
        for m, end in zip(starts, ends, strict=True)
    ]


def _parse_hh(obj: dict[str, Any], line: int) -> PreferenceRecord:
    chosen, rejected = _hh_turns(obj, "chosen"), _hh_turns(obj, "rejected")
    prompt = _shared_prompt(chosen, rejected, unit="turn")
    optional = _optional_fields(obj)
    optional["source"] = optional["source"] or "hh-rlhf"
    return PreferenceRecord(
        line=line, prompt=prompt, chosen=chosen[-1]["content"], rejected=rejected[-1]["content"], **optional
    )


def _parse_pairs(obj: dict[str, Any], line: int) -> PairRecord:
    return PairRecord(
        line=line,
        prompt=_prompt(obj),
        response_a=_text(obj, "response_a"),
        response_b=_text(obj, "response_b"),
        label=_label(obj),
        **_optional_fields(obj),
    )


def _label(obj: dict[str, Any]) -> int | None:
    value = obj.get("label")
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in LABELS:
        return LABELS[value.strip().lower()]
    if isinstance(value, int) and not isinstance(value, bool) and value in (-1, 0, 1):
        return value
    shown = json.dumps(value, ensure_ascii=False)[:40]
    raise ImportFormatError(f'field \'label\' must be one of "a", "b", "tie", -1, 0 or 1, got {shown}')


_PARSERS: dict[str, Callable[[dict[str, Any], int], Record]] = {
    "trl": _parse_trl,
    "hh-rlhf": _parse_hh,
    "pairs": _parse_pairs,
}
