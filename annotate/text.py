"""Text a PostgreSQL column cannot hold: the character U+0000 (text and jsonb both refuse it) and unpaired surrogates
(which have no UTF-8 encoding). JSON can write both as escapes ("\\u0000", "\\ud800"), so any JSON a user sends may
hold them: they are refused where they come in, saying where they are, rather than failing the write. Pure Python,
no imports at all: the import formats use it too."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Unstorable:
    """Where in a JSON value (a path like "attributes[0].description"; "" for the value itself) and what."""

    path: str
    problem: str


def unstorable(text: str) -> str | None:
    """What in `text` no database column can store, said for a person; None when all of it can be stored."""
    if "\x00" in text:
        return "the character U+0000"
    try:
        text.encode()
    except UnicodeEncodeError as error:
        return f"an unpaired surrogate (U+{ord(text[error.start]):04X})"
    return None


def unstorable_in(value: Any, path: str = "") -> Unstorable | None:
    """Text in a JSON value that cannot be stored, the first in document order (an object's keys before its values);
    None when all of it can be stored."""
    pending: list[tuple[str, Any]] = [(path, value)]
    while pending:  # iteratively: the value may nest as deep as the JSON parser allowed
        where, current = pending.pop()
        if isinstance(current, str):
            if (problem := unstorable(current)) is not None:
                return Unstorable(where, problem)
        elif isinstance(current, dict):
            for key in current:
                if (problem := unstorable(key)) is not None:
                    return Unstorable(where, f"a key with {problem}")
            pending.extend(reversed([(_member(where, key), item) for key, item in current.items()]))
        elif isinstance(current, list):
            pending.extend(reversed([(f"{where}[{index}]", item) for index, item in enumerate(current)]))
    return None


def _member(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
