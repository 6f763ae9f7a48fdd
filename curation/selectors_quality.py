"""Reads for the annotator-quality and dashboard pages: agreement, per-annotator quality, item states.

Annotations are read in one streamed query (human and imported ones with a strength) and aggregated in numpy:
a units x annotators matrix of strengths, NaN where an annotator did not label an item.

The annotators page and the dashboard show a QualityReport that a worker computed (quality_report, run by
curation.services.quality) and cached in the project's ProjectQuality row: the annotators' figures and, in the
same pass, the dashboard's (items by state and by pool, the strengths' histogram, agreement per day). The pages
read that row (quality_page with the project's memberships, dashboard_page), never the annotations.
"""

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from django.contrib.auth import get_user_model
from django.db.models import Case, Count, F, FloatField, Func, Max, Q, When

from annotate.models import Annotation, Assignment, GoldAnswer, Item, Membership, Project, Role
from annotate.rules import ItemState, Pool
from annotate.selectors import gold_scores
from curation import rule_sql
from curation.aggregation import DawidSkene, sign_dawid_skene
from curation.metrics import fleiss_kappa, krippendorff_alpha, modal_units, pairwise_agreement
from curation.models import Adjudication, ProjectQuality

# Outlier rules, shown on the quality page.
FAST_FRACTION = 1 / 3
LOW_AGREEMENT_MARGIN = 0.15
LOW_GOLD_ACCURACY = 0.6
HIGH_SKIP_RATE = 0.3
MIN_COMPARED = 5


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


@dataclass
class LabelTable:
    """A project's strengths as numpy arrays: one row per annotation, plus the units x annotators matrix."""

    item_ids: npt.NDArray[np.int64]  # distinct items, the matrix rows
    annotator_ids: npt.NDArray[np.int64]  # distinct annotators, the matrix columns
    row_item: npt.NDArray[np.int64]  # per annotation: row index
    row_annotator: npt.NDArray[np.int64]  # per annotation: column index
    strength: npt.NDArray[np.float64]
    seconds: npt.NDArray[np.float64]  # NaN for imported annotations (no time recorded)
    created: npt.NDArray[np.float64]  # POSIX seconds
    ratings: list[dict[str, dict[str, int]]]

    @property
    def matrix(self) -> npt.NDArray[np.float64]:
        matrix = np.full((len(self.item_ids), len(self.annotator_ids)), np.nan)
        matrix[self.row_item, self.row_annotator] = self.strength
        return matrix

    @property
    def compact(self) -> npt.NDArray[np.float64]:
        """The strengths as `matrix` holds them, but with each row's values packed to the left (compacted)."""
        return compacted(self.row_item, self.strength, len(self.item_ids))


def compacted(rows: npt.NDArray[np.int64], values: npt.NDArray[np.float64], units: int) -> npt.NDArray[np.float64]:
    """A units x k matrix (k: the most values one unit has) of each unit's values, in no particular column, NaN
    after them. Agreement measures (alpha, pairwise agreement, Fleiss' kappa) count values per unit and never ask
    which coder gave which, so they read it as they read units x coders, at k/coders of the memory (3 of 100)."""
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    slot = np.arange(len(ordered)) - np.searchsorted(ordered, ordered, side="left")
    matrix = np.full((units, int(slot.max()) + 1 if len(slot) else 0), np.nan)
    matrix[ordered, slot] = values[order]
    return matrix


