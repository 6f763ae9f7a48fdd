"""Reads for the campaign pages: campaigns, rounds and pair decisions of a project through the access helpers,
each round's figures, the decision list with its filters, and the plots as numbers (drawn by the templates, so
nothing is marked safe)."""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, F, Q, QuerySet
from django.http import Http404

from annotate.access import AnyUser, project_for_member
from annotate.models import Project, Role
from training.ml.synergy import CampaignSettings, Decision
from training.models import Campaign, CampaignRound, DecisionOverride, PairDecision

# The colour of each decision, in the plots and their legends, in the order they stack.
DECISION_COLORS = {
    Decision.ACCEPT.value: "#3c8d5a",
    Decision.FLIP.value: "#e08a2e",
    Decision.DROP.value: "#c0392b",
    Decision.UNCERTAIN.value: "#9aa1b0",
    Decision.AI_LABEL.value: "#4a6fa5",
    Decision.UNLABELLED.value: "#d5d9e0",
    "route": "#8e44ad",
}
OTHER_COLOR = "#555555"

# Plot area of the campaign charts, in SVG user units.
PLOT_WIDTH, PLOT_HEIGHT, PLOT_LEFT, PLOT_BOTTOM, PLOT_TOP, PLOT_RIGHT = 560, 220, 48, 28, 12, 12
# The plots' frame as the templates draw it: the axes' ends in the plot's coordinates.
PLOT_FRAME = {
    "width": PLOT_WIDTH,
    "height": PLOT_HEIGHT,
    "left": PLOT_LEFT,
    "bottom": PLOT_HEIGHT - PLOT_BOTTOM,
    "top": PLOT_TOP,
    "right": PLOT_WIDTH - PLOT_RIGHT,
}


def campaign_for_curator(user: AnyUser, project_id: int, campaign_id: int, *, min_role: str = Role.CURATOR) -> Campaign:
    """A campaign of a project the user curates (or administers, with min_role); one of any other project is a
    404."""
    project = project_for_member(user, project_id, min_role=min_role)
    campaign = Campaign.objects.filter(pk=campaign_id, project=project).select_related("project", "created_by").first()
    if campaign is None:
        raise Http404("No such campaign")
    return campaign


def round_for_curator(user: AnyUser, project_id: int, campaign_id: int, number: int) -> CampaignRound:
    """A round (by its number) of a campaign of a project the user curates; anything else is a 404."""
    campaign = campaign_for_curator(user, project_id, campaign_id)
    round_ = CampaignRound.objects.filter(campaign=campaign, number=number).select_related("campaign__project").first()
    if round_ is None:
        raise Http404("No such round")
    return round_


def pair_decision_in_round(round_: CampaignRound, decision_id: int) -> PairDecision:
    decision = PairDecision.objects.filter(pk=decision_id, round=round_).select_related("round").first()
    if decision is None:
        raise Http404("No such decision in this round")
    return decision


def campaigns_for_project(project: Project) -> QuerySet[Campaign]:
    return (
        Campaign.objects.filter(project=project)
        .select_related("created_by")
        .annotate(round_count=Count("rounds"))
        .order_by("-created_at", "-id")
    )


def campaign_rounds(campaign: Campaign) -> list[CampaignRound]:
    rounds = list(
        CampaignRound.objects.filter(campaign=campaign).select_related("version", "closed_by").order_by("number")
    )
    for round_ in rounds:
        round_.campaign = campaign  # routed_labelled reads its project
    return rounds


@dataclass(frozen=True)
class Setting:
    name: str
    value: Any
    help: str


def campaign_settings_rows(campaign: Campaign) -> list[Setting]:
    """The campaign's stored settings in CampaignSettings' field order, each with its help text; a stored key the
    dataclass no longer knows comes last, as stored."""
    stored = dict(campaign.config or {})
    rows = [
        Setting(spec.name, stored.pop(spec.name), str(spec.metadata.get("help", "")))
        for spec in dataclasses.fields(CampaignSettings)
        if spec.name in stored
    ]
    return rows + [Setting(name, value, "") for name, value in sorted(stored.items())]


def decision_order(names: Any) -> list[str]:
    """Decisions in the order they stack (DECISION_COLORS'), unknown ones last by name."""
    known = [name for name in DECISION_COLORS if name in names]
    return known + sorted(name for name in names if name not in DECISION_COLORS)


