"""Handing out work, taking annotations and skips.

Invariant kept here: for every item, submitted annotations plus live leases never exceed the project's
overlap, and an annotator never gets the same item twice. Every lease is created, renewed or ended while
holding the item's row lock, so a count taken after acquiring that lock is exact. Only work the queue handed out
is taken: a submit or skip needs the annotator's lease on the item, and a paused annotator's is refused.
"""

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotate.constants import SKIP_REASON_MAX_CHARS
from annotate.labels import LabelError, Labels, labels_clean
from annotate.models import Annotation, Assignment, Item, Project
from annotate.selectors import annotator_is_paused, label_schema_current, lease_live
from annotate.services.label_summary import item_label_summaries_refresh
from annotate.services.schemas import label_schema_ensure
from annotate.text import unstorable
from concord.errors import ServiceError

# How many locked-but-full candidates assignment_next steps past before giving up on this request.
MAX_CANDIDATE_TRIES = 20


class LabelingError(ServiceError):
    """A submit or skip that cannot be accepted; `errors` lists each problem with the field it is about (an
    empty path: the submit as a whole)."""


class OutsideQueue(LabelingError):
    """The item is not this annotator's to answer: never handed to them, skipped, or gone to others once their
    lease ran out. Nothing about the labels is wrong, so the page offers the next item rather than the form."""


class AnnotatorPaused(LabelingError):
    """A curator paused this annotator in the project: nothing they send is taken until they are resumed."""


@dataclass(frozen=True)
class SubmitResult:
    annotation: Annotation
    created: bool  # False when this annotator had already answered the item: the stored answer stands
    # For a repeat (created False): whether it said what the stored answer says (a double click, a retry), or
    # something else (a stale page relabelled), which was not saved.
    same_answer: bool = True


def _live_leases(item_id: int, now: datetime, *, exclude_annotator_id: int | None = None) -> int:
    leases = Assignment.objects.filter(item_id=item_id, status=Assignment.Status.LEASED, expires_at__gt=now)
    if exclude_annotator_id is not None:
        leases = leases.exclude(annotator_id=exclude_annotator_id)
    return leases.count()


# The queue's stages in the order they are served, each with its items and their order (_candidates).
QUEUE_STAGES: dict[str, tuple[Q, tuple[str, ...]]] = {
    "routed": (Q(priority__gt=0), ("-priority", "annotation_count", "id")),
    "selected": (Q(selection_rank__gt=0), ("-selection_rank", "annotation_count", "id")),
    "rest": (Q(), ("annotation_count", "id")),
}


def _candidates(*, project: Project, annotator: AbstractBaseUser, now: datetime, passed: list[int], stage: str):  # type: ignore[no-untyped-def]
    """Items that still need annotations and that this annotator has not done, of one stage of the queue
    (QUEUE_STAGES): the pairs a curation round routed to the humans (Item.priority), highest priority first; the
    pairs the project's selection strategy ranked (Item.selection_rank), highest rank first; or every open item,
    least annotated first."""
    live_leases = (
        Assignment.objects.filter(item=OuterRef("pk"), status=Assignment.Status.LEASED, expires_at__gt=now)
        .order_by()
        .values("item")
        .annotate(n=Count("id"))
        .values("n")
    )
    finished_by_me = Assignment.objects.filter(
        item=OuterRef("pk"),
        annotator_id=annotator.pk,
        status__in=[Assignment.Status.SUBMITTED, Assignment.Status.SKIPPED],
    )
    annotated_by_me = Annotation.objects.filter(item=OuterRef("pk"), annotator_id=annotator.pk)
    items = Item.objects.filter(
        project=project, is_gold=False, annotation_count__lt=F("extra_overlap") + project.overlap
    )
    # A query per stage rather than one ordered by priority and rank first: each walks its own index
    # (item_routed_order and item_selected_order, small partial ones, and item_queue_order), where one ORDER BY
    # priority would sort every open item of the project.
    stage_filter, ordering = QUEUE_STAGES[stage]
    return (
        items.filter(stage_filter)
        .exclude(pk__in=passed)
        .exclude(Exists(finished_by_me))
        .exclude(Exists(annotated_by_me))
        .annotate(leases=Coalesce(Subquery(live_leases, output_field=IntegerField()), Value(0)))
        .filter(annotation_count__lt=F("extra_overlap") + project.overlap - F("leases"))
        .order_by(*ordering)
    )