def label_table(*, project: Project, chunk_size: int = 5000) -> LabelTable:
    rows = (
        Annotation.objects.filter(
            item__project=project,
            origin__in=[Annotation.Origin.HUMAN, Annotation.Origin.IMPORTED],
            strength__isnull=False,
        )
        .order_by()
        # Numbers from the database rather than datetimes and origins to convert per row (a million rows).
        .annotate(
            human_seconds=Case(
                When(origin=Annotation.Origin.HUMAN, then=F("seconds_spent")), default=None, output_field=FloatField()
            ),
            created_epoch=Func(
                F("created_at"), template="EXTRACT(EPOCH FROM %(expressions)s)::float8", output_field=FloatField()
            ),
        )
        .values_list("item_id", "annotator_id", "strength", "ratings", "human_seconds", "created_epoch")
    )
    items, annotators, strengths, seconds, created, ratings = [], [], [], [], [], []
    for item_id, annotator_id, strength, given, spent, created_at in rows.iterator(chunk_size=chunk_size):
        items.append(item_id)
        annotators.append(annotator_id)
        strengths.append(strength)
        seconds.append(spent)  # None (NaN below) for imported annotations
        created.append(created_at)
        ratings.append(given or {})
    item_ids, row_item = np.unique(np.asarray(items, dtype=np.int64), return_inverse=True)
    annotator_ids, row_annotator = np.unique(np.asarray(annotators, dtype=np.int64), return_inverse=True)
    return LabelTable(
        item_ids=item_ids,
        annotator_ids=annotator_ids,
        row_item=row_item.astype(np.int64),
        row_annotator=row_annotator.astype(np.int64),
        strength=np.asarray(strengths, dtype=np.float64),
        seconds=np.asarray(seconds, dtype=np.float64),
        created=np.asarray(created, dtype=np.float64),
        ratings=ratings,
    )


@dataclass(frozen=True)
class AttributeAgreement:
    name: str
    alpha: float | None
    units: int


@dataclass(frozen=True)
class ProjectAgreement:
    items: int  # items with at least two strengths
    alpha_strength: float | None  # ordinal
    alpha_sign: float | None  # nominal
    pairwise: float | None  # on signs
    fleiss: float | None  # on signs, over the items with the usual number of annotators
    fleiss_items: int
    attributes: list[AttributeAgreement]


def agreement_of(table: LabelTable) -> ProjectAgreement:
    matrix = table.compact
    signs = np.sign(matrix)
    modal = modal_units(signs)
    return ProjectAgreement(
        items=int(((~np.isnan(matrix)).sum(axis=1) >= 2).sum()),
        alpha_strength=_finite(krippendorff_alpha(matrix, "ordinal")),
        alpha_sign=_finite(krippendorff_alpha(signs, "nominal")),
        pairwise=_finite(pairwise_agreement(signs)),
        fleiss=_finite(fleiss_kappa(modal)) if len(modal) else None,
        fleiss_items=len(modal),
        attributes=_attribute_agreement(table),
    )


def _attribute_agreement(table: LabelTable) -> list[AttributeAgreement]:
    """Ordinal alpha per rating attribute; the units are (item, response) pairs. One pass over the annotations
    per (response, attribute), each a list comprehension, rather than Python code per rating."""
    sides = sorted({side for given in table.ratings for side in given})
    names = sorted({name for given in table.ratings for values in given.values() for name in values})
    result = []
    for name in names:
        units, found = [], []
        for side in sides:
            # NaN where this annotation did not rate this attribute of this response (None becomes NaN).
            values = np.array([(given.get(side) or {}).get(name) for given in table.ratings], dtype=np.float64)
            present = ~np.isnan(values)
            units.append(2 * table.row_item[present] + (side == "b"))
            found.append(values[present])
        matrix = compacted(np.concatenate(units), np.concatenate(found), 2 * len(table.item_ids))
        pairable = int(((~np.isnan(matrix)).sum(axis=1) >= 2).sum())
        result.append(AttributeAgreement(name, _finite(krippendorff_alpha(matrix, "ordinal")), pairable))
    return result


def project_agreement(*, project: Project) -> ProjectAgreement:
    return agreement_of(label_table(project=project))


@dataclass
class AnnotatorQuality:
    annotator_id: int
    username: str
    membership_id: int | None  # None for imported annotators, who are not members
    weight: float
    paused: bool
    annotations: int
    compared: int  # annotations on items that others labelled too
    agreement: float | None  # with the leave-one-out consensus sign
    gold_accuracy: float | None
    median_seconds: float | None
    skip_rate: float | None
    # Dawid-Skene's estimate of how often this annotator's preferred side is the true one.
    reliability: float | None = None
    flags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AgreementPoint:
    day: date
    items: int
    agreement: float


