"""Reads for the annotator-quality and dashboard pages: agreement, per-annotator quality, item states.

Annotations are read in one streamed query (human and imported ones with a strength) and aggregated in numpy:
a units x annotators matrix of strengths, NaN where an annotator did not label an item.
"""

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import numpy.typing as npt
from django.contrib.auth import get_user_model
from django.db.models import Count, Q

from annotate.models import Annotation, Assignment, Item, Membership, Project, Role
from annotate.rules import ItemState, Pool
from annotate.selectors import gold_scores
from curation import rule_sql
from curation.aggregation import DawidSkene, sign_dawid_skene
from curation.metrics import fleiss_kappa, krippendorff_alpha, modal_units, pairwise_agreement

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


def label_table(*, project: Project, chunk_size: int = 5000) -> LabelTable:
    rows = (
        Annotation.objects.filter(
            item__project=project,
            origin__in=[Annotation.Origin.HUMAN, Annotation.Origin.IMPORTED],
            strength__isnull=False,
        )
        .order_by()
        .values_list("item_id", "annotator_id", "strength", "ratings", "seconds_spent", "origin", "created_at")
    )
    items, annotators, strengths, seconds, created, ratings = [], [], [], [], [], []
    for item_id, annotator_id, strength, given, spent, origin, created_at in rows.iterator(chunk_size=chunk_size):
        items.append(item_id)
        annotators.append(annotator_id)
        strengths.append(strength)
        seconds.append(spent if origin == Annotation.Origin.HUMAN else np.nan)
        created.append(created_at.timestamp())
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
    matrix = table.matrix
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
    """Ordinal alpha per rating attribute; the units are (item, response) pairs."""
    cells: dict[str, tuple[list[int], list[int], list[float]]] = {}
    for index, given in enumerate(table.ratings):
        for side, values in given.items():
            unit = 2 * int(table.row_item[index]) + (side == "b")
            for name, value in values.items():
                units, coders, found = cells.setdefault(name, ([], [], []))
                units.append(unit)
                coders.append(int(table.row_annotator[index]))
                found.append(float(value))
    result = []
    for name, (units, coders, found) in sorted(cells.items()):
        matrix = np.full((2 * len(table.item_ids), len(table.annotator_ids)), np.nan)
        matrix[units, coders] = found
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
class QualityReport:
    agreement: ProjectAgreement
    annotators: list[AnnotatorQuality]
    median_seconds: float | None
    mean_agreement: float | None


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


def quality_report(*, project: Project) -> QualityReport:
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
    agrees, compared = _leave_one_out(table, weights)
    reliability = _reliability(table)
    gold = {score.annotator: score.preference_accuracy for score in gold_scores(project=project)}
    finished = _finished_counts(project=project)
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
        agreement=agreement_of(table),
        annotators=annotators,
        median_seconds=float(np.median(human_seconds)) if len(human_seconds) else None,
        mean_agreement=_mean([a.agreement for a in annotators if a.compared >= MIN_COMPARED]),
    )
    _flag_outliers(report)
    return report


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


def pool_counts(*, project: Project) -> dict[str, int]:
    """How many of the project's items (gold ones too) are in each pool (annotate.rules.pool): gold, with humans,
    silver, unlabelled, excluded; counted in one GROUP BY (curation.rule_sql mirrors the rule)."""
    rows = (
        rule_sql.with_pools(Item.objects.filter(project=project), project)
        .values("pool")
        .annotate(count=Count("id"))
        .order_by()
    )
    counts = dict.fromkeys(Pool, 0)
    for row in rows:
        counts[Pool(row["pool"])] = row["count"]
    return {str(pool): count for pool, count in counts.items()}


@dataclass(frozen=True)
class AgreementPoint:
    day: date
    items: int
    agreement: float


def agreement_over_time(table: LabelTable) -> list[AgreementPoint]:
    """Pairwise sign agreement of the items whose last annotation came on each day (UTC)."""
    matrix = np.sign(table.matrix)
    pairable = (~np.isnan(matrix)).sum(axis=1) >= 2
    last = np.full(len(table.item_ids), -np.inf)
    np.maximum.at(last, table.row_item, table.created)
    days = (last // 86400).astype(np.int64)
    points = []
    for day in np.unique(days[pairable]):
        rows = matrix[pairable & (days == day)]
        value = pairwise_agreement(rows)
        if not np.isnan(value):
            points.append(AgreementPoint(date.fromordinal(date(1970, 1, 1).toordinal() + int(day)), len(rows), value))
    return points


def strength_histogram(table: LabelTable) -> dict[int, int]:
    """How many annotations gave each strength, -3..3."""
    counts = np.bincount((table.strength + 3).astype(np.int64), minlength=7)
    return {value - 3: int(counts[value]) for value in range(7)}


@dataclass(frozen=True)
class Dashboard:
    states: dict[str, int]
    histogram: dict[int, int]
    over_time: list[AgreementPoint]
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


def project_dashboard(*, project: Project) -> Dashboard:
    table = label_table(project=project)
    return Dashboard(
        states=item_states(project=project),
        histogram=strength_histogram(table),
        over_time=agreement_over_time(table),
        agreement=agreement_of(table),
    )
