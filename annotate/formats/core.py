"""What every import format shares: errors, records, fields, identities. Pure Python: no Django import. Reading
files (lines, arrays, gzip, and the limits on all of them) is annotate.formats.reading."""

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

Turn = dict[str, str]

ROLES = ("user", "assistant", "system")
EXTERNAL_ID_MAX_CHARS = 200
SOURCE_MAX_CHARS = 200
# A group's responses: real groups hold 2 to 10 or so. Its pairs grow with the square of their number ("all" pair
# mode), and an item keeps a response's index in a small integer.
MAX_GROUP_RESPONSES = 100
# Project.PairMode values; formats name them without importing the model.
PAIR_MODES = ("all", "adjacent", "first")


class ImportFormatError(ValueError):
    """A file that cannot be imported. `line` numbers the line (JSON lines) or the record (a JSON array) at
    fault, as `unit` says; it is None for problems with the file as a whole."""

    def __init__(self, reason: str, *, line: int | None = None, unit: str = "line") -> None:
        self.reason = reason
        self.line = line
        self.unit = unit
        super().__init__(f"{unit} {line}: {reason}" if line is not None else reason)

    def for_file(self, name: str) -> str:
        """The message for a person: "data.jsonl line 7: ..." or "data.jsonl: ..."."""
        return f"{name} {self}" if self.line is not None else f"{name}: {self}"


# Records: what a format makes of the file, before the importer turns them into rows.


@dataclass(frozen=True)
class PriorAnnotation:
    """Labels that came with the data: one source annotator's judgement of one pair, sides as in that pair.

    `annotator` names the source annotator ("pandalm-annotator1"); the importer makes an inactive user for it.
    `scale` is the scale `strength` is on ("binary": -1/0/+1, "seven": -3..+3), kept with the item so that
    exports can compare strengths across scales. `raw` is the source's own label, kept with the item too.
    """

    annotator: str
    strength: int | None = None
    scale: str | None = None
    justification: str = ""
    ratings: dict[str, dict[str, int]] = field(default_factory=dict)
    spans: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    corrections: dict[str, str] = field(default_factory=dict)
    raw: Any = None

    def swapped(self) -> "PriorAnnotation":
        """The same judgement with responses A and B trading places."""
        other = {"a": "b", "b": "a"}
        return replace(
            self,
            strength=-self.strength if self.strength else self.strength,
            ratings={other[side]: values for side, values in self.ratings.items()},
            spans=[{**span, "response": other[span["response"]]} for span in self.spans],
            missing=[{**entry, "response": other[entry["response"]]} for entry in self.missing],
            corrections={other[side]: text for side, text in self.corrections.items()},
        )


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
    """Two responses in a fixed order, with the source's preference if it has one (-1 A, 0 tie, +1 B).

    `identity` goes into the item's content hash: set it when the source holds the same texts more than once
    as different comparisons (PandaLM compares identical outputs of different models), so they stay apart.
    """

    line: int
    prompt: list[Turn]
    response_a: str
    response_b: str
    label: int | None = None
    external_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    context: str = ""
    annotations: tuple[PriorAnnotation, ...] = ()
    identity: str = ""


@dataclass(frozen=True)
class Response:
    """One of a group's responses: a key the source knows it by (a message id, "prediction 2"), its text."""

    key: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ranking:
    """A source annotator's ranking of a group's responses (0 best); every pair gets a binary preference."""

    annotator: str
    ranks: tuple[int, ...]

    def annotation(self, i: int, j: int) -> PriorAnnotation:
        a, b = self.ranks[i], self.ranks[j]
        # The better-ranked (lower) response wins: -1 when it is A.
        strength = (a > b) - (a < b)
        return PriorAnnotation(self.annotator, strength=strength, scale="binary", raw={"rank_a": a, "rank_b": b})