def decision_color(name: str) -> str:
    return DECISION_COLORS.get(name, OTHER_COLOR)


def round_totals(round_: CampaignRound) -> dict[str, int]:
    """Pairs per decision over both pools, from round.counts ({pool: {decision: n}})."""
    totals: dict[str, int] = {}
    for per_pool in (round_.counts or {}).values():
        for decision, count in (per_pool or {}).items():
            totals[decision] = totals.get(decision, 0) + int(count)
    return totals


def standard_error(accuracy: float | None, pairs: int) -> float | None:
    """The standard error of an accuracy measured on `pairs` pairs: sqrt(p (1 - p) / n)."""
    if accuracy is None or pairs <= 0:
        return None
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / pairs)


@dataclass(frozen=True)
class PoolCounts:
    pool: str
    decisions: list[tuple[str, int]]


@dataclass(frozen=True)
class RoundRow:
    """One round as the rounds table shows it."""

    round: CampaignRound
    live: bool  # neither done nor failed, in a running campaign: its message and progress are shown
    percent: int | None
    counts: list[PoolCounts]
    labelled: int  # routed pairs labelled so far (counted now while the round waits for labels)
    gold_se: float | None
    can_close: bool  # waiting for labels: a curator may close it now
    # What its progress bar and message say: as the worker last wrote them, or while the round waits for the
    # annotators, counted now (the round itself wakes only once they are done).
    done: int = 0
    total: int = 0
    message: str = ""


def round_rows(campaign: Campaign, rounds: list[CampaignRound]) -> list[RoundRow]:
    running = campaign.status == Campaign.Status.RUNNING
    rows = []
    for round_ in rounds:
        live = running and not round_.finished
        labelling = live and round_.stage == CampaignRound.Stage.LABEL
        labelled = routed_labelled(round_) if labelling else round_.routed_labelled
        done, total, message = round_.done, round_.total, round_.message
        if labelling and round_.closed_by_id is None:
            done, total = labelled, round_.routed
            message = f"Waiting for the annotators: {labelled} of {total} routed pairs labelled"
        counts = [
            PoolCounts(str(pool), [(d, int(per_pool[d])) for d in decision_order(per_pool)])
            for pool, per_pool in sorted((round_.counts or {}).items())
        ]
        rows.append(
            RoundRow(
                round=round_,
                live=live,
                percent=min(100, round(100 * done / total)) if live and total else None,
                counts=counts,
                labelled=labelled,
                gold_se=standard_error(round_.gold_accuracy, round_.gold_pairs),
                can_close=labelling and round_.closed_by_id is None,
                done=done,
                total=total,
                message=message,
            )
        )
    return rows


# Plots.


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


def plot_x(fraction: float) -> float:
    return round(PLOT_LEFT + fraction * (PLOT_WIDTH - PLOT_LEFT - PLOT_RIGHT), 1)


def plot_y(fraction: float) -> float:
    return round(PLOT_HEIGHT - PLOT_BOTTOM - fraction * (PLOT_HEIGHT - PLOT_BOTTOM - PLOT_TOP), 1)


def _slot(index: int, slots: int) -> tuple[float, float]:
    """The left edge and width of the index-th of `slots` equal slots across the plot."""
    width = (PLOT_WIDTH - PLOT_LEFT - PLOT_RIGHT) / max(slots, 1)
    return round(PLOT_LEFT + index * width, 1), round(width, 1)


@dataclass(frozen=True)
class AccuracyPoint:
    number: int
    accuracy: float
    se: float | None
    pairs: int
    x: float
    y: float
    y_low: float  # the error bar: accuracy -+ one standard error
    y_high: float


@dataclass(frozen=True)
class AccuracyPlot:
    points: list[AccuracyPoint]
    line: str
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    low: float