def _gold_for(*, project: Project, annotator: AbstractBaseUser, now: datetime) -> Item | None:
    """A gold item this annotator has not seen, leased to them. Gold items ignore overlap: everyone gets them."""
    unseen = (
        Item.objects.filter(project=project, is_gold=True)
        .exclude(Exists(Assignment.objects.filter(item=OuterRef("pk"), annotator_id=annotator.pk)))
        .exclude(Exists(Annotation.objects.filter(item=OuterRef("pk"), annotator_id=annotator.pk)))
        .order_by("id")
    )
    with transaction.atomic():
        item = unseen.select_for_update(skip_locked=True, of=("self",)).select_related("project").first()
        if item is not None:
            _lease(item=item, annotator=annotator, now=now)
        return item


def _lease(*, item: Item, annotator: AbstractBaseUser, now: datetime) -> None:
    """Create or renew this annotator's lease on the item in one statement (INSERT ... ON CONFLICT DO UPDATE)."""
    expires = now + timedelta(minutes=item.project.lease_minutes)
    lease = Assignment(
        item=item, annotator_id=annotator.pk, status=Assignment.Status.LEASED, leased_at=now, expires_at=expires
    )
    Assignment.objects.bulk_create(
        [lease],
        update_conflicts=True,
        unique_fields=["item", "annotator"],
        update_fields=["status", "leased_at", "expires_at"],
    )


def assignment_next(*, project: Project, annotator: AbstractBaseUser) -> Item | None:
    """The item this annotator should label now, leased to them; None when nothing is left.

    An annotator with a live lease gets that item again (a reload shows the same item) and the lease is
    renewed. Otherwise the least-annotated open item is locked with SKIP LOCKED, so concurrent requests
    never wait on each other, and re-checked under the lock before it is leased.
    """
    if annotator_is_paused(project=project, annotator=annotator):
        return None
    now = timezone.now()
    current = lease_live(project=project, annotator=annotator, now=now)
    if current is not None:
        with transaction.atomic():
            item = Item.objects.select_for_update().select_related("project").get(pk=current.item_id)
            # Re-checked under the item lock: a lease that lapsed meanwhile may have gone to someone else.
            live = Assignment.objects.filter(pk=current.pk, status=Assignment.Status.LEASED, expires_at__gt=now)
            renewed = live.update(expires_at=now + timedelta(minutes=project.lease_minutes))
            if renewed:
                return item
    # Gold items come at the project's rate, unannounced, so they measure ordinary work.
    if project.gold_rate > 0 and random.random() < project.gold_rate:
        gold = _gold_for(project=project, annotator=annotator, now=now)
        if gold is not None:
            return gold
    # The pairs a curation round routed to the humans first, then those the selection strategy ranked, then the
    # least annotated.
    for stage in QUEUE_STAGES:
        if stage != "rest" and not _stage_has_items(project=project, stage=stage):
            continue
        leased = _lease_candidate(project=project, annotator=annotator, now=now, stage=stage)
        if leased is not None:
            return leased
    return None


def _stage_has_items(*, project: Project, stage: str) -> bool:
    """Whether a small stage (routed, selected) has any item at all: one read of its partial index, where looking
    for a candidate in an empty stage costs two queries in a transaction (a third of a request's time)."""
    return Item.objects.filter(QUEUE_STAGES[stage][0], project=project, is_gold=False).exists()


