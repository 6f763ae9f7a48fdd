"""The rules of annotate.rules as SQL expressions over an item's label summary columns, so that the dashboard and
the review queue count, filter and order in the database. tests/curation/test_rules_sql.py checks that these and
the Python rules agree on every state, reason and severity.

Curator decisions come in as `id IN (subquery)` sets of the items whose latest decision is one of a few kinds:
decisions are few, so PostgreSQL hashes each set once rather than probing the decisions per item.
"""

from collections.abc import Sequence

from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, Greatest, Least, Sign

from annotate import rules
from annotate.models import GoldAnswer, Project
from annotate.rules import ItemState
from curation.models import Adjudication, ItemFlag

_FLOAT: FloatField = FloatField()


def latest_decision_ids(
    project: Project, decisions: Sequence[str], within: Q | None = None
) -> QuerySet[Adjudication, int]:
    """Ids of the project's items whose latest decision is one of `decisions`; `within`, a condition on item_id,
    narrows them to the items a statement is about (one item on a submit), so the set is not built for the whole
    project."""
    newer = Adjudication.objects.filter(item=OuterRef("item")).filter(
        Q(created_at__gt=OuterRef("created_at")) | Q(created_at=OuterRef("created_at"), id__gt=OuterRef("id"))
    )
    return (
        Adjudication.objects.filter(item__project=project, decision__in=list(decisions))
        .filter(within or Q())
        .exclude(Exists(newer))
        .values_list("item_id", flat=True)
    )


def open_flag_ids(project: Project, within: Q | None = None) -> QuerySet[ItemFlag, int]:
    """Ids of the project's items with an open flag (`within`: as latest_decision_ids)."""
    flags = ItemFlag.objects.filter(item__project=project, resolved=False).filter(within or Q())
    return flags.values_list("item_id", flat=True)


def strength_spread() -> ExpressionWrapper:
    """strength_max - strength_min: NULL without a strength, so every comparison with it is false."""
    return ExpressionWrapper(F("strength_max") - F("strength_min"), output_field=IntegerField())


def sign_split_q() -> Q:
    return Q(prefer_a_count__gt=0, prefer_b_count__gt=0)


def disputed_q() -> Q:
    """annotate.rules.disputed, over an `spread` annotation (strength_spread())."""
    return sign_split_q() | Q(spread__gt=rules.STRENGTH_SPREAD_LIMIT) | Q(rating_spread__gt=rules.RATING_SPREAD_LIMIT)


def item_state(project: Project, within: Q | None = None) -> Case:
    """annotate.rules.item_state as a CASE over the item's columns; needs the `spread` annotation. `within`: as
    latest_decision_ids."""
    wanted = F("extra_overlap") + project.overlap
    more = Q(pk__in=latest_decision_ids(project, [rules.MORE], within))
    imported_only = Q(annotation_count__gt=0, human_count=0)
    complete = Q(annotation_count__gte=wanted) | (imported_only & ~more)
    return Case(
        When(
            Q(pk__in=latest_decision_ids(project, [rules.EXCLUDE, rules.AMBIGUOUS], within)),
            then=Value(ItemState.EXCLUDED),
        ),
        When(Q(pk__in=latest_decision_ids(project, [rules.LABEL], within)), then=Value(ItemState.ADJUDICATED)),
        When(annotation_count=0, then=Value(ItemState.UNLABELLED)),
        When(~complete, then=Value(ItemState.IN_PROGRESS)),
        When(disputed_q(), then=Value(ItemState.DISPUTED)),
        default=Value(ItemState.AGREED),
        output_field=CharField(),
    )


def model_contradicts_q(threshold: float) -> Q:
    """annotate.rules.model_contradicts, over a `model_p_b` annotation (the model's probability that B wins)."""
    return Q(strength_sum__lt=0, model_p_b__gte=threshold) | Q(strength_sum__gt=0, model_p_b__lte=1 - threshold)