@dataclass(frozen=True)
class GroupRecord:
    """A prompt with K >= 2 responses. The importer makes one item per compared pair (i, j), i < j, with
    response i as A: the pairs the format names, or else those of the project's pair mode."""

    line: int
    prompt: list[Turn]
    responses: tuple[Response, ...]
    context: str = ""
    pairs: tuple[tuple[int, int], ...] | None = None
    pair_annotations: Mapping[tuple[int, int], tuple[PriorAnnotation, ...]] = field(default_factory=dict)
    ranking: Ranking | None = None
    # Whose preference is the source's own label of a pair (Item.source_label), if anyone's.
    label_annotator: str = ""
    external_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    identity: str = ""

    def pairs_for(self, mode: str) -> tuple[tuple[int, int], ...]:
        return self.pairs if self.pairs is not None else tuple(group_pairs(len(self.responses), mode))

    def annotations_for(self, i: int, j: int) -> list[PriorAnnotation]:
        found = list(self.pair_annotations.get((i, j), ()))
        if self.ranking is not None:
            found.append(self.ranking.annotation(i, j))
        return found

    def label_for(self, i: int, j: int) -> int | None:
        for annotation in self.annotations_for(i, j):
            if annotation.annotator == self.label_annotator and annotation.strength is not None:
                return (annotation.strength > 0) - (annotation.strength < 0)
        return None


Record = PreferenceRecord | PairRecord | GroupRecord


def group_pairs(count: int, mode: str) -> list[tuple[int, int]]:
    """Which of a group's `count` responses are compared, as index pairs (i, j) with i < j.

    "all": every pair; "adjacent": neighbours in the given order (for ranked data, best first: 1v2, 2v3, ...);
    "first": the first response against each other one.
    """
    if mode == "all":
        return list(itertools.combinations(range(count), 2))
    if mode == "adjacent":
        return [(i, i + 1) for i in range(count - 1)]
    if mode == "first":
        return [(0, j) for j in range(1, count)]
    raise ValueError(f"unknown pair mode {mode!r}; expected one of {', '.join(PAIR_MODES)}")


# Identities: an item's content hash is unique within its project, so importing a file twice adds nothing.


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()


def canonical_prompt(prompt: list[Turn]) -> str:
    """The prompt as _digest writes it (sorted keys, no spaces, non-ASCII kept): valid JSON, which the importer
    stores as it is, and the prompt in content_digest's input."""
    if all(
        type(turn) is dict and len(turn) == 2 and type(turn.get("role")) is str and type(turn.get("content")) is str
        for turn in prompt
    ):
        # orjson writes strings exactly as json.dumps(ensure_ascii=False) does (tests check every character),
        # several times faster; hashing was most of an import's time.
        return orjson.dumps(prompt, option=orjson.OPT_SORT_KEYS).decode()
    return _canonical(prompt)


def content_hash(prompt: list[Turn], response_a: str, response_b: str, *, context: str = "", identity: str = "") -> str:
    """Identity of an item: the prompt and the two responses as an unordered pair, so A/B swapped is the same."""
    return content_digest(canonical_prompt(prompt), response_a, response_b, context=context, identity=identity)


def content_digest(prompt: str, response_a: str, response_b: str, *, context: str = "", identity: str = "") -> str:
    """content_hash of a prompt written by canonical_prompt: the digest of the value's canonical JSON."""
    value: dict[str, Any] = {"prompt": orjson.Fragment(prompt), "responses": sorted([response_a, response_b])}
    # Only when present, so that items imported before contexts and identities existed keep their hashes.
    if context:
        value["context"] = context
    if identity:
        value["identity"] = identity
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def group_hash(record: GroupRecord) -> str:
    """Identity of a group: its prompt, context and responses in order (and the source's id, if it has one)."""
    return _digest(
        {
            "prompt": record.prompt,
            "context": record.context,
            "responses": [response.text for response in record.responses],
            "identity": record.identity,
        }
    )


def pair_hash(group_key: str, i: int, j: int) -> str:
    """Identity of a group's pair item: pairs of different groups never clash, even with the same texts."""
    return hashlib.sha256(f"group:{group_key}:{i}:{j}".encode()).hexdigest()


def json_type(value: Any) -> str:
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


def require(obj: Mapping[str, Any], name: str) -> Any:
    if name not in obj or obj[name] is None:
        raise ImportFormatError(f"field '{name}' is missing")
    return obj[name]


