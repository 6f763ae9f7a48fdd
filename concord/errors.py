"""Errors as data: a service that refuses a request raises ServiceError holding (path, message) pairs, and the
view shows each message beside the field its path names (HackSoft's ApplicationError(message, extra)). Nothing
parses a message back into its path. Pure Python: no Django import.

A path is dotted into JSON or form data ("ratings.a.helpfulness", "spans[2].category", "min_agreement"); the
empty path is about the request as a whole.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


ErrorLike = FieldError | tuple[str, str]


class ServiceError(ValueError):
    """A request a service cannot take. `errors` lists every problem found, each with its path; nothing was
    written. `ServiceError("message")` is one problem about the whole request."""

    def __init__(self, message: str = "", *, errors: Iterable[ErrorLike] = ()) -> None:
        listed = [e if isinstance(e, FieldError) else FieldError(*e) for e in errors]
        if message:
            listed.insert(0, FieldError("", message))
        super().__init__("; ".join(str(error) for error in listed))
        self.errors: list[FieldError] = listed

    def by_path(self) -> dict[str, list[str]]:
        return errors_by_path(self.errors)


def errors_by_path(errors: Iterable[FieldError]) -> dict[str, list[str]]:
    """Messages grouped by the path they name, in the order they came."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for error in errors:
        grouped[error.path].append(error.message)
    return dict(grouped)


def path_head(path: str) -> str:
    """The first name of a path: "ratings" of "ratings.a.helpfulness", "spans" of "spans[2].category"."""
    for index, char in enumerate(path):
        if char in ".[":
            return path[:index]
    return path