def severity() -> ExpressionWrapper:
    """annotate.rules.severity of annotate.rules.reasons, over the `spread`, `open_flag` and `model_contradicts`
    annotations."""
    even = Cast(Least("prefer_a_count", "prefer_b_count"), _FLOAT) / Cast(
        Greatest("prefer_a_count", "prefer_b_count"), _FLOAT
    )
    split = Case(
        When(sign_split_q(), then=Value(rules.SIGN_SPLIT_POINTS) + Value(rules.EVEN_SPLIT_POINTS) * even),
        default=Value(0.0),
        output_field=_FLOAT,
    )
    spread = Case(
        When(spread__gt=rules.STRENGTH_SPREAD_LIMIT, then=Cast(F("spread") - rules.STRENGTH_SPREAD_LIMIT, _FLOAT)),
        default=Value(0.0),
        output_field=_FLOAT,
    )
    rating = _points(Q(rating_spread__gt=rules.RATING_SPREAD_LIMIT), rules.RATING_SPREAD_POINTS)
    n = Cast("annotation_count", _FLOAT)
    return ExpressionWrapper(
        (split + spread + rating) * n / (n + Value(1.0))
        + _points(Q(open_flag=True), rules.FLAG_POINTS)
        + _points(Q(model_contradicts=True), rules.MODEL_POINTS),
        output_field=_FLOAT,
    )


def _points(condition: Q, points: float) -> Case:
    return Case(When(condition, then=Value(points)), default=Value(0.0), output_field=_FLOAT)


def in_queue_q() -> Q:
    """annotate.rules.in_review_queue, over the `state`, `open_flag` and `model_contradicts` annotations."""
    return Q(open_flag=True) | Q(state=ItemState.DISPUTED) | Q(state=ItemState.AGREED, model_contradicts=True)


# Each review reason (annotate.rules.reasons) as a condition over the `spread`, `open_flag` and `model_contradicts`
# annotations.
REASON_Q = {
    "sign": sign_split_q(),
    "strength": Q(spread__gt=rules.STRENGTH_SPREAD_LIMIT),
    "rating": Q(rating_spread__gt=rules.RATING_SPREAD_LIMIT),
    "flagged": Q(open_flag=True),
    "model": Q(model_contradicts=True),
}


def boolean(condition: Q) -> ExpressionWrapper:
    return ExpressionWrapper(condition, output_field=BooleanField())


def silver_sign() -> Case:
    """annotate.rules.silver_sign as SQL: the imported strengths' mean side, else the source's label."""
    return Case(
        When(strength_count__gt=0, strength_sum__gt=0, then=Value(1)),
        When(strength_count__gt=0, strength_sum__lt=0, then=Value(-1)),
        When(strength_count__gt=0, then=Value(0)),
        When(source_label__gt=0, then=Value(1)),
        When(source_label__lt=0, then=Value(-1)),
        default=Value(0),
        output_field=IntegerField(),
    )


def pool() -> Case:
    """annotate.rules.pool, over the `state` (item_state) and `silver` (silver_sign) annotations."""
    return Case(
        When(state=ItemState.EXCLUDED, then=Value(rules.Pool.EXCLUDED)),
        When(
            Q(is_gold=True) | Q(state=ItemState.ADJUDICATED) | Q(state=ItemState.AGREED, human_count__gt=0),
            then=Value(rules.Pool.GOLD),
        ),
        When(human_count__gt=0, then=Value(rules.Pool.WITH_HUMANS)),
        When(~Q(silver=0), then=Value(rules.Pool.SILVER)),
        default=Value(rules.Pool.UNLABELLED),
        output_field=CharField(),
    )


def with_pools(items: QuerySet, project: Project) -> QuerySet:
    """The items annotated with `spread`, `state`, `silver` and `pool`."""
    return items.annotate(spread=strength_spread(), state=item_state(project), silver=silver_sign()).annotate(
        pool=pool()
    )


def gold_sign() -> Case:
    """The side a gold item's label prefers: its gold answer, else the latest curator label, else its annotators'
    mean strength; over the `state` annotation (item_state)."""
    answer = GoldAnswer.objects.filter(item=OuterRef("pk")).values("preference_sign")[:1]
    latest = Adjudication.objects.filter(item=OuterRef("pk")).order_by("-created_at", "-id").values("strength")[:1]
    integer: IntegerField = IntegerField()
    return Case(
        When(is_gold=True, then=Coalesce(Subquery(answer, output_field=integer), Value(0))),
        When(
            state=ItemState.ADJUDICATED, then=Cast(Sign(Coalesce(Subquery(latest, output_field=integer), 0)), integer)
        ),
        default=Cast(Sign("strength_sum"), integer),
        output_field=integer,
    )
