"""Gold items: items with a known answer, mixed into every annotator's queue to measure accuracy."""

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from annotate.labels import LabelError, ratings_errors
from annotate.models import GoldAnswer, Item
from annotate.services.label_summary import items_changed_send
from annotate.services.schemas import label_schema_ensure


@transaction.atomic
def gold_answer_set(
    *,
    item: Item,
    preference_sign: int,
    ratings: dict[str, dict[str, int]] | None = None,
    note: str = "",
    created_by: AbstractBaseUser | None = None,
) -> GoldAnswer:
    """Make the item gold with this expected answer (or change the answer of a gold item)."""
    if preference_sign not in (-1, 0, 1):
        raise LabelError(errors=[("preference_sign", f"must be -1 (A), 0 (tie) or 1 (B), got {preference_sign!r}")])
    if ratings:
        _check_ratings(item=item, ratings=ratings)
    answer, _ = GoldAnswer.objects.update_or_create(
        item=item,
        defaults={
            "preference_sign": preference_sign,
            "ratings": ratings or {},
            "note": note.strip(),
            "created_by_id": created_by.pk if created_by is not None else None,
        },
    )
    Item.objects.filter(pk=item.pk).update(is_gold=True)
    items_changed_send(item_ids=[item.pk])
    return answer


@transaction.atomic
def gold_answer_remove(*, item: Item) -> None:
    """Back to an ordinary item: it re-enters the queue under the project's overlap."""
    GoldAnswer.objects.filter(item=item).delete()
    Item.objects.filter(pk=item.pk).update(is_gold=False)
    items_changed_send(item_ids=[item.pk])


def _check_ratings(*, item: Item, ratings: dict[str, Any]) -> None:
    """Expected ratings must fit the project's attributes; a gold answer may rate only some of them."""
    definition = label_schema_ensure(project=item.project).definition
    errors = ratings_errors(definition, ratings, require_all=False)
    if errors:
        raise LabelError(errors=errors)
