"""Reads for the curators' items list and the item page: search, filters, sorting, pages and an item's neighbours
in the list it was opened from.

Whatever the project's size, a request reads a bounded number of rows:

- Items are listed and found by their number in the project (Item.number), never by their global id.
- What an index answers is read through it: the project's items in number order (item_unique_number), a
  source's (item_source) and an import's (item_by_import) in number order, gold items (item_gold), items with
  an open flag (few: a set of ids).
- A search for a number ("123", "#123") is the item with that number, through item_unique_number.
- What no index answers (text in prompts and responses, the state, the annotation count, the model's probability,
  and sorting by the annotation count) is looked for in a window of SCAN_WINDOW items in number order, and the
  page says which: "searched items 1 to 10,000; search the next 10,000". There is no full-text or trigram index on the
  item texts, and building one for a million items on every import costs more than a curator's occasional search
  gains, so the search is a bounded scan that says it is one.
- Pages are pieces of PER_PAGE rows read with one row more (is there a next page?); nothing counts the whole list.
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast

from .models import LABEL_COUNTED_FIELDS, Item, Project

PER_PAGE = 50
# Items read for a filter or sort that no index answers, per request.
SCAN_WINDOW = 10_000
PROMPT_CHARS = 240

# Sort keys as the query string names them, each with its columns (ties broken by the item number).
SORTS: dict[str, tuple[str, ...]] = {
    "number": ("number",),
    "-number": ("-number",),
    "source": ("source", "number"),
    "-source": ("-source", "-number"),
    "annotations": ("annotation_count", "number"),
    "-annotations": ("-annotation_count", "-number"),
}
# Sorts that need the window: no index of all a project's items orders them so.
SCANNED_SORTS = ("annotations", "-annotations")


@dataclass(frozen=True)
class ItemFilters:
    """What the items list was asked for (annotate.forms.ItemFilterForm cleans it)."""

    q: str = ""
    state: str = ""  # annotate.rules.ItemState; narrowed by the view (the rule needs curators' decisions)
    gold: str = ""  # "1" gold only, "0" no gold
    flagged: bool = False  # narrowed by the view (flags are curation's)
    source: str = ""
    batch: int | None = None
    min_annotations: int | None = None
    max_annotations: int | None = None
    min_p_b: float | None = None
    max_p_b: float | None = None
    sort: str = "number"
    page: int = 1
    start: int = 0  # the window's first item number ("from" in the query string)

    @property
    def number(self) -> int | None:
        """The item number a search for a number ("123" or "#123") asks for."""
        digits = self.q.removeprefix("#")
        return int(digits) if digits.isdigit() and len(digits) < 10 else None

    @property
    def scanned(self) -> bool:
        """Something no index answers was asked for: the list reads a window of SCAN_WINDOW items."""
        return bool(
            (self.q and self.number is None)
            or self.state
            or self.min_annotations is not None
            or self.max_annotations is not None
            or self.min_p_b is not None
            or self.max_p_b is not None
            or self.sort in SCANNED_SORTS
        )

    def params(self) -> dict[str, Any]:
        """The query string's parameters, defaults left out."""
        values: dict[str, Any] = {
            "q": self.q,
            "state": self.state,
            "gold": self.gold,
            "flagged": "1" if self.flagged else "",
            "source": self.source,
            "batch": self.batch,
            "min_annotations": self.min_annotations,
            "max_annotations": self.max_annotations,
            "min_p_b": self.min_p_b,
            "max_p_b": self.max_p_b,
            "sort": "" if self.sort == "number" else self.sort,
            "page": self.page if self.page > 1 else None,
            "from": self.start or None,
        }
        return {key: value for key, value in values.items() if value not in ("", None)}

    def query(self, **changes: Any) -> str:
        """The query string of these filters with `changes` (field names of ItemFilters), "" when it is empty."""
        params = replace(self, **changes).params()
        return urlencode(params)


@dataclass(frozen=True)
class Window:
    """The items a scanned request reads: numbers from `start` up to (not including) `next_start`; `next_start`
    None when the window reaches the project's last item."""

    start: int
    next_start: int | None
    scanned: bool

    @property
    def within(self) -> Q | None:
        """The window as a condition on the item of a decision or flag, for their subqueries."""
        if not self.scanned:
            return None
        bounds = Q(item__number__gte=self.start)
        return bounds & Q(item__number__lt=self.next_start) if self.next_start is not None else bounds

    @property
    def partial(self) -> bool:
        """The window leaves items out: the page says so."""
        return self.scanned and (self.start > 0 or self.next_start is not None)