def text(obj: Mapping[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = require(obj, name)
    if not isinstance(value, str):
        raise ImportFormatError(f"field '{name}' must be a string, got {json_type(value)}")
    if not allow_empty and not value.strip():
        raise ImportFormatError(f"field '{name}' is empty")
    return value


def optional_text(obj: Mapping[str, Any], name: str) -> str:
    if obj.get(name) is None:
        return ""
    return text(obj, name, allow_empty=True)


def integer(obj: Mapping[str, Any], name: str, allowed: range | tuple[int, ...]) -> int:
    value = require(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        if isinstance(allowed, range):
            expected = f"an integer from {allowed.start} to {allowed.stop - 1}"
        else:
            expected = f"one of {', '.join(str(v) for v in allowed)}"
        raise ImportFormatError(f"field '{name}' must be {expected}, got {shown(value)}")
    return value


def shown(value: Any) -> str:
    """A short rendering of a bad value for an error message."""
    if isinstance(value, dict | list):
        return json_type(value)
    return json.dumps(value, ensure_ascii=False)[:40]


def messages(value: Any, name: str) -> list[Turn]:
    """A non-empty list of {role, content} messages, reduced to exactly those two keys."""
    if not isinstance(value, list):
        raise ImportFormatError(
            f"field '{name}' must be a string or a list of {{role, content}} messages, got {json_type(value)}"
        )
    if not value:
        raise ImportFormatError(f"field '{name}' is empty")
    return [_message(message, name, n) for n, message in enumerate(value, start=1)]


def _message(message: Any, name: str, n: int) -> Turn:
    if not isinstance(message, dict) or "role" not in message or "content" not in message:
        raise ImportFormatError(
            f"field '{name}' message {n} must be an object with 'role' and 'content', got {json_type(message)}"
        )
    role, content = message["role"], message["content"]
    if role not in ROLES:
        raise ImportFormatError(f"field '{name}' message {n} has role {role!r}; expected user, assistant or system")
    if not isinstance(content, str):
        raise ImportFormatError(f"field '{name}' message {n}: 'content' must be a string, got {json_type(content)}")
    return {"role": role, "content": content}


def prompt_field(obj: Mapping[str, Any]) -> list[Turn]:
    value = require(obj, "prompt")
    if isinstance(value, str):
        return [{"role": "user", "content": text(obj, "prompt")}]
    return messages(value, "prompt")


def optional_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """external_id, metadata and source, which every format may carry."""
    return {"external_id": external_id(obj), "metadata": _metadata(obj), "source": _source(obj)}


def external_id(obj: Mapping[str, Any], *names: str) -> str:
    """The first of `names` (default: external_id, then id) that is present, as text."""
    name = next((n for n in names or ("external_id", "id") if obj.get(n) is not None), None)
    if name is None:
        return ""
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ImportFormatError(f"field '{name}' must be a string or a number, got {json_type(value)}")
    if len(str(value)) > EXTERNAL_ID_MAX_CHARS:
        raise ImportFormatError(f"field '{name}' is longer than {EXTERNAL_ID_MAX_CHARS} characters")
    return str(value)


def _metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    value = obj.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImportFormatError(f"field 'metadata' must be an object, got {json_type(value)}")
    return value


def _source(obj: Mapping[str, Any]) -> str:
    if obj.get("source") is None:
        return ""
    value = text(obj, "source")
    if len(value) > SOURCE_MAX_CHARS:
        raise ImportFormatError(f"field 'source' is longer than {SOURCE_MAX_CHARS} characters")
    return value


def span_check(where: str, start: Any, end: Any, response: str, length: int) -> tuple[int, int]:
    """Character offsets [start, end) of a non-empty span inside a response of `length` characters."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
        raise ImportFormatError(f"{where}: start and end must be integers, got {json_type(start)} and {json_type(end)}")
    if not 0 <= start < end <= length:
        raise ImportFormatError(f"{where}: {start}-{end} is not a span inside '{response}' (0-{length} characters)")
    return start, end
