"""The disagreement queue: which items need a curator, why, and how badly.

The rules (which items, their reasons and severity) are annotate.rules'; curation.rule_sql mirrors them in SQL
over each item's label summary columns, so the queue is filtered, ordered and paginated in the database, by the
severity the page shows. Gold items are left out: their disagreements are measured against the gold answer
(annotate.selectors.gold_scores).

The project's reward model takes part through ModelScores, handed in by the view: training depends on curation,
so curation reads training's scores only as a queryset it is given.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import F, QuerySet

from annotate import rules
from annotate.models import LABEL_COUNTED_FIELDS, REVIEW_REASON_BITS, Annotation, Item, Membership, Project
from annotate.selectors import item_label_summary
from curation.aggregation import SpanConsensus, majority_sign, mean_strength, ratings_consensus, spans_merge
from curation.models import Adjudication

REASONS = rules.REASON_LABELS
# The reasons a model's disagreement is given under; which one, the model the view hands in says.
MODEL_REASONS = ("model", "ensemble")
QUEUE_PAGE_SIZE = 50
# What item_label_summary reads from a row: the counted columns and the extra annotations a curator asked for.
SUMMARY_FIELDS = (*LABEL_COUNTED_FIELDS, "extra_overlap")
QUEUE_FIELDS = ("id", *SUMMARY_FIELDS, "review_reasons", "review_severity", "model_probability_b")


@dataclass(frozen=True)
class ModelScores:
    """The project's active reward model as the queue sees it: its scores (a queryset of rows with item_id,
    probability_b and margin) and the probability of the other side above which its disagreement counts."""

    scores: QuerySet[Any]
    threshold: float
    # Who the model is, in the reason's words, and the reason its disagreement is given under: the project's
    # active model ("model"), or a running curation campaign's ensemble ("ensemble").
    name: str = "model"
    reason: str = "model"
    # Which scores these are (the model and the scoring that wrote them): when it changes, the items' review
    # columns are recomputed (curation.services.review_state.review_queue_sync).
    key: str = ""


@dataclass
class QueueEntry:
    item: Item
    annotations: int
    severity: float
    reasons: list[rules.Reason] = field(default_factory=list)
    model_probability_b: float | None = None
    model_margin: float | None = None


def disagreement_queue(
    *, project: Project, reason: str = "", source: str = "", model: ModelScores | None = None
) -> QuerySet[Item, dict[str, Any]]:
    """The queue: the items annotate.rules.in_review_queue takes, most severe first, as rows of their summary
    columns, reasons and severity (QUEUE_FIELDS); narrowed to one reason or source if asked.

    It reads the review columns curation.services.review_state keeps on each item (through the partial index
    item_review_order), as computed for the model the project's review_key names: the view brings them up to
    date with the queue model first (training.services.review_sync)."""
    if reason in MODEL_REASONS and (model is None or model.reason != reason):
        return Item.objects.none().values(*QUEUE_FIELDS)  # that model is not the one the queue weighs now
    queue = Item.objects.filter(project=project, review_severity__isnull=False)
    if source:
        queue = queue.filter(source=source)
    if reason in REVIEW_REASON_BITS:
        queue = queue.alias(reason_bit=F("review_reasons").bitand(REVIEW_REASON_BITS[reason])).filter(reason_bit__gt=0)
    return queue.order_by("-review_severity", "-annotation_count", "id").values(*QUEUE_FIELDS)


def _has_reason(row: Mapping[str, Any], code: str) -> bool:
    return bool(row["review_reasons"] & REVIEW_REASON_BITS[code])


def rating_spreads(item_ids: Iterable[int]) -> dict[int, list[str]]:
    """For each item, the (response, attribute) pairs whose ratings differ by more than the limit, from one query:
    the detail of a rating spread reason."""
    values: dict[tuple[int, str, str], list[int]] = defaultdict(list)
    rows = Annotation.objects.filter(item_id__in=list(item_ids)).values_list("item_id", "ratings")
    for item_id, ratings in rows:
        for side, given in (ratings or {}).items() if isinstance(ratings, Mapping) else ():
            for name, value in (given or {}).items() if isinstance(given, Mapping) else ():
                if isinstance(value, int) and not isinstance(value, bool):
                    values[(item_id, side, name)].append(value)
    spreads: dict[int, list[str]] = defaultdict(list)
    for (item_id, side, name), given in sorted(values.items()):
        if max(given) - min(given) > rules.RATING_SPREAD_LIMIT:
            spreads[item_id].append(f"{side.upper()} {name} {min(given)}–{max(given)}")
    return dict(spreads)


def model_detail(probability_b: float | None, margin: float | None, name: str = "model") -> str:
    """The model's view of an item in words: which side, how sure (calibrated), and its reward margin B - A."""
    if probability_b is None:
        return ""
    side, sure = ("B", probability_b) if probability_b >= 0.5 else ("A", 1 - probability_b)
    gap = f", reward B − A {margin:+.2f}" if margin is not None else ""
    return f"{name} prefers {side} with p = {sure:.2f}{gap}"