@dataclass(frozen=True)
class DashboardFigures:
    """The dashboard's figures, computed in the same refresh as the annotators': items by state (gold items left
    out) and by pool (gold items in), how many annotations gave each strength, and agreement per day."""

    states: dict[str, int]
    pools: dict[str, int]
    histogram: dict[int, int]
    over_time: list[AgreementPoint]


@dataclass(frozen=True)
class QualityReport:
    agreement: ProjectAgreement
    annotators: list[AnnotatorQuality]
    median_seconds: float | None
    mean_agreement: float | None
    labels: int = 0  # annotations with a preference it was computed over
    dashboard: DashboardFigures | None = None  # None in a report cached before the dashboard's figures were


# The steps of quality_report, for the progress a worker reports while it computes one.
QUALITY_STEPS = (
    "reading the labels",
    "agreement",
    "Dawid-Skene",
    "gold accuracy, skips, item states and pools",
    "each annotator",
)
Progress = Callable[[int, str], None]  # (step number from 1, its name)


def _leave_one_out(table: LabelTable, weights: npt.NDArray[np.float64]) -> tuple[np.ndarray, np.ndarray]:
    """Per annotation: whether its sign matches the sign of the others' weighted mean strength, and whether
    there were others (with a positive weight) to compare with."""
    w = weights[table.row_annotator]
    weighted_sum = np.zeros(len(table.item_ids))
    weight_total = np.zeros(len(table.item_ids))
    np.add.at(weighted_sum, table.row_item, w * table.strength)
    np.add.at(weight_total, table.row_item, w)
    others_weight = weight_total[table.row_item] - w
    compared = others_weight > 1e-9
    others_mean = (weighted_sum[table.row_item] - w * table.strength) / np.where(compared, others_weight, 1)
    return np.sign(table.strength) == np.sign(others_mean), compared


def quality_report(*, project: Project, progress: Progress | None = None) -> QualityReport:
    """Every figure of the annotators page and the dashboard, from every annotation of the project: a worker's
    job (a minute or so on a big project), whose result ProjectQuality caches. `progress` hears of each step as
    it starts."""
    tell = progress or (lambda step, name: None)
    tell(1, QUALITY_STEPS[0])
    table = label_table(project=project)
    members = {
        user_id: (membership_id, weight, paused)
        for user_id, membership_id, weight, paused in Membership.objects.filter(project=project)
        .filter(Q(role=Role.ANNOTATOR) | Q(user_id__in=table.annotator_ids.tolist()))
        .values_list("user_id", "id", "weight", "is_paused")
    }
    ids = sorted(set(table.annotator_ids.tolist()) | set(members))
    names = dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username"))
    weights = np.array([members.get(int(a), (None, 1.0, False))[1] for a in table.annotator_ids], dtype=np.float64)
    tell(2, QUALITY_STEPS[1])
    agreement = agreement_of(table)
    histogram, over_time = strength_histogram(table), agreement_over_time(table)
    agrees, compared = _leave_one_out(table, weights)
    tell(3, QUALITY_STEPS[2])
    reliability = _reliability(table)
    tell(4, QUALITY_STEPS[3])
    gold = {score.annotator: score.preference_accuracy for score in gold_scores(project=project)}
    finished = _finished_counts(project=project)
    states, pools = state_and_pool_counts(project=project)
    tell(5, QUALITY_STEPS[4])
    column = {int(a): i for i, a in enumerate(table.annotator_ids)}
    annotators = []
    for annotator_id in ids:
        membership_id, weight, paused = members.get(annotator_id, (None, 1.0, False))
        mine = table.row_annotator == column.get(annotator_id, -1)
        seconds = table.seconds[mine & ~np.isnan(table.seconds)]
        done, skipped = finished.get(annotator_id, (0, 0))
        annotators.append(
            AnnotatorQuality(
                annotator_id=annotator_id,
                username=names.get(annotator_id, "?"),
                membership_id=membership_id,
                weight=weight,
                paused=paused,
                annotations=int(mine.sum()),
                compared=int((mine & compared).sum()),
                agreement=float(agrees[mine & compared].mean()) if (mine & compared).any() else None,
                gold_accuracy=gold.get(names.get(annotator_id, "")),
                median_seconds=float(np.median(seconds)) if len(seconds) else None,
                skip_rate=skipped / done if done else None,
                reliability=reliability.get(annotator_id),
            )
        )
    human_seconds = table.seconds[~np.isnan(table.seconds)]
    report = QualityReport(
        agreement=agreement,
        annotators=annotators,
        median_seconds=float(np.median(human_seconds)) if len(human_seconds) else None,
        mean_agreement=_mean([a.agreement for a in annotators if a.compared >= MIN_COMPARED]),
        labels=len(table.strength),
        dashboard=DashboardFigures(states=states, pools=pools, histogram=histogram, over_time=over_time),
    )
    _flag_outliers(report)
    return report