def _lease_candidate(*, project: Project, annotator: AbstractBaseUser, now: datetime, stage: str) -> Item | None:
    """The first candidate (_candidates) that still has room once locked, leased to the annotator."""
    passed: list[int] = []
    for _ in range(MAX_CANDIDATE_TRIES):
        with transaction.atomic():
            candidates = _candidates(project=project, annotator=annotator, now=now, passed=passed, stage=stage)
            item = candidates.select_for_update(skip_locked=True, of=("self",)).select_related("project").first()
            if item is None:
                # Every open item may be locked by someone else's lease being written right now: wait for
                # the first one rather than report an empty queue that is not empty. One row by primary key,
                # in a transaction holding no other lock, so this wait cannot be part of a deadlock.
                first_id = candidates.values_list("pk", flat=True).first()
                if first_id is None:
                    return None
                item = Item.objects.select_for_update().select_related("project").get(pk=first_id)
            # The candidate query saw leases as of its snapshot; recount now that we hold the row lock.
            taken = item.annotation_count + _live_leases(item.pk, now, exclude_annotator_id=annotator.pk)
            if taken < project.overlap + item.extra_overlap:
                _lease(item=item, annotator=annotator, now=now)
                return item
            passed.append(item.pk)
    return None


def _ensure_not_paused(*, project: Project, annotator: AbstractBaseUser) -> None:
    if annotator_is_paused(project=project, annotator=annotator):
        raise AnnotatorPaused("A curator has paused your labeling in this project.")


def item_handed_out_check(*, item: Item, annotator: AbstractBaseUser) -> None:
    """Raise AnnotatorPaused or OutsideQueue unless the queue handed this item to this annotator at some time (a
    lease live or run out, a skip, a submit) or they answered it: a refused form shows the item again only then,
    so that posting a broken form is no way to read items the queue never gave out."""
    _ensure_not_paused(project=item.project, annotator=annotator)
    mine = Q(item=item, annotator_id=annotator.pk)
    if not (Assignment.objects.filter(mine).exists() or Annotation.objects.filter(mine).exists()):
        raise OutsideQueue(f"Item {item.number} was not handed to you: answer the items the queue gives you.")


def _ensure_handed_out(*, item: Item, annotator: AbstractBaseUser, now: datetime) -> None:
    """Accept work only from the queue: on this annotator's live lease, or on one that ran out while nobody took
    their place (the item still has room), so that overlap holds however a submit is sent."""
    _ensure_not_paused(project=item.project, annotator=annotator)
    mine = Assignment.objects.filter(item=item, annotator_id=annotator.pk).first()
    if mine is not None and mine.status == Assignment.Status.SKIPPED:
        raise OutsideQueue(f"You skipped item {item.number}, so it cannot be submitted.")
    if mine is None or mine.status != Assignment.Status.LEASED:
        raise OutsideQueue(f"Item {item.number} was not handed to you: answer the items the queue gives you.")
    if mine.expires_at > now or item.is_gold:  # gold items ignore overlap, so nobody can take an annotator's place
        return
    others = _live_leases(item.pk, now, exclude_annotator_id=annotator.pk)
    if item.annotation_count + others >= item.project.overlap + item.extra_overlap:
        raise OutsideQueue(f"Your time on item {item.number} ran out and it has gone to other annotators.")


