"""The disagreement queue: which items need a curator, why, and how badly.

An item is a candidate when it has at least two human or imported annotations with a strength, or an open
flag. Its reasons, each with a score:

- sign split: some annotators prefer A, some B. 2 points, plus up to 2 more the more even the split is
  (one against one, or two against two, scores 4).
- strength spread: the strongest and weakest strength differ by more than 2 (HelpSteer2-Preference's rule);
  1 point per step beyond 2.
- rating spread: an attribute's ratings of one response differ by more than 2 (HelpSteer2's rule); 1 point.
- flagged: someone flagged it (an open ItemFlag); 1 point.
- model disagrees: the project's active reward model prefers the other side than the annotators' mean, by a
  margin above MODEL_MARGIN_THRESHOLD; 2 points. Such an item enters the queue even when the annotators agree.

Severity is the sum of the scores times n / (n + 1) for n annotations with a strength, so a split among many
annotators counts for more than the same split between two. The queue is ordered by severity, then by
the number of annotations, then by id.

Resolved items leave the queue: an item whose latest decision is label, exclude or ambiguous stays out
unless it is flagged again after that decision (a decision resolves the flags raised before it). After
"more", the item stays out until the extra annotations asked for are all in (annotation_count reaches the
project's overlap plus the item's extra_overlap), and then returns if its annotations still disagree.

Sign, strength and flags are computed in SQL (aggregates over the annotations, grouped by item), so the
queue is ordered, filtered and paginated in the database. Ratings are JSON: their spread is computed in
Python for the items of one page, from one query. An item whose only disagreement is in its ratings is
found by the "rating spread" filter, which scans the unresolved candidates in chunks. So the rating point
shows in a page's severities but does not order the queue. Gold items are left out: their disagreements are
measured against the gold answer (annotate.selectors.gold_scores).

On 100,000 items with 300,000 annotations (14,000 in the queue) a page takes about 0.9 s (two aggregate
queries: the count and the page); the rating filter, scanning 48,000 candidates, about 5 s.
"""

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import (
    Avg,
    BooleanField,
    Case,
    Count,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Cast, Greatest, Least

from annotate.models import Annotation, Item, Membership, Project
from annotate.selectors import preference_means
from curation.aggregation import SpanConsensus, majority_sign, mean_strength, ratings_consensus, spans_merge
from curation.models import Adjudication, ItemFlag

RATING_SPREAD_LIMIT = 2
# A reward model's margin (reward B - reward A) beyond which its disagreement with the annotators counts.
MODEL_MARGIN_THRESHOLD = 0.5
MODEL_REASON_SCORE = 2.0
STRENGTH_SPREAD_LIMIT = 2
REASONS = {
    "sign": "Sign split",
    "strength": "Strength spread > 2",
    "rating": "Rating spread > 2",
    "flagged": "Flagged",
    "model": "Model disagrees",
}
FINAL_DECISIONS = [Adjudication.Decision.LABEL, Adjudication.Decision.EXCLUDE, Adjudication.Decision.AMBIGUOUS]
QUEUE_PAGE_SIZE = 50
SCAN_CHUNK = 2000
QUEUE_FIELDS = ("id", "n", "positive", "negative", "low", "high", "open_flag", "severity")


@dataclass(frozen=True)
class Reason:
    code: str
    score: float
    detail: str

    @property
    def label(self) -> str:
        return REASONS[self.code]


@dataclass
class QueueEntry:
    item: Item
    annotations: int
    severity: float
    reasons: list[Reason] = field(default_factory=list)


def _strength_filter(**lookups: Any) -> Q:
    return Q(
        annotations__strength__isnull=False,
        annotations__origin__in=[Annotation.Origin.HUMAN, Annotation.Origin.IMPORTED],
        **{f"annotations__{key}": value for key, value in lookups.items()},
    )


def _hidden_ids(project: Project) -> QuerySet[Adjudication, int]:
    """Items whose latest decision settles them for now: label, exclude or ambiguous; or "more" while the
    extra annotations are still awaited. Decisions are few, so this is a small set, used as `id IN (...)`."""
    newer = Adjudication.objects.filter(item=OuterRef("item")).filter(
        Q(created_at__gt=OuterRef("created_at")) | Q(created_at=OuterRef("created_at"), id__gt=OuterRef("id"))
    )
    awaiting = Q(decision=Adjudication.Decision.MORE) & Q(
        item__annotation_count__lt=F("item__extra_overlap") + project.overlap
    )
    return (
        Adjudication.objects.filter(item__project=project)
        .filter(Q(decision__in=FINAL_DECISIONS) | awaiting)
        .exclude(Exists(newer))
        .values_list("item_id", flat=True)
    )


def candidates(*, project: Project) -> QuerySet[Item]:
    """Unresolved items with at least two strengths or an open flag, with their SQL-side aggregates.

    Flags and decisions come in as `id IN (subquery)` sets rather than a subquery per item, and nothing but
    the item's id, project and gold mark is read from the item table, so PostgreSQL can scan an index of it
    (item_queue_order) rather than its wide rows."""
    strengths = _strength_filter()
    flagged = ItemFlag.objects.filter(item__project=project, resolved=False).values_list("item_id", flat=True)
    return (
        Item.objects.filter(project=project, is_gold=False)
        .filter(Q(pk__in=flagged) | ~Q(pk__in=_hidden_ids(project)))
        .annotate(
            open_flag=ExpressionWrapper(Q(pk__in=flagged), output_field=BooleanField()),
            n=Count("annotations", filter=strengths),
            positive=Count("annotations", filter=_strength_filter(strength__gt=0)),
            negative=Count("annotations", filter=_strength_filter(strength__lt=0)),
            low=Min("annotations__strength", filter=strengths),
            high=Max("annotations__strength", filter=strengths),
            mean=Avg("annotations__strength", filter=strengths),
            **_model_sides(project),
        )
        .annotate(model_contradicts=_model_contradicts())
        .filter(Q(n__gte=2) | Q(open_flag=True) | Q(model_contradicts=True))
    )


def _model_sides(project: Project) -> dict[str, Exists]:
    """Whether the project's active reward model confidently prefers B, or A (see model_disagreements)."""
    from training.models import ItemScore  # training depends on curation's models; keep the import one-way

    scores = ItemScore.objects.filter(item=OuterRef("pk"), reward_model__project=project, reward_model__is_active=True)
    return {
        "model_b": Exists(scores.filter(margin__gt=MODEL_MARGIN_THRESHOLD)),
        "model_a": Exists(scores.filter(margin__lt=-MODEL_MARGIN_THRESHOLD)),
    }


def _model_contradicts() -> ExpressionWrapper:
    """The model confidently prefers the side the annotators' mean strength is against: such items enter the
    queue even when the annotators agree with each other."""
    return ExpressionWrapper(Q(model_b=True, mean__lt=0) | Q(model_a=True, mean__gt=0), output_field=BooleanField())


def _severity(queryset: QuerySet[Item]) -> QuerySet[Item]:
    as_float: FloatField = FloatField()
    split = Case(
        When(
            positive__gt=0,
            negative__gt=0,
            then=Value(2.0)
            + Value(2.0)
            * Cast(Least("positive", "negative"), as_float)
            / Cast(Greatest("positive", "negative"), as_float),
        ),
        default=Value(0.0),
        output_field=as_float,
    )
    spread = Case(
        When(spread__gt=STRENGTH_SPREAD_LIMIT, then=Cast(F("spread") - STRENGTH_SPREAD_LIMIT, as_float)),
        default=Value(0.0),
        output_field=as_float,
    )
    flag = Case(When(open_flag=True, then=Value(1.0)), default=Value(0.0), output_field=as_float)
    model = Case(
        When(model_contradicts=True, then=Value(MODEL_REASON_SCORE)), default=Value(0.0), output_field=as_float
    )
    return queryset.annotate(
        spread=ExpressionWrapper(F("high") - F("low"), output_field=IntegerField()),
        severity=(split + spread + flag + model) * Cast("n", as_float) / (Cast("n", as_float) + Value(1.0)),
    )


def _reason_filter(reason: str) -> Q:
    return {
        "sign": Q(positive__gt=0, negative__gt=0),
        "strength": Q(spread__gt=STRENGTH_SPREAD_LIMIT),
        "flagged": Q(open_flag=True),
        "model": Q(model_contradicts=True),
    }[reason]


def disagreement_queue(*, project: Project, reason: str = "", source: str = "") -> QuerySet[Item, dict[str, Any]]:
    """The queue in SQL: unresolved items with a sign split, a strength spread or an open flag, most severe
    first. Filtering by "rating" is not done here (see rating_spread_ids)."""
    queryset = _severity(candidates(project=project))
    if source:
        queryset = queryset.filter(source=source)
    if reason in ("sign", "strength", "flagged", "model"):
        queryset = queryset.filter(_reason_filter(reason))
    elif reason != "rating":
        any_reason = Q()
        for name in ("sign", "strength", "flagged", "model"):
            any_reason |= _reason_filter(name)
        queryset = queryset.filter(any_reason)
    # Only ids and aggregates: the wide columns (texts, JSON) stay out of the grouping.
    return queryset.order_by("-severity", "-n", "id").values(*QUEUE_FIELDS)


def rating_spreads(item_ids: Iterable[int]) -> dict[int, list[str]]:
    """For each item, the (response, attribute) pairs whose ratings differ by more than 2, from one query."""
    values: dict[tuple[int, str, str], list[int]] = defaultdict(list)
    rows = Annotation.objects.filter(
        item_id__in=list(item_ids), origin__in=[Annotation.Origin.HUMAN, Annotation.Origin.IMPORTED]
    ).values_list("item_id", "ratings")
    for item_id, ratings in rows:
        for side, given in (ratings or {}).items() if isinstance(ratings, Mapping) else ():
            for name, value in (given or {}).items() if isinstance(given, Mapping) else ():
                if isinstance(value, int) and not isinstance(value, bool):
                    values[(item_id, side, name)].append(value)
    spreads: dict[int, list[str]] = defaultdict(list)
    for (item_id, side, name), given in sorted(values.items()):
        if max(given) - min(given) > RATING_SPREAD_LIMIT:
            spreads[item_id].append(f"{side.upper()} {name} {min(given)}–{max(given)}")
    return dict(spreads)


def rating_spread_ids(queryset: QuerySet[Item, dict[str, Any]]) -> Iterator[int]:
    """Ids of the queryset's items with a rating spread, in its order; one query per chunk of items."""
    ids = list(queryset.values_list("id", flat=True))
    for start in range(0, len(ids), SCAN_CHUNK):
        chunk = ids[start : start + SCAN_CHUNK]
        spreads = rating_spreads(chunk)
        yield from (item_id for item_id in chunk if item_id in spreads)


def model_disagreements(*, project: Project, item_ids: Iterable[int]) -> dict[int, Reason]:
    """Items whose score by the project's active reward model prefers the other side than the annotators' mean
    strength (annotate.selectors.preference_means), by more than MODEL_MARGIN_THRESHOLD: one query for the
    scores, one for the means. Nothing without an active model or scores (training.services.scoring)."""
    from training.models import ItemScore  # training depends on curation's models; keep the import one-way

    ids = list(item_ids)
    margins = dict(
        ItemScore.objects.filter(reward_model__project=project, reward_model__is_active=True, item_id__in=ids)
        .filter(Q(margin__gt=MODEL_MARGIN_THRESHOLD) | Q(margin__lt=-MODEL_MARGIN_THRESHOLD))
        .values_list("item_id", "margin")
    )
    if not margins:
        return {}
    means = preference_means(project=project, item_ids=list(margins))
    reasons = {}
    for item_id, margin in margins.items():
        mean = means.get(item_id)
        if mean is None or mean == 0 or (mean > 0) == (margin > 0):
            continue
        model_side, human_side = ("B", "A") if margin > 0 else ("A", "B")
        detail = f"model prefers {model_side} by {abs(margin):.2f}; annotators prefer {human_side} ({mean:+.2f})"
        reasons[item_id] = Reason("model", MODEL_REASON_SCORE, detail)
    return reasons


def _reasons(row: Mapping[str, Any], ratings: list[str], model: Reason | None) -> list[Reason]:
    reasons = []
    positive, negative = row["positive"], row["negative"]
    if positive and negative:
        even = min(positive, negative) / max(positive, negative)
        reasons.append(Reason("sign", 2 + 2 * even, f"{negative} prefer A, {positive} prefer B"))
    if row["n"] >= 2 and row["high"] - row["low"] > STRENGTH_SPREAD_LIMIT:
        spread = row["high"] - row["low"]
        reasons.append(Reason("strength", spread - 2.0, f"from {row['low']:+d} to {row['high']:+d}"))
    if ratings:
        reasons.append(Reason("rating", 1.0, ", ".join(ratings)))
    if row["open_flag"]:
        reasons.append(Reason("flagged", 1.0, "open flag"))
    if model is not None:
        reasons.append(model)
    return reasons


def queue_entries(*, project: Project, rows: Sequence[Mapping[str, Any]]) -> list[QueueEntry]:
    """A page of queue rows (the SQL aggregates) as entries with their items and reasons, the rating spread
    and the model hook added: one query for the items, one for their ratings."""
    ids = [row["id"] for row in rows]
    items = Item.objects.filter(pk__in=ids).only("id", "project_id", "prompt", "source", "annotation_count")
    by_id = {item.pk: item for item in items}
    spreads = rating_spreads(ids)
    models = model_disagreements(project=project, item_ids=ids)
    entries = []
    for row in rows:
        reasons = _reasons(row, spreads.get(row["id"], []), models.get(row["id"]))
        n = row["n"]
        severity = sum(reason.score for reason in reasons) * (n / (n + 1) if n else 1)
        entries.append(QueueEntry(item=by_id[row["id"]], annotations=n, severity=round(severity, 2), reasons=reasons))
    return entries


def review_queue_page(
    *, project: Project, reason: str = "", source: str = "", page: Any = 1
) -> tuple[Page[Any], list[QueueEntry]]:
    """One page of the review queue and its entries."""
    queryset = disagreement_queue(project=project, reason=reason, source=source)
    if reason == "rating":
        id_page = Paginator(list(rating_spread_ids(queryset)), QUEUE_PAGE_SIZE).get_page(page)
        by_id = {row["id"]: row for row in queryset.filter(pk__in=list(id_page.object_list))}
        rows = [by_id[item_id] for item_id in id_page.object_list if item_id in by_id]
        return id_page, queue_entries(project=project, rows=rows)
    row_page = Paginator(queryset, QUEUE_PAGE_SIZE).get_page(page)
    return row_page, queue_entries(project=project, rows=list(row_page.object_list))


def project_sources(*, project: Project) -> list[str]:
    return list(
        Item.objects.filter(project=project)
        .exclude(source="")
        .values_list("source", flat=True)
        .distinct()
        .order_by("source")
    )


@dataclass(frozen=True)
class ItemConsensus:
    """What the annotations of one item add up to, by each aggregation rule."""

    count: int
    mean: float | None
    weighted_mean: float | None
    majority: int | None
    ratings_mean: dict[str, dict[str, float]]
    ratings_helpsteer2: dict[str, dict[str, float]]
    spans: list[SpanConsensus]


def item_consensus(*, item: Item) -> ItemConsensus:
    """Consensus of an item's annotations: mean and weighted mean strength (Membership.weight discounts an
    annotator; imported annotators count fully), majority side, ratings by mean and by HelpSteer2's rule, and
    error spans merged per category with their per-character agreement."""
    weights = dict(Membership.objects.filter(project_id=item.project_id).values_list("user_id", "weight"))
    rows = list(
        Annotation.objects.filter(item=item).order_by("id").values_list("annotator_id", "strength", "ratings", "spans")
    )
    rated = [(annotator, strength) for annotator, strength, _, _ in rows if strength is not None]
    strengths = [float(strength) for _, strength in rated]
    ratings = [given for _, _, given, _ in rows if given]
    return ItemConsensus(
        count=len(rows),
        mean=mean_strength(strengths),
        weighted_mean=mean_strength(strengths, [weights.get(annotator, 1.0) for annotator, _ in rated]),
        majority=majority_sign(strengths),
        ratings_mean=ratings_consensus(ratings, "mean"),
        ratings_helpsteer2=ratings_consensus(ratings, "helpsteer2"),
        spans=spans_merge([spans for _, _, _, spans in rows]),
    )
