"""Curators' decisions on disagreeing items, and flags that send an item to them.

Decisions are appended, never edited: the latest one is the item's state (see curation.selectors_review).
Every decision resolves the flags raised before it, since the curator has looked at the item; a flag raised
afterwards brings the item back to the review queue.
"""

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotate.access import role_in_project
from annotate.labels import SCALES, ratings_errors
from annotate.models import Item, Role
from annotate.selectors import label_schema_current
from annotate.services.labeling import LabelingError, item_handed_out_check
from concord.errors import FieldError, ServiceError
from curation.models import Adjudication, ItemFlag
from curation.services.review_state import items_review_refresh

MAX_MORE = 20
MAX_REASON_CHARS = 5000
MAX_FLAG_REASON_CHARS = 500


class AdjudicationError(ServiceError):
    """A decision or flag that cannot be recorded; `errors` names each problem with its field."""


def _label_errors(*, item: Item, strength: int | None, ratings: Any) -> list[FieldError]:
    definition = label_schema_current(project=item.project).definition
    preference = definition["preference"]
    errors: list[FieldError] = []
    if preference["enabled"]:
        low, high = SCALES[preference["scale"]]
        if strength is None:
            errors.append(FieldError("strength", "choose the final label"))
        elif isinstance(strength, bool) or not isinstance(strength, int) or not low <= strength <= high:
            errors.append(FieldError("strength", f"must be an integer from {low} to {high}, got {strength!r}"))
    elif strength is not None:
        errors.append(FieldError("strength", "this project does not ask for a preference"))
    if ratings:
        errors.extend(ratings_errors(definition, ratings, require_all=False))
    if not preference["enabled"] and not ratings:
        errors.append(FieldError("ratings", "give the final ratings (this project asks for no preference)"))
    return errors


def _decision_errors(
    *, item: Item, decision: str, reason: str, strength: int | None, ratings: Any, more: int
) -> list[FieldError]:
    errors: list[FieldError] = []
    if decision not in Adjudication.Decision.values:
        return [FieldError("decision", f"must be one of {', '.join(Adjudication.Decision.values)}")]
    if not reason.strip():
        errors.append(FieldError("reason", "say why (it is kept with the decision)"))
    elif len(reason) > MAX_REASON_CHARS:
        errors.append(FieldError("reason", f"at most {MAX_REASON_CHARS} characters"))
    if decision == Adjudication.Decision.LABEL:
        errors += _label_errors(item=item, strength=strength, ratings=ratings)
    elif strength is not None or ratings:
        errors.append(FieldError("strength", "a final label goes only with the decision 'label'"))
    if decision == Adjudication.Decision.MORE:
        if isinstance(more, bool) or not isinstance(more, int) or not 1 <= more <= MAX_MORE:
            errors.append(FieldError("more", f"ask for 1 to {MAX_MORE} more annotations, got {more!r}"))
    elif more:
        errors.append(FieldError("more", "extra annotations go only with the decision 'more'"))
    return errors


@transaction.atomic
def adjudication_record(
    *,
    item: Item,
    curator: AbstractBaseUser,
    decision: str,
    reason: str,
    strength: int | None = None,
    ratings: dict[str, dict[str, int]] | None = None,
    more: int = 0,
) -> Adjudication:
    """Record a curator's decision on an item; AdjudicationError lists every problem and nothing is written.

    "more" raises the item's extra_overlap by `more`, so assignment_next hands it out again; the item stays
    out of the review queue until those annotations are in.
    """
    errors = _decision_errors(
        item=item, decision=decision, reason=reason, strength=strength, ratings=ratings or {}, more=more
    )
    if errors:
        raise AdjudicationError(errors=errors)
    # Serialises decisions on one item, so "the latest" is well defined and extra_overlap adds up.
    Item.objects.select_for_update().filter(pk=item.pk).values_list("pk", flat=True).get()
    adjudication = Adjudication(
        item=item,
        curator=curator,  # type: ignore[misc]
        decision=decision,
        strength=strength if decision == Adjudication.Decision.LABEL else None,
        ratings=(ratings or {}) if decision == Adjudication.Decision.LABEL else {},
        reason=reason.strip(),
    )
    adjudication.full_clean()
    adjudication.save()
    if decision == Adjudication.Decision.MORE:
        Item.objects.filter(pk=item.pk).update(extra_overlap=F("extra_overlap") + more)
        item.refresh_from_db(fields=["extra_overlap"])
    ItemFlag.objects.filter(item=item, resolved=False).update(resolved=True)
    items_review_refresh(project_id=item.project_id, item_ids=[item.pk])
    return adjudication


@transaction.atomic
def _ensure_may_flag(*, item: Item, user: AbstractBaseUser) -> None:
    """Curators and admins flag any item of their project; an annotator only one the queue handed them, and not
    while paused, as for a submit."""
    role = role_in_project(user, item.project)
    if role is not None and Role.rank(role) >= Role.rank(Role.CURATOR):
        return
    try:
        item_handed_out_check(item=item, annotator=user)
    except LabelingError as refused:
        raise AdjudicationError(str(refused)) from None


def item_flag_raise(*, item: Item, user: AbstractBaseUser, reason: str) -> ItemFlag:
    """Flag an item for a curator's look. One flag per user and item: raising it again while it is open
    changes nothing; raising it after a decision resolved it opens it again with the new reason."""
    reason = reason.strip()
    if not reason:
        raise AdjudicationError(errors=[("reason", "say what is wrong with this item")])
    if len(reason) > MAX_FLAG_REASON_CHARS:
        raise AdjudicationError(errors=[("reason", f"at most {MAX_FLAG_REASON_CHARS} characters")])
    _ensure_may_flag(item=item, user=user)
    # The item's row lock first, as every writer of what its review columns read takes it: the refresh below then
    # judges the item as a concurrent submit left it.
    Item.objects.select_for_update().filter(pk=item.pk).values_list("pk", flat=True).get()
    flag, created = ItemFlag.objects.select_for_update().get_or_create(
        item=item, raised_by_id=user.pk, defaults={"reason": reason}
    )
    if not created and flag.resolved:
        # created_at marks when it was raised, so a reopened flag dates from now.
        ItemFlag.objects.filter(pk=flag.pk).update(resolved=False, reason=reason, created_at=timezone.now())
        flag.refresh_from_db()
    items_review_refresh(project_id=item.project_id, item_ids=[item.pk])
    return flag