@transaction.atomic
def annotation_submit(
    *,
    item: Item,
    annotator: AbstractBaseUser,
    labels: Labels,
    seconds_spent: float,
    submission_uuid: uuid.UUID,
) -> SubmitResult:
    """Record an annotation: preference, ratings, spans and corrections in one row, checked against the
    project's current label schema. Repeating a submission (same UUID, or the same item again) changes nothing:
    the result says so, and whether the repeat gave the same answer as the stored one. A first answer needs the
    annotator's lease on the item (else OutsideQueue) and an annotator who is not paused (else AnnotatorPaused).
    """
    if seconds_spent < 0:
        raise LabelingError(errors=[("seconds_spent", "cannot be negative")])
    item = Item.objects.select_for_update().select_related("project").get(pk=item.pk)
    earlier = Annotation.objects.filter(submission_uuid=submission_uuid).first()
    if earlier is not None and (earlier.item_id != item.pk or earlier.annotator_id != annotator.pk):
        raise LabelingError("This submission id belongs to another annotation.")
    earlier = earlier or Annotation.objects.filter(item=item, annotator_id=annotator.pk).first()
    if earlier is not None:
        # A repeat writes nothing, so it is answered even once the lease is gone or the annotator paused.
        return _repeat(earlier, item=item, labels=labels)
    now = timezone.now()
    _ensure_handed_out(item=item, annotator=annotator, now=now)
    schema = label_schema_ensure(project=item.project)
    try:
        clean = labels_clean(schema.definition, labels, texts={"a": item.response_a, "b": item.response_b})
    except LabelError as error:
        raise LabelingError(errors=error.errors) from None
    annotation = Annotation(
        item=item,
        annotator_id=annotator.pk,
        schema=schema,
        strength=clean.strength,
        justification=clean.justification,
        ratings=clean.ratings,
        spans=clean.spans,
        missing=clean.missing,
        corrections=clean.corrections,
        seconds_spent=seconds_spent,
        submission_uuid=submission_uuid,
    )
    annotation.full_clean()
    annotation.save()
    Item.objects.filter(pk=item.pk).update(annotation_count=F("annotation_count") + 1)
    item_label_summaries_refresh(item_ids=[item.pk])  # under the item's row lock, taken above
    # _ensure_handed_out found the lease; under the item's row lock, nothing has ended it since.
    Assignment.objects.filter(item=item, annotator_id=annotator.pk).update(
        status=Assignment.Status.SUBMITTED, finished_at=now
    )
    return SubmitResult(annotation=annotation, created=True)


def _repeat(earlier: Annotation, *, item: Item, labels: Labels) -> SubmitResult:
    """One answer per annotator and item: a repeat never changes the stored one, and says whether it matched."""
    schema = label_schema_current(project=item.project)
    try:
        clean = labels_clean(schema.definition, labels, texts={"a": item.response_a, "b": item.response_b})
    except LabelError:
        return SubmitResult(annotation=earlier, created=False, same_answer=False)
    return SubmitResult(annotation=earlier, created=False, same_answer=_stored_labels(earlier) == clean)


def _stored_labels(annotation: Annotation) -> Labels:
    return Labels(
        strength=annotation.strength,
        justification=annotation.justification,
        ratings=annotation.ratings,
        spans=annotation.spans,
        missing=annotation.missing,
        corrections=annotation.corrections,
    )


@transaction.atomic
def assignment_skip(*, item: Item, annotator: AbstractBaseUser, reason: str) -> Assignment:
    """Give back an item handed to this annotator (its lease live or run out), with a reason; they will not be
    offered it again. Skipping it again (a double click) only changes the reason."""
    reason = reason.strip()
    if not reason:
        raise LabelingError("Say why you skip this item.")
    if len(reason) > SKIP_REASON_MAX_CHARS:
        raise LabelingError(f"The skip reason is longer than {SKIP_REASON_MAX_CHARS} characters.")
    if (problem := unstorable(reason)) is not None:
        raise LabelingError(errors=[("reason", f"holds {problem}, which cannot be stored; remove it")])
    item = Item.objects.select_for_update().select_related("project").get(pk=item.pk)
    if Annotation.objects.filter(item=item, annotator_id=annotator.pk).exists():
        raise LabelingError("You already submitted this item.")
    _ensure_not_paused(project=item.project, annotator=annotator)
    handed_out = [Assignment.Status.LEASED, Assignment.Status.SKIPPED]
    assignment = Assignment.objects.filter(item=item, annotator_id=annotator.pk, status__in=handed_out).first()
    if assignment is None:
        raise OutsideQueue(f"Item {item.number} was not handed to you: skip only the items the queue gives you.")
    assignment.status = Assignment.Status.SKIPPED
    assignment.skip_reason = reason
    assignment.finished_at = timezone.now()
    assignment.full_clean()
    assignment.save(update_fields=["status", "skip_reason", "finished_at"])
    return assignment