def quality_report_dump(report: QualityReport) -> dict[str, Any]:
    """The report as JSON for ProjectQuality.report (every figure is a finite float, an int, a string or None)."""
    return {**dataclasses.asdict(report), "dashboard": _dashboard_dump(report.dashboard)}


def quality_report_load(data: dict[str, Any]) -> QualityReport:
    return QualityReport(
        agreement=_agreement_load(data["agreement"]),
        annotators=[AnnotatorQuality(**annotator) for annotator in data["annotators"]],
        median_seconds=data["median_seconds"],
        mean_agreement=data["mean_agreement"],
        labels=data.get("labels", 0),
        dashboard=_dashboard_load(data.get("dashboard")),
    )


def quality_report_has_dashboard(data: dict[str, Any] | None) -> bool:
    """Whether a cached report holds the dashboard's figures (one cached before them does not)."""
    return data is not None and data.get("dashboard") is not None


def _agreement_load(data: dict[str, Any]) -> ProjectAgreement:
    attributes = [AttributeAgreement(**attribute) for attribute in data["attributes"]]
    return ProjectAgreement(**{**data, "attributes": attributes})


def _dashboard_dump(figures: DashboardFigures | None) -> dict[str, Any] | None:
    """Counts as [key, count] pairs, since jsonb keeps neither the order of keys nor integer keys; days as ISO
    dates."""
    if figures is None:
        return None
    return {
        "states": list(figures.states.items()),
        "pools": list(figures.pools.items()),
        "histogram": sorted(figures.histogram.items()),
        "over_time": [[point.day.isoformat(), point.items, point.agreement] for point in figures.over_time],
    }


def _dashboard_load(data: dict[str, Any] | None) -> DashboardFigures | None:
    if data is None:
        return None
    return DashboardFigures(
        states={str(state): int(count) for state, count in data["states"]},
        pools={str(pool): int(count) for pool, count in data["pools"]},
        histogram={int(value): int(count) for value, count in data["histogram"]},
        over_time=[AgreementPoint(date.fromisoformat(day), items, value) for day, items, value in data["over_time"]],
    )


