"""Curators steering annotators: pause one (no new work is handed out) or discount their labels."""

from django.core.exceptions import ValidationError
from django.db import transaction

from annotate.models import Membership, Project


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


@transaction.atomic
def project_model_threshold_set(*, project: Project, threshold: float) -> Project:
    """How sure the active reward model must be of the other side (its calibrated probability, 0.5 to 1) before
    its disagreement with agreeing annotators sends an item to the review queue."""
    project = Project.objects.select_for_update().get(pk=project.pk)
    project.model_threshold = threshold
    project.full_clean()
    project.save(update_fields=["model_threshold"])
    return project
