"""Curators steering annotators: pause one (no new work is handed out) or discount their labels."""

from django.core.exceptions import ValidationError
from django.db import transaction

from annotate.models import Membership


@transaction.atomic
def membership_pause(*, membership: Membership, paused: bool) -> Membership:
    """Pause or resume an annotator in a project. A lease they hold now runs out as usual; assignment_next
    hands a paused annotator nothing new."""
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    membership.is_paused = paused
    membership.full_clean()
    membership.save(update_fields=["is_paused"])
    return membership


@transaction.atomic
def membership_weight_set(*, membership: Membership, weight: float) -> Membership:
    """How much an annotator's labels count in weighted aggregation, from 0 (not at all) to 1 (fully)."""
    if not 0 <= weight <= 1:
        raise ValidationError({"weight": "The weight must lie between 0 and 1."})
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    membership.weight = weight
    membership.full_clean()
    membership.save(update_fields=["weight"])
    return membership