def item_window(*, project: Project, filters: ItemFilters) -> Window:
    """The window a request reads: one index-only probe of item_unique_number for the first number past it."""
    if not filters.scanned:
        return Window(start=0, next_start=None, scanned=False)
    numbers = Item.objects.filter(project=project, number__gte=filters.start).order_by("number")
    next_start = numbers.values_list("number", flat=True)[SCAN_WINDOW : SCAN_WINDOW + 1].first()
    return Window(start=filters.start, next_start=next_start, scanned=True)


def _search_q(text: str) -> Q:
    """Prompt (its JSON as text), responses, source or external id contain the text."""
    return (
        Q(prompt_text__icontains=text)
        | Q(response_a__icontains=text)
        | Q(response_b__icontains=text)
        | Q(source__icontains=text)
        | Q(external_id__icontains=text)
    )


def items_filtered(*, project: Project, filters: ItemFilters, window: Window) -> QuerySet[Item]:
    """The project's items that the filters annotate answers take (state and flags are the view's to add)."""
    items = Item.objects.filter(project=project)
    if window.scanned:
        items = items.filter(number__gte=window.start)
        if window.next_start is not None:
            items = items.filter(number__lt=window.next_start)
    if filters.number is not None:
        items = items.filter(number=filters.number)  # a number is an item number: a jump, not a text search
    elif filters.q:
        items = items.alias(prompt_text=Cast("prompt", TextField())).filter(_search_q(filters.q))
    if filters.gold:
        items = items.filter(is_gold=filters.gold == "1")
    if filters.source:
        items = items.filter(source=filters.source)
    if filters.batch is not None:
        items = items.filter(import_batch_id=filters.batch)
    if filters.min_annotations is not None:
        items = items.filter(annotation_count__gte=filters.min_annotations)
    if filters.max_annotations is not None:
        items = items.filter(annotation_count__lte=filters.max_annotations)
    if filters.min_p_b is not None:
        items = items.filter(model_probability_b__gte=filters.min_p_b)
    if filters.max_p_b is not None:
        items = items.filter(model_probability_b__lte=filters.max_p_b)
    return items


# What a row of the list reads: never the responses, context or metadata.
ROW_FIELDS = (
    "id",
    "project_id",
    "number",
    "prompt",
    "source",
    "external_id",
    "is_gold",
    "import_batch_id",
    "extra_overlap",
    *LABEL_COUNTED_FIELDS,
    "review_severity",
    "model_probability_b",
)


@dataclass(frozen=True)
class ItemsPage:
    items: list[Item]
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1


def items_list_page(items: QuerySet[Item], *, sort: str, page: int) -> ItemsPage:
    """One page of the list: PER_PAGE rows and one more to know whether a next page exists."""
    offset = (page - 1) * PER_PAGE
    rows = list(items.only(*ROW_FIELDS).order_by(*SORTS[sort])[offset : offset + PER_PAGE + 1])
    return ItemsPage(items=rows[:PER_PAGE], number=page, has_next=len(rows) > PER_PAGE)


def _after(item: Item, columns: tuple[str, ...]) -> Q:
    """Items that come after `item` in the order of `columns` (a keyset condition)."""
    condition = Q()
    equal: dict[str, Any] = {}
    for column in columns:
        name = column.lstrip("-")
        value = getattr(item, name)
        step = Q(**{f"{name}__{'lt' if column.startswith('-') else 'gt'}": value})
        condition |= Q(**equal) & step
        equal[name] = value
    return condition


def _flipped(columns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(column[1:] if column.startswith("-") else f"-{column}" for column in columns)


@dataclass(frozen=True)
class Neighbours:
    previous: int | None
    next: int | None


def item_neighbours(items: QuerySet[Item], *, sort: str, item: Item) -> Neighbours:
    """The items before and after `item` in the list it was opened from: two keyset probes."""
    columns = SORTS[sort]
    backwards = _flipped(columns)
    ids = items.values_list("pk", flat=True)
    return Neighbours(
        previous=ids.filter(_after(item, backwards)).order_by(*backwards).first(),
        next=ids.filter(_after(item, columns)).order_by(*columns).first(),
    )


def prompt_preview(prompt: Any, *, chars: int = PROMPT_CHARS) -> str:
    """The turn being answered (the last one), cut at `chars`: what tells a project's items apart, where the first
    turns (a system prompt, a shared opening) are often the same."""
    turns = prompt if isinstance(prompt, list) else []
    contents = [str(turn.get("content", "")) for turn in turns if isinstance(turn, Mapping)]
    text = " ".join((contents[-1] if contents else str(prompt or "")).split())
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"


def prompt_turns(prompt: Any) -> int:
    return len(prompt) if isinstance(prompt, list) else 1