def quality_fingerprint(*, project: Project) -> str:
    """A digest of what the report depends on: the annotations (how many, the last change), skips, gold answers
    and the members' weights; for the dashboard's states and pools also the items (how many, the newest, how many
    gold), the overlap and the curators' decisions. A worker compares it with the cached report's to skip
    recomputing an unchanged project. Read on the worker: it counts the project's annotations and items."""
    annotations = Annotation.objects.filter(item__project=project).aggregate(n=Count("id"), last=Max("updated_at"))
    skips = Assignment.objects.filter(item__project=project, status=Assignment.Status.SKIPPED).count()
    gold = GoldAnswer.objects.filter(item__project=project).order_by("item_id")
    members = Membership.objects.filter(project=project).order_by("user_id")
    items = Item.objects.filter(project=project).aggregate(n=Count("id"), last=Max("id"))
    decisions = Adjudication.objects.filter(item__project=project).aggregate(n=Count("id"), last=Max("id"))
    last: datetime | None = annotations["last"]
    state = [
        annotations["n"],
        last.isoformat() if last else None,
        skips,
        list(gold.values_list("item_id", "preference_sign", "ratings")),
        list(members.values_list("user_id", "weight", "role")),
        [items["n"], items["last"], Item.objects.filter(project=project, is_gold=True).count(), project.overlap],
        [decisions["n"], decisions["last"]],
    ]
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CachedFigures:
    """A page of figures a worker cached: the project's ProjectQuality row (the figures' age, what a refresh is
    doing; None before the first request)."""

    quality: ProjectQuality | None

    @property
    def in_flight(self) -> bool:
        return self.quality is not None and self.quality.status in (
            ProjectQuality.Status.QUEUED,
            ProjectQuality.Status.RUNNING,
        )

    @property
    def percent(self) -> int:
        """How far the refresh on its way has got, by steps finished."""
        quality = self.quality
        if quality is None or not quality.steps or quality.status != ProjectQuality.Status.RUNNING:
            return 0
        return round(100 * max(quality.step - 1, 0) / quality.steps)

    @property
    def checked_since(self) -> datetime | None:
        """When a worker last found the labels unchanged since the figures were computed."""
        quality = self.quality
        if quality is None or quality.checked_at is None or quality.computed_at is None:
            return None
        return quality.checked_at if quality.checked_at > quality.computed_at else None

    @property
    def stamp(self) -> str:
        """Which result is shown, so that a poll can tell when a newer one is ready."""
        computed = self.quality.computed_at if self.quality is not None else None
        return str(round(computed.timestamp() * 1_000_000)) if computed else ""


@dataclass(frozen=True)
class QualityPage(CachedFigures):
    """What the annotators page shows: the cached report (None until a worker has computed one), and every
    annotator with their current weight and pause merged in."""

    report: QualityReport | None
    annotators: list[AnnotatorQuality]


def quality_page(*, project: Project, quality: ProjectQuality | None) -> QualityPage:
    """The cached report with the members as they are now: one query over the project's memberships, whatever
    the number of annotations. Members who joined since the report was computed are listed without figures."""
    report = quality_report_load(quality.report) if quality is not None and quality.report is not None else None
    cached = {annotator.annotator_id: annotator for annotator in report.annotators} if report else {}
    members = (
        Membership.objects.filter(project=project)
        .filter(Q(role=Role.ANNOTATOR) | Q(user_id__in=list(cached)))
        .values_list("user_id", "id", "weight", "is_paused", "user__username")
    )
    live = {user_id: (membership_id, weight, paused, name) for user_id, membership_id, weight, paused, name in members}
    annotators = []
    for annotator_id in sorted(set(cached) | set(live)):
        shown = cached.get(annotator_id) or AnnotatorQuality(
            annotator_id, "?", None, 1.0, False, 0, 0, None, None, None, None
        )
        membership_id, weight, paused, name = live.get(annotator_id, (None, 1.0, False, shown.username))
        annotators.append(
            dataclasses.replace(shown, username=name, membership_id=membership_id, weight=weight, paused=paused)
        )
    return QualityPage(quality=quality, report=report, annotators=annotators)


def _sign_model(table: LabelTable) -> DawidSkene:
    """Dawid-Skene over the table's preferred sides (A, tie, B), from its labels as triples."""
    units, coders = len(table.item_ids), len(table.annotator_ids)
    return sign_dawid_skene(table.row_item, table.row_annotator, table.strength, units=units, coders=coders)


