"""Every URL pattern of the site, found by walking Django's URL resolver (so a new view is found without anyone
listing it), with a way to fill in its arguments."""

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.resolvers import RegexPattern, RoutePattern
from django.utils.regex_helper import normalize

ROUTE_ARGUMENT = re.compile(r"<(?:[^>:]+:)?(\w+)>")


@dataclass(frozen=True)
class Route:
    """One URL pattern: its namespaced name, the patterns from the root down to it, and its view."""

    name: str
    pieces: tuple[URLPattern | URLResolver, ...]
    callback: Callable[..., Any]

    @property
    def namespace(self) -> str:
        return self.name.partition(":")[0] if ":" in self.name else ""

    @property
    def arguments(self) -> tuple[str, ...]:
        names: list[str] = []
        for piece in self.pieces:
            names += _piece_arguments(piece)
        return tuple(names)

    @property
    def drf_basename(self) -> str | None:
        """The router's basename of a Django REST framework viewset's route (its `pk` names that kind)."""
        initkwargs = getattr(self.callback, "initkwargs", None)
        return initkwargs.get("basename") if initkwargs else None

    @property
    def model_admin(self) -> Any:
        """The ModelAdmin behind a Django admin route, if any (its `object_id` names an object of its model)."""
        return getattr(self.callback, "model_admin", None)

    @property
    def test_id(self) -> str:
        if self.name.endswith("(unnamed)"):
            return self.name + "@" + "".join(str(piece.pattern) for piece in self.pieces)
        return self.name + ("+format" if "format" in self.arguments else "")

    def url(self, values: Mapping[str, object]) -> str:
        """The path with these argument values, checked to resolve back to this route's view."""
        path = "/" + "".join(_piece_path(piece, values) for piece in self.pieces)
        assert resolve(path).func is self.callback, f"{path} does not resolve to {self.name}"
        return path


def _piece_arguments(piece: URLPattern | URLResolver) -> list[str]:
    pattern = piece.pattern
    if isinstance(pattern, RoutePattern):
        return ROUTE_ARGUMENT.findall(str(pattern))
    if isinstance(pattern, RegexPattern):
        return list(pattern.regex.groupindex)
    raise TypeError(f"a URL pattern of an unknown kind: {pattern!r}")


def _piece_path(piece: URLPattern | URLResolver, values: Mapping[str, object]) -> str:
    pattern = piece.pattern
    if isinstance(pattern, RoutePattern):
        return ROUTE_ARGUMENT.sub(lambda match: str(values[match.group(1)]), str(pattern))
    assert isinstance(pattern, RegexPattern)
    wanted = set(pattern.regex.groupindex)
    # The forms a regex can be written in, as reverse() finds them; take the one that uses all its groups.
    for template, parameters in normalize(pattern.regex.pattern):
        if set(parameters) == wanted:
            return template % {name: values[name] for name in parameters}
    raise ValueError(f"cannot write {pattern.regex.pattern!r} with {sorted(wanted)}")


def _walk(
    patterns: list[URLPattern | URLResolver], pieces: tuple[URLPattern | URLResolver, ...], namespace: str
) -> Iterator[Route]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = ":".join(filter(None, [namespace, entry.namespace or ""]))
            yield from _walk(entry.url_patterns, (*pieces, entry), inner)
        else:
            name = ":".join(filter(None, [namespace, entry.name or "(unnamed)"]))
            yield Route(name=name, pieces=(*pieces, entry), callback=entry.callback)


def all_routes() -> list[Route]:
    return list(_walk(get_resolver().url_patterns, (), ""))
