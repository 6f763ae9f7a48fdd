"""Curation's part of the items list and the item page (annotate.views.items reads these): the state filter and
the flag filter (a state needs the curators' decisions), the latest decision of a page of items, and an item's
decision history."""

from django.db.models import Q, QuerySet

from annotate.models import Item, Project
from curation import rule_sql
from curation.models import Adjudication, ItemFlag


def items_in_state(items: QuerySet[Item], *, project: Project, state: str, within: Q | None) -> QuerySet[Item]:
    """The items whose annotate.rules state is `state` (curation.rule_sql.item_state); `within` bounds the decision
    subqueries to the items the list reads."""
    return items.alias(spread=rule_sql.strength_spread(), item_state=rule_sql.item_state(project, within)).filter(
        item_state=state
    )


def items_flagged(items: QuerySet[Item], *, project: Project, within: Q | None) -> QuerySet[Item]:
    """The items with an open flag."""
    return items.filter(pk__in=rule_sql.open_flag_ids(project, within))


def latest_decisions(item_ids: list[int]) -> dict[int, str]:
    """The latest decision of each of these items that has one: one query over their decisions."""
    decisions: dict[int, str] = {}
    rows = Adjudication.objects.filter(item_id__in=item_ids).order_by("item_id", "-created_at", "-id")
    for item_id, decision in rows.values_list("item_id", "decision"):
        decisions.setdefault(item_id, decision)
    return decisions


def open_flagged(item_ids: list[int]) -> set[int]:
    """Which of these items have an open flag."""
    return set(ItemFlag.objects.filter(item_id__in=item_ids, resolved=False).values_list("item_id", flat=True))


def item_decisions(*, item: Item) -> QuerySet[Adjudication]:
    """Every decision on the item, newest first, with who made it."""
    return Adjudication.objects.filter(item=item).select_related("curator").order_by("-created_at", "-id")