def accuracy_plot(rounds: list[CampaignRound]) -> AccuracyPlot | None:
    """Held-out gold accuracy per round, with one standard error either side; None before any is measured. The
    y axis runs from 1 down to 0.5, or lower when a round (with its error bar) falls below it."""
    measured = [r for r in rounds if r.gold_accuracy is not None]
    if not measured:
        return None
    errors = {r.number: standard_error(r.gold_accuracy, r.gold_pairs) for r in measured}
    floor = min(min((r.gold_accuracy or 0) - (errors[r.number] or 0) for r in measured), 0.5)
    low = max(0.0, math.floor(floor * 10) / 10)
    span = 1.0 - low or 1.0
    numbers = [r.number for r in rounds] or [1]
    slots = {number: _slot(index, len(numbers)) for index, number in enumerate(numbers)}

    def x_of(number: int) -> float:  # the middle of the round's slot, as the decision bars place theirs
        left, width = slots[number]
        return round(left + width / 2, 1)

    def y_of(value: float) -> float:
        return plot_y(min(max((value - low) / span, 0.0), 1.0))

    points = []
    for r in measured:
        accuracy, se = float(r.gold_accuracy or 0), errors[r.number]
        points.append(
            AccuracyPoint(
                number=r.number,
                accuracy=accuracy,
                se=se,
                pairs=r.gold_pairs,
                x=x_of(r.number),
                y=y_of(accuracy),
                y_low=y_of(accuracy - (se or 0)),
                y_high=y_of(accuracy + (se or 0)),
            )
        )
    steps = 5
    y_ticks = [Tick(plot_y(i / steps), f"{low + span * i / steps:.2f}") for i in range(steps + 1)]
    x_ticks = [Tick(x_of(n), str(n)) for n in numbers]
    return AccuracyPlot(points, " ".join(f"{p.x},{p.y}" for p in points), y_ticks, x_ticks, low)


@dataclass(frozen=True)
class Segment:
    """A stacked bar's piece: one decision's share (or count) in one slot."""

    decision: str
    color: str
    count: int
    share: float
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class StackedBar:
    label: str
    total: int
    center: float
    segments: list[Segment]


def _stack(label: str, counts: dict[str, int], order: list[str], x: float, width: float, scale: float) -> StackedBar:
    """One bar of `counts` stacked bottom up in `order`, `scale` its fraction of the plot's height per pair."""
    total = sum(counts.values())
    top = float(PLOT_HEIGHT - PLOT_BOTTOM)
    segments = []
    for decision in order:
        count = counts.get(decision, 0)
        if not count:
            continue
        height = round(count * scale * (PLOT_HEIGHT - PLOT_BOTTOM - PLOT_TOP), 1)
        top -= height
        segments.append(
            Segment(decision, decision_color(decision), count, count / total, x, round(top, 1), width, height)
        )
    return StackedBar(label, total, round(x + width / 2, 1), segments)


@dataclass(frozen=True)
class StackedPlot:
    bars: list[StackedBar]
    legend: list[tuple[str, str]]  # (decision, colour)
    y_ticks: list[Tick]


def decision_share_plot(rounds: list[CampaignRound]) -> StackedPlot | None:
    """Each decided round's decisions as shares of its pairs (silver and unlabelled together), stacked."""
    decided = [(r, round_totals(r)) for r in rounds]
    decided = [(r, totals) for r, totals in decided if sum(totals.values())]
    if not decided:
        return None
    order = decision_order({d for _, totals in decided for d in totals})
    bars = []
    for index, (r, totals) in enumerate(decided):
        x, width = _slot(index, len(decided))
        pad = min(width * 0.2, 24)
        bars.append(_stack(f"round {r.number}", totals, order, x + pad / 2, width - pad, 1 / sum(totals.values())))
    y_ticks = [Tick(plot_y(i / 4), f"{25 * i}%") for i in range(5)]
    return StackedPlot(bars, [(d, decision_color(d)) for d in order], y_ticks)


@dataclass(frozen=True)
class HistogramPlot:
    number: int  # the round's
    bars: list[StackedBar]
    legend: list[tuple[str, str]]
    decisions: list[str]
    rows: list[tuple[float, float, list[int]]]  # the table fallback: (low, high, count per decision)
    x_ticks: list[Tick]
    y_ticks: list[Tick]