def queue_entries(
    *, project: Project, rows: Sequence[Mapping[str, Any]], model: ModelScores | None = None
) -> list[QueueEntry]:
    """A page of queue rows as entries with their items, reasons and severity (annotate.rules, which the SQL order
    mirrors): one query for the items, one for the rating details, one for the model's margins."""
    ids = [row["id"] for row in rows]
    items = Item.objects.filter(pk__in=ids).only("id", "project_id", "number", "prompt", "source", "annotation_count")
    by_id = {item.pk: item for item in items}
    spreads = rating_spreads(ids)
    margins = dict(model.scores.filter(item_id__in=ids).values_list("item_id", "margin")) if model else {}
    entries = []
    for row in rows:
        summary = item_label_summary(row, overlap=project.overlap)
        found = rules.reasons(
            summary,
            open_flag=_has_reason(row, "flagged"),
            model_contradicts=_has_reason(row, "model") and model is not None,
            rating_detail=", ".join(spreads.get(row["id"], [])),
            model_detail=model_detail(
                row["model_probability_b"], margins.get(row["id"]), model.name if model else "model"
            ),
            model_reason=model.reason if model else "model",
        )
        entries.append(
            QueueEntry(
                item=by_id[row["id"]],
                annotations=summary.annotations,
                severity=round(rules.severity(summary, found), 2),
                reasons=found,
                model_probability_b=row["model_probability_b"],
                model_margin=margins.get(row["id"]),
            )
        )
    return entries


def review_queue_page(
    *, project: Project, reason: str = "", source: str = "", page: Any = 1, model: ModelScores | None = None
) -> tuple[Page[Any], list[QueueEntry]]:
    """One page of the review queue and its entries."""
    queryset = disagreement_queue(project=project, reason=reason, source=source, model=model)
    row_page = Paginator(queryset, QUEUE_PAGE_SIZE).get_page(page)
    return row_page, queue_entries(project=project, rows=list(row_page.object_list), model=model)


_SOURCES_SQL = """
WITH RECURSIVE found(source) AS (
    (SELECT source FROM {item} WHERE project_id = %(project)s AND source > '' ORDER BY source LIMIT 1)
    UNION ALL
    SELECT (SELECT source FROM {item} WHERE project_id = %(project)s AND source > found.source ORDER BY source LIMIT 1)
    FROM found WHERE found.source IS NOT NULL
)
SELECT source FROM found WHERE source IS NOT NULL
"""


def project_sources(*, project: Project) -> list[str]:
    """The project's distinct sources, in order: one index probe per source (a loose index scan over item_source),
    where DISTINCT would read every item."""
    with connection.cursor() as cursor:
        cursor.execute(_SOURCES_SQL.format(item=Item._meta.db_table), {"project": project.pk})
        return [row[0] for row in cursor.fetchall()]


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
    state: str = ""  # annotate.rules.item_state


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
    latest = Adjudication.objects.filter(item=item).order_by("-created_at", "-id").values_list("decision", flat=True)
    return ItemConsensus(
        state=rules.item_state(item_label_summary(item, overlap=item.project.overlap), latest.first()),
        count=len(rows),
        mean=mean_strength(strengths),
        weighted_mean=mean_strength(strengths, [weights.get(annotator, 1.0) for annotator, _ in rated]),
        majority=majority_sign(strengths),
        ratings_mean=ratings_consensus(ratings, "mean"),
        ratings_helpsteer2=ratings_consensus(ratings, "helpsteer2"),
        spans=spans_merge([spans for _, _, _, spans in rows]),
    )
