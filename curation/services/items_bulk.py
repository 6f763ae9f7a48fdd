"""One decision on several items at once, from the items list: exclude them, ask for more annotations of them, or
make them gold with the answer their labels already give."""

from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from annotate import rules
from annotate.models import Item
from annotate.selectors import item_label_summary
from annotate.services.gold import gold_answer_set
from concord.errors import FieldError
from curation.models import Adjudication
from curation.services.adjudication import AdjudicationError, adjudication_record

# At most this many items per request: a page of the list.
MAX_BULK_ITEMS = 100


class BulkAction:
    EXCLUDE = "exclude"
    MORE = "more"
    GOLD = "gold"
    CHOICES = ((EXCLUDE, "Exclude from datasets"), (MORE, "Ask for more annotations"), (GOLD, "Make gold"))


@dataclass(frozen=True)
class BulkResult:
    action: str
    count: int


def _gold_sign(item: Item, decision: Adjudication | None) -> int | None:
    """The answer an item's labels give, if any: a curator's final label, else the annotators' agreement."""
    summary = item_label_summary(item, overlap=item.project.overlap)
    state = rules.item_state(summary, decision.decision if decision else None)
    if state == rules.ItemState.ADJUDICATED and decision is not None and decision.strength is not None:
        return rules.sign(decision.strength)
    if state == rules.ItemState.AGREED and summary.strengths:
        return summary.consensus_sign
    return None


def _make_gold(items: Sequence[Item], curator: AbstractBaseUser, reason: str) -> None:
    latest: dict[int, Adjudication] = {}
    for decision in Adjudication.objects.filter(item__in=items).order_by("item_id", "-created_at", "-id"):
        latest.setdefault(decision.item_id, decision)
    signs = {item.pk: _gold_sign(item, latest.get(item.pk)) for item in items}
    refused = [item.number for item in items if signs[item.pk] is None]
    if refused:
        listed = ", ".join(str(number) for number in refused)
        message = f"items {listed} have no agreed or adjudicated answer: open each to give its expected answer"
        raise AdjudicationError(errors=[FieldError("items", message)])
    note = reason.strip() or "The annotators' agreed answer (made gold from the items list)."
    for item in items:
        gold_answer_set(item=item, preference_sign=signs[item.pk] or 0, note=note, created_by=curator)


@transaction.atomic
def items_bulk_decide(
    *, items: Sequence[Item], curator: AbstractBaseUser, action: str, reason: str, more: int = 0
) -> BulkResult:
    """Apply one action to every item, or to none: AdjudicationError lists the problems and nothing is written.

    Exclusion and more annotations are decisions (curation.services.adjudication.adjudication_record, one per item,
    kept in each item's history). Gold needs an expected answer, which a list cannot ask for per item: an item
    becomes gold with the answer its labels give (a curator's final label, else the annotators' agreement), and
    an item without one (unlabelled, in progress, disputed) is refused by number."""
    if not items:
        raise AdjudicationError(errors=[FieldError("items", "tick the items to act on")])
    if len(items) > MAX_BULK_ITEMS:
        raise AdjudicationError(errors=[FieldError("items", f"at most {MAX_BULK_ITEMS} items at once")])
    items = sorted(items, key=lambda item: item.pk)  # row locks in one order (no deadlock between two), ids listed so
    if action == BulkAction.GOLD:
        _make_gold(items, curator, reason)
    elif action in (BulkAction.EXCLUDE, BulkAction.MORE):
        for item in items:
            adjudication_record(
                item=item,
                curator=curator,
                decision=action,
                reason=reason,
                more=more if action == BulkAction.MORE else 0,
            )
    else:
        choices = ", ".join(value for value, _ in BulkAction.CHOICES)
        raise AdjudicationError(errors=[FieldError("action", f"must be one of {choices}")])
    return BulkResult(action=action, count=len(items))