def _reliability(table: LabelTable) -> dict[int, float]:
    """Each annotator's Dawid-Skene reliability on the preferred side; empty with too little to go on."""
    if len(table.annotator_ids) < 2 or len(table.item_ids) < 2:
        return {}
    reliability = _sign_model(table).reliability
    return {int(a): float(r) for a, r in zip(table.annotator_ids, reliability, strict=True)}


def sign_posteriors(*, project: Project) -> dict[int, tuple[float, float, float]]:
    """Each labelled item's Dawid-Skene posterior over (A, tie, B), fitted on every strength of the project, so
    each annotator's reliability is learnt from all the items they labelled (the "dawid_skene" consensus rule)."""
    table = label_table(project=project)
    if not len(table.item_ids):
        return {}
    posteriors = _sign_model(table).posteriors
    return {
        int(item): (float(p[0]), float(p[1]), float(p[2])) for item, p in zip(table.item_ids, posteriors, strict=True)
    }


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _finished_counts(*, project: Project) -> dict[int, tuple[int, int]]:
    """Per annotator: assignments finished (submitted or skipped) and of those skipped."""
    rows = (
        Assignment.objects.filter(
            item__project=project, status__in=[Assignment.Status.SUBMITTED, Assignment.Status.SKIPPED]
        )
        .values("annotator_id")
        .annotate(finished=Count("id"), skipped=Count("id", filter=Q(status=Assignment.Status.SKIPPED)))
        .order_by()
    )
    return {row["annotator_id"]: (row["finished"], row["skipped"]) for row in rows}


def _flag_outliers(report: QualityReport) -> None:
    for annotator in report.annotators:
        low = (
            report.mean_agreement is not None
            and annotator.agreement is not None
            and annotator.compared >= MIN_COMPARED
            and annotator.agreement < report.mean_agreement - LOW_AGREEMENT_MARGIN
        )
        fast = (
            report.median_seconds is not None
            and annotator.median_seconds is not None
            and annotator.median_seconds < FAST_FRACTION * report.median_seconds
        )
        if low and fast:
            annotator.flags.append("fast and low agreement")
        elif low:
            annotator.flags.append("low agreement")
        if annotator.gold_accuracy is not None and annotator.gold_accuracy < LOW_GOLD_ACCURACY:
            annotator.flags.append("low gold accuracy")
        if annotator.skip_rate is not None and annotator.skip_rate > HIGH_SKIP_RATE:
            annotator.flags.append("skips often")


# Dashboard.


def item_states(*, project: Project) -> dict[str, int]:
    """How many (non-gold) items are in each state (annotate.rules.item_state), counted in the database
    (curation.rule_sql mirrors the rule)."""
    rows = (
        Item.objects.filter(project=project, is_gold=False)
        .annotate(spread=rule_sql.strength_spread(), state=rule_sql.item_state(project))
        .values("state")
        .annotate(count=Count("id"))
        .order_by()
    )
    counts = dict.fromkeys(ItemState, 0)
    for row in rows:
        counts[ItemState(row["state"])] = row["count"]
    return {str(state): count for state, count in counts.items()}


def _state_pool_rows(project: Project) -> list[dict[str, Any]]:
    """The project's items counted by (is_gold, state, pool) in one GROUP BY (curation.rule_sql mirrors the
    rules): one pass over the items for both the states and the pools."""
    return list(
        rule_sql.with_pools(Item.objects.filter(project=project), project)
        .values("is_gold", "state", "pool")
        .annotate(count=Count("id"))
        .order_by()
    )


def state_and_pool_counts(*, project: Project) -> tuple[dict[str, int], dict[str, int]]:
    """item_states and pool_counts from one pass over the items (a worker's, for the cached dashboard)."""
    states, pools = dict.fromkeys(ItemState, 0), dict.fromkeys(Pool, 0)
    for row in _state_pool_rows(project):
        if not row["is_gold"]:
            states[ItemState(row["state"])] += row["count"]
        pools[Pool(row["pool"])] += row["count"]
    return {str(state): n for state, n in states.items()}, {str(pool): n for pool, n in pools.items()}