def strength_histogram(rounds: list[CampaignRound]) -> HistogramPlot | None:
    """The strength histogram (round.histogram: [{low, high, counts: {decision: n}}]) of the latest round that
    has one, as bars stacked by decision; None before any round decided."""
    latest = next((r for r in reversed(rounds) if r.histogram), None)
    if latest is None:
        return None
    bins = [b for b in latest.histogram if isinstance(b, dict)]
    counts = [{str(d): int(n) for d, n in (b.get("counts") or {}).items()} for b in bins]
    order = decision_order({d for c in counts for d in c})
    peak = max([sum(c.values()) for c in counts] + [1])
    bars = []
    for index, (b, c) in enumerate(zip(bins, counts, strict=True)):
        x, width = _slot(index, len(bins))
        label = f"{float(b['low']):+.2f} to {float(b['high']):+.2f}"
        bars.append(_stack(label, c, order, x + 1, max(width - 2, 1), 1 / peak))
    rows = [
        (float(b["low"]), float(b["high"]), [c.get(d, 0) for d in order]) for b, c in zip(bins, counts, strict=True)
    ]
    x_ticks = []
    if bins:
        edges = [float(bins[0]["low"]), 0.0, float(bins[-1]["high"])]
        x_ticks = [Tick(plot_x(i / 2), f"{edge:+.1f}" if edge else "0") for i, edge in enumerate(edges)]
    y_ticks = [Tick(plot_y(i / 4), f"{peak * i / 4:.0f}") for i in range(5)]
    legend = [(d, decision_color(d)) for d in order]
    return HistogramPlot(latest.number, bars, legend, order, rows, x_ticks, y_ticks)


# The decision list.


@dataclass(frozen=True)
class DecisionFilters:
    decision: str = ""  # effective: the override, else the round's decision
    pool: str = ""
    routed: bool | None = None
    min_strength: float | None = None
    max_strength: float | None = None


def round_decisions(round_: CampaignRound, filters: DecisionFilters) -> QuerySet[PairDecision]:
    """The round's decisions that pass the filters, weakest strength first (for a silver pair: the surest
    contradictions), ties by id."""
    decisions = PairDecision.objects.filter(round=round_)
    if filters.decision:  # PairDecision.effective, spelt so that the round's decision index serves it
        decisions = decisions.filter(Q(override=filters.decision) | Q(override="", decision=filters.decision))
    if filters.pool:
        decisions = decisions.filter(pool=filters.pool)
    if filters.routed is not None:
        decisions = decisions.filter(routed=filters.routed)
    if filters.min_strength is not None:
        decisions = decisions.filter(strength__gte=filters.min_strength)
    if filters.max_strength is not None:
        decisions = decisions.filter(strength__lte=filters.max_strength)
    return (
        decisions.select_related("item")
        .only(*DECISION_FIELDS, "item__id", "item__number", "item__prompt", "item__project_id")
        .order_by("strength", "id")
    )


DECISION_FIELDS = (
    "id",
    "round_id",
    "item_id",
    "pool",
    "label_sign",
    "decision",
    "override",
    "strength",
    "spread",
    "p_agree",
    "routed",
    "retrieved_by",
)
PROMPT_SNIPPET_CHARS = 160


@dataclass(frozen=True)
class DecisionRow:
    decision: PairDecision
    prompt: str  # the first turn's text (the template truncates and escapes it)
    latest_override: DecisionOverride | None

    @property
    def label_side(self) -> str:
        return {-1: "A", 1: "B"}.get(self.decision.label_sign, "")


def prompt_text(prompt: Any) -> str:
    """The text of a stored prompt: its first turn's content (chat turns), else the value as text."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
        return str(prompt[0].get("content", ""))
    return "" if prompt is None else str(prompt)


def decision_rows(decisions: list[PairDecision]) -> list[DecisionRow]:
    """The page's decisions, each with the latest override of it (one query for the page)."""
    latest: dict[int, DecisionOverride] = {}
    overrides = (
        DecisionOverride.objects.filter(pair_decision__in=[d.pk for d in decisions])
        .select_related("curator")
        .order_by("pair_decision_id", "-created_at", "-id")
        .distinct("pair_decision_id")
    )
    for override in overrides:
        latest[override.pair_decision_id] = override
    return [DecisionRow(d, prompt_text(d.item.prompt), latest.get(d.pk)) for d in decisions]


def routed_labelled(round_: CampaignRound) -> int:
    """Routed pairs that Concord's annotators have labelled as many times as the pair wants."""
    project = round_.campaign.project
    return PairDecision.objects.filter(
        round=round_,
        routed=True,
        item__human_count__gt=0,
        item__annotation_count__gte=F("item__extra_overlap") + project.overlap,
    ).count()