def pool_counts(*, project: Project) -> dict[str, int]:
    """How many of the project's items (gold ones too) are in each pool (annotate.rules.pool): gold, with humans,
    silver, unlabelled, excluded; counted now (a scan of the project: pages read pool_counts_cached)."""
    return state_and_pool_counts(project=project)[1]


def agreement_over_time(table: LabelTable) -> list[AgreementPoint]:
    """Pairwise sign agreement of the items whose last annotation came on each day (UTC), from the label triples:
    per item how many preferred each side and when its last label came, then per day the agreeing pairs over all
    pairs (metrics.pairwise_agreement pooled over that day's items), without an items x annotators matrix."""
    units = len(table.item_ids)
    side = np.sign(table.strength).astype(np.int64) + 1  # 0: A, 1: tie, 2: B
    sides = np.bincount(3 * table.row_item + side, minlength=3 * units).reshape(units, 3)
    per_item = sides.sum(axis=1)
    pairable = per_item >= 2
    last = np.full(units, -np.inf)
    np.maximum.at(last, table.row_item, table.created)
    days, slot = np.unique((last[pairable] // 86400).astype(np.int64), return_inverse=True)
    items = np.bincount(slot, minlength=len(days))
    agreeing = np.bincount(slot, weights=(sides * (sides - 1)).sum(axis=1)[pairable], minlength=len(days))
    pairs = np.bincount(slot, weights=(per_item * (per_item - 1))[pairable], minlength=len(days))
    epoch = date(1970, 1, 1).toordinal()
    return [
        AgreementPoint(date.fromordinal(epoch + int(day)), int(n), float(agree / total))
        for day, n, agree, total in zip(days, items, agreeing, pairs, strict=True)
    ]


def strength_histogram(table: LabelTable) -> dict[int, int]:
    """How many annotations gave each strength, -3..3."""
    counts = np.bincount((table.strength + 3).astype(np.int64), minlength=7)
    return {value - 3: int(counts[value]) for value in range(7)}


@dataclass(frozen=True)
class Dashboard(DashboardFigures):
    """The dashboard's figures with the project's agreement, as a worker computed them."""

    agreement: ProjectAgreement

    @property
    def items(self) -> int:
        return sum(self.states.values())

    @property
    def complete(self) -> int:
        """Items past labelling: agreed, disputed, adjudicated or excluded (by the rules' states)."""
        waiting = (ItemState.UNLABELLED, ItemState.IN_PROGRESS)
        return sum(count for state, count in self.states.items() if state not in waiting)

    @property
    def percent_complete(self) -> int:
        return round(100 * self.complete / self.items) if self.items else 0


@dataclass(frozen=True)
class DashboardPage(CachedFigures):
    """What the dashboard shows: the cached figures (None until a worker has computed them)."""

    dashboard: Dashboard | None


def dashboard_page(*, quality: ProjectQuality | None) -> DashboardPage:
    """The dashboard from the project's cached report: one row read, whatever the size of the project."""
    data = quality.report if quality is not None else None
    figures = _dashboard_load(data.get("dashboard")) if data is not None else None
    if data is None or figures is None:
        return DashboardPage(quality=quality, dashboard=None)
    dashboard = Dashboard(**_fields(figures), agreement=_agreement_load(data["agreement"]))
    return DashboardPage(quality=quality, dashboard=dashboard)


def _fields(figures: DashboardFigures) -> dict[str, Any]:
    return {f.name: getattr(figures, f.name) for f in dataclasses.fields(figures)}


def pool_counts_cached(*, quality: ProjectQuality | None) -> dict[str, int] | None:
    """The pool counts a worker last computed for the project (None before the first): for pages that show them
    with their age (quality.computed_at) instead of counting a project of a million items per request."""
    data = quality.report if quality is not None else None
    figures = _dashboard_load(data.get("dashboard")) if data is not None else None
    return figures.pools if figures is not None else None
