"""Reads for training pages: runs and models of a project through the access helpers, progress, ETA, curves."""

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db.models import Count, F, Q, QuerySet
from django.db.models.functions import Coalesce, Greatest
from django.http import Http404
from django.utils import timezone

from annotate.access import AnyUser, project_for_member
from annotate.models import Item, Project, Role
from annotate.rules import model_contradicts
from annotate.selectors import item_label_summary
from curation.models import DatasetRow, DatasetVersion
from curation.selectors_review import ModelScores, model_detail
from curation.selectors_versions import versions_reachable
from training.models import (
    Campaign,
    CampaignRound,
    ItemScore,
    RewardModel,
    ScoringChunk,
    ScoringJob,
    SelectionRun,
    TrainingRun,
)

# A running run not heard from for this long may have lost its worker: its page offers to resume it.
STALE_AFTER = timedelta(minutes=10)
CURVE_WIDTH = 600
CURVE_HEIGHT = 160


def run_for_admin(user: AnyUser, project_id: int, run_id: int) -> tuple[Project, TrainingRun]:
    """A run of a project the user administers, on a version the user reaches (its page shows what the version's
    labels taught); any other run is a 404."""
    project = project_for_member(user, project_id, min_role=Role.ADMIN)
    run = (
        _runs_reachable(project, user)
        .filter(pk=run_id)
        .select_related("dataset_version", "created_by", "project")
        .first()
    )
    if run is None:
        raise Http404("No such training run")
    return project, run


def _runs_reachable(project: Project, user: AnyUser) -> QuerySet[TrainingRun]:
    """The project's runs on versions the user reaches (curation.selectors_versions' rule)."""
    return TrainingRun.objects.filter(project=project, dataset_version__in=versions_reachable(user).values("pk"))


def runs_for_project(project: Project, user: AnyUser) -> QuerySet[TrainingRun]:
    return (
        _runs_reachable(project, user)
        .select_related("dataset_version", "created_by")
        .defer("log", "history")
        .order_by("-created_at", "-id")
    )


def runs_for_version(version: DatasetVersion) -> QuerySet[TrainingRun]:
    return TrainingRun.objects.filter(dataset_version=version).only("id", "project_id", "status", "created_at")


def trainable_versions(project: Project, user: AnyUser) -> QuerySet[DatasetVersion]:
    """The project's versions the user reaches; the form offers every one and explains why a draft cannot be
    used."""
    return versions_reachable(user).filter(projects=project).order_by("-created_at", "-id")


def reward_models_for_project(project: Project, user: AnyUser) -> QuerySet[RewardModel]:
    """The project's models whose runs the user reaches (run_for_admin)."""
    models = RewardModel.objects.filter(project=project, run__in=_runs_reachable(project, user).values("pk"))
    return models.select_related("run").order_by("-created_at", "-id")


def latest_scoring_job(project: Project) -> ScoringJob | None:
    """The project's latest scoring job, with its chunks counted: `chunks_total`, `chunks_done`, `chunks_running`
    (all 0 for a job scored whole)."""
    return (
        ScoringJob.objects.filter(project=project)
        .select_related("reward_model", "dataset_version")
        .annotate(
            chunks_total=Count("chunks"),
            chunks_done=Count("chunks", filter=Q(chunks__status=ScoringChunk.Status.DONE)),
            chunks_running=Count("chunks", filter=Q(chunks__status=ScoringChunk.Status.RUNNING)),
        )
        .first()
    )


def active_model_scores(project: Project) -> QuerySet[ItemScore]:
    """The scores of the project's items by its active reward model."""
    return ItemScore.objects.filter(reward_model__project=project, reward_model__is_active=True)


def queue_model(project: Project) -> ModelScores | None:
    """The model the review queue weighs the annotators against: while a curation campaign runs, the ensemble of
    its latest scored round (with the campaign's contradiction threshold), so that gold pairs the ensemble
    confidently contradicts reach a curator; else the active model with the project's threshold; None without
    either."""
    campaign_round = (
        CampaignRound.objects.filter(
            campaign__project=project,
            campaign__status=Campaign.Status.RUNNING,
            scoring_job__status=ScoringJob.Status.DONE,
        )
        .select_related("campaign", "training_run__reward_model")
        .order_by("-campaign__created_at", "-number")
        .first()
    )
    if campaign_round is not None and campaign_round.training_run is not None:
        model = campaign_round.training_run.reward_model
        threshold = float(campaign_round.campaign.config.get("contradict_threshold", project.model_threshold))
        name = f"campaign {campaign_round.campaign.name!r} round {campaign_round.number} ensemble"
        scores = ItemScore.objects.filter(reward_model=model)
        key = f"model {model.pk} scoring {campaign_round.scoring_job_id}"
        return ModelScores(scores=scores, threshold=threshold, name=name, reason="ensemble", key=key)
    active = RewardModel.objects.filter(project=project, is_active=True).values_list("pk", flat=True).first()
    if active is None:
        return None
    return ModelScores(scores=active_model_scores(project), threshold=project.model_threshold, key=_scores_key(active))


def _scores_key(reward_model_id: int) -> str:
    """Which scores a model has: the model and its latest finished scoring job (ModelScores.key)."""
    scored = ScoringJob.objects.filter(reward_model_id=reward_model_id, status=ScoringJob.Status.DONE)
    return f"model {reward_model_id} scoring {scored.order_by('-pk').values_list('pk', flat=True).first()}"


@dataclass(frozen=True)
class ItemModelView:
    """What the active model says about one item, for the item and adjudication pages."""

    score: ItemScore
    threshold: float
    contradicts: bool

    @property
    def detail(self) -> str:
        return model_detail(self.score.probability_b, self.score.margin)


def item_model_view(item: Item) -> ItemModelView | None:
    score = active_model_scores(item.project).filter(item=item).first()
    if score is None:
        return None
    summary = item_label_summary(item, overlap=item.project.overlap)
    threshold = item.project.model_threshold
    return ItemModelView(score, threshold, model_contradicts(summary, score.probability_b, threshold))


def items_to_score(job: ScoringJob) -> QuerySet[Item]:
    """The job's project's items, or only those in its dataset version (a version may hold other projects'
    rows too: they are not this job's)."""
    items = Item.objects.filter(project_id=job.project_id)
    if job.dataset_version_id is not None:
        items = items.filter(pk__in=DatasetRow.objects.filter(version_id=job.dataset_version_id).values("item_id"))
    return items


def scorable_versions(project: Project, user: AnyUser) -> QuerySet[DatasetVersion]:
    """The project's frozen versions the user reaches, whose items a scoring job can be limited to."""
    return trainable_versions(project, user).filter(status=DatasetVersion.Status.FROZEN)


Job = TypeVar("Job", TrainingRun, ScoringJob, ScoringChunk, CampaignRound, SelectionRun)


def jobs_to_recover(model: type[Job], *, silent_before: datetime, resend_before: datetime) -> QuerySet[Job]:
    """Running rows of `model` that may have lost their worker, for training.services.recovery: nothing heard
    from a worker (heartbeat_at) nor sent again (recovered_at) since `silent_before`, and not waiting for a worker
    to take a re-send made after `resend_before` (a re-send is taken once a worker's claim moves heartbeat_at
    past recovered_at). Whether the worker is really gone is for the job's lock to say, not this query."""
    # PostgreSQL's GREATEST skips NULLs: the later of the two that are set.
    last_word = Coalesce(Greatest("heartbeat_at", "recovered_at"), "created_at")
    not_waiting = (
        Q(recovered_at__isnull=True) | Q(heartbeat_at__gt=F("recovered_at")) | Q(recovered_at__lte=resend_before)
    )
    return (
        model.objects.filter(status=model.Status.RUNNING)
        .alias(last_word=last_word)
        .filter(not_waiting, last_word__lt=silent_before)
        .order_by("pk")
    )


def run_is_stale(run: TrainingRun) -> bool:
    """Queued or running, and nothing heard from a worker for STALE_AFTER."""
    if run.finished:
        return False
    last = run.heartbeat_at or run.created_at
    return last is not None and timezone.now() - last > STALE_AFTER


def run_percent(run: TrainingRun) -> int:
    if run.status == TrainingRun.Status.SUCCEEDED:
        return 100
    return min(100, round(100 * run.step / run.total_steps)) if run.total_steps else 0


def run_eta_seconds(run: TrainingRun) -> int | None:
    """Seconds left at the step rate seen so far (steps since the start over the time since), while running."""
    if run.status != TrainingRun.Status.RUNNING or not (run.step and run.total_steps and run.started_at):
        return None
    if run.heartbeat_at is None:
        return None
    elapsed = (run.heartbeat_at - run.started_at).total_seconds()
    if elapsed <= 0:
        return None
    return max(0, round((run.total_steps - run.step) * elapsed / run.step))


def objective_label(objective: Any) -> str:
    """An objective in words (training.ml.config.OBJECTIVE_LABELS), or as stored when it is none of them."""
    from training.ml.config import OBJECTIVE_LABELS  # a dataclass module: no torch

    known = OBJECTIVE_LABELS.get(str(objective))
    return known[0] if known else str(objective or "?")


@dataclass
class RunRow:
    run: TrainingRun
    percent: int
    eta_seconds: int | None
    objective: str


def run_rows(runs: list[TrainingRun]) -> list[RunRow]:
    return [
        RunRow(
            run=run,
            percent=run_percent(run),
            eta_seconds=run_eta_seconds(run),
            objective=objective_label((run.config or {}).get("objective")),
        )
        for run in runs
    ]


# A curve's plot area, in pixels, and the margins around it for the axes' ticks and names.
CURVE_MARGIN = {"left": 76, "right": 16, "top": 12, "bottom": 46}
CURVE_BOX = (
    CURVE_WIDTH + CURVE_MARGIN["left"] + CURVE_MARGIN["right"],
    CURVE_HEIGHT + CURVE_MARGIN["top"] + CURVE_MARGIN["bottom"],
)
CURVE_VIEW_BOX = f"{-CURVE_MARGIN['left']} {-CURVE_MARGIN['top']} {CURVE_BOX[0]} {CURVE_BOX[1]}"
# Up to this many points each get a dot: a single point is a point, a few are points joined by lines.
CURVE_DOTS_UP_TO = 20


@dataclass(frozen=True)
class Tick:
    at: int  # pixels along its axis
    label: str


@dataclass
class Curve:
    """A polyline's points in a CURVE_WIDTH x CURVE_HEIGHT box (y down), the range of values it spans, and the
    ticks of its axes: step across, value up."""

    points: list[tuple[int, int]]
    low: float | None
    high: float | None
    last: float | None
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)

    @property
    def dots(self) -> list[tuple[int, int]]:
        return self.points if len(self.points) <= CURVE_DOTS_UP_TO else []


def _value_label(value: float) -> str:
    return f"{value:.3g}"


def run_curve(history: list[dict[str, Any]], key: str, *, low: float | None = None, high: float | None = None) -> Curve:
    """The history's `key` against step, as integer coordinates; the template writes them out (no |safe). A single
    step sits in the middle across; a flat curve, in the middle of a range around its value."""
    values = [(p["step"], float(p[key])) for p in history if isinstance(p, dict) and p.get(key) is not None]
    if not values:
        return Curve(points=[], low=None, high=None, last=None)
    first_step, last_step = values[0][0], values[-1][0]
    low = min(v for _, v in values) if low is None else low
    high = max(v for _, v in values) if high is None else high
    if high == low:
        pad = abs(high) * 0.1 or 0.1
        low, high = low - pad, high + pad
    span_x = last_step - first_step
    span_y = high - low

    def x(step: int) -> int:
        return round((step - first_step) / span_x * CURVE_WIDTH) if span_x else CURVE_WIDTH // 2

    points = [(x(step), round((1 - (value - low) / span_y) * CURVE_HEIGHT)) for step, value in values]
    steps = sorted({first_step, last_step, (first_step + last_step) // 2})
    x_ticks = [Tick(x(step), str(step)) for step in steps]
    y_ticks = [Tick(round((1 - f) * CURVE_HEIGHT), _value_label(low + f * span_y)) for f in (0.0, 0.5, 1.0)]
    return Curve(points=points, low=low, high=high, last=values[-1][1], x_ticks=x_ticks, y_ticks=y_ticks)


def standard_error(accuracy: float, count: int) -> float | None:
    """The standard error of an accuracy measured on `count` pairs (binomial): sqrt(p (1 - p) / n)."""
    if count <= 0:
        return None
    p = min(max(accuracy, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / count)


@dataclass(frozen=True)
class GroupAccuracy:
    """One row of a final-metrics table: a source or strength bucket, its held-out pairs and accuracy."""

    name: str
    count: int | None
    accuracy: float | None
    standard_error: float | None


# evaluate.STRENGTH_BUCKETS' names (training.ml.evaluate imports torch), weakest first, in words.
STRENGTH_WORDS = {
    "none": "none (a tie)",
    "slight": "slight (1 of 3)",
    "clear": "clear (2 of 3)",
    "strong": "strong (3 of 3)",
}


def _groups(grouped: Any, words: dict[str, str] | None = None) -> list[GroupAccuracy]:
    """A by_source or by_strength dict ({name: {"count", "accuracy"}}) as rows: in `words`' order, else the
    most pairs first."""
    if not isinstance(grouped, dict):
        return []
    order = list(words or {})
    rows = []
    for name, value in grouped.items():
        entry = value if isinstance(value, dict) else {"accuracy": value}
        count = entry.get("count") if isinstance(entry.get("count"), int) else None
        accuracy = entry.get("accuracy") if isinstance(entry.get("accuracy"), int | float) else None
        se = standard_error(float(accuracy), count) if accuracy is not None and count else None
        label = (words or {}).get(name, str(name)) if name else "(no source)"
        rank = order.index(name) if name in order else len(order)
        rows.append(
            (rank, -(count or 0), label, GroupAccuracy(label, count, None if accuracy is None else float(accuracy), se))
        )
    return [row for *_, row in sorted(rows, key=lambda row: row[:3])]


@dataclass(frozen=True)
class AttributeRmse:
    name: str
    rmse: float | None
    constant_rmse: float | None


@dataclass
class RunMetrics:
    """A finished run's metrics (training.services.runs._evaluate) as the tables of its page."""

    heldout: dict[str, Any]
    heldout_se: float | None
    by_source: list[GroupAccuracy]
    by_strength: list[GroupAccuracy]
    attributes: list[AttributeRmse]
    member_accuracy: list[tuple[int, float]]


def run_metrics(metrics: dict[str, Any] | None) -> RunMetrics:
    heldout = (metrics or {}).get("heldout") or {}
    count = heldout.get("count") if isinstance(heldout.get("count"), int) else (metrics or {}).get("heldout_pairs")
    accuracy = heldout.get("accuracy")
    se = (
        standard_error(float(accuracy), count) if isinstance(accuracy, int | float) and isinstance(count, int) else None
    )
    rmse, constant = heldout.get("attribute_rmse") or {}, heldout.get("attribute_constant_rmse") or {}
    ensemble = heldout.get("ensemble") or {}
    return RunMetrics(
        heldout=heldout,
        heldout_se=se,
        by_source=_groups(heldout.get("by_source")),
        by_strength=_groups(heldout.get("by_strength"), STRENGTH_WORDS),
        attributes=[AttributeRmse(name, rmse.get(name), constant.get(name)) for name in rmse],
        member_accuracy=list(enumerate(ensemble.get("member_accuracy") or [], start=1)),
    )


# The held-out accuracy chart of the runs page: one bar per model, accuracy 0..1 across BAR_WIDTH pixels, after
# its label, and its numbers (accuracy, standard error, pairs) after the bar.
BAR_LABEL_WIDTH = 150
BAR_WIDTH = 400
BAR_ROW_HEIGHT = 22
BAR_NUMBERS_WIDTH = 170
BAR_AXIS_HEIGHT = 24


@dataclass
class AccuracyBar:
    """One model's held-out accuracy as a bar with a whisker of one standard error either side, and its test set's
    length baseline as a tick, in pixels from the bar's start."""

    model: RewardModel
    label: str
    accuracy: float
    count: int | None
    standard_error: float | None
    y: int
    width: int
    whisker: tuple[int, int] | None
    baseline_x: int | None


def _bar_x(value: float) -> int:
    return round(min(max(value, 0.0), 1.0) * BAR_WIDTH)


def heldout_accuracy_bars(models: list[RewardModel]) -> list[AccuracyBar]:
    """Bars for the models that were evaluated on a held-out split, newest first, as the list below them."""
    bars: list[AccuracyBar] = []
    for model in models:
        metrics = (model.model_card or {}).get("metrics") or {}
        heldout = metrics.get("heldout") or {}
        accuracy = heldout.get("accuracy")
        if not isinstance(accuracy, int | float):
            continue
        count = heldout.get("count") if isinstance(heldout.get("count"), int) else metrics.get("heldout_pairs")
        count = count if isinstance(count, int) and count > 0 else None
        se = standard_error(float(accuracy), count) if count else None
        baseline = metrics.get("length_baseline_accuracy")
        config = (model.model_card or {}).get("config") or {}
        bars.append(
            AccuracyBar(
                model=model,
                label=f"run #{model.run_id} · {config.get('objective', '?')}",
                accuracy=float(accuracy),
                count=count,
                standard_error=se,
                y=len(bars) * BAR_ROW_HEIGHT,
                width=_bar_x(float(accuracy)),
                whisker=(_bar_x(accuracy - se), _bar_x(accuracy + se)) if se is not None else None,
                baseline_x=_bar_x(float(baseline)) if isinstance(baseline, int | float) else None,
            )
        )
    return bars


@dataclass
class AccuracyChart:
    bars: list[AccuracyBar]
    width: int = BAR_LABEL_WIDTH + BAR_WIDTH + BAR_NUMBERS_WIDTH
    label_width: int = BAR_LABEL_WIDTH
    numbers_x: int = BAR_LABEL_WIDTH + BAR_WIDTH + 6
    coin_flip_x: int = BAR_LABEL_WIDTH + BAR_WIDTH // 2

    @property
    def axis_y(self) -> int:
        return len(self.bars) * BAR_ROW_HEIGHT + 2

    @property
    def height(self) -> int:
        return self.axis_y + BAR_AXIS_HEIGHT

    @property
    def ticks(self) -> list[Tick]:
        return [Tick(BAR_LABEL_WIDTH + _bar_x(f), f"{f:g}") for f in (0.0, 0.25, 0.5, 0.75, 1.0)]


def heldout_accuracy_chart(models: list[RewardModel]) -> AccuracyChart:
    return AccuracyChart(bars=heldout_accuracy_bars(models))


@dataclass(frozen=True)
class ModelRow:
    """A reward model in the runs page's list: its objective in words and its held-out accuracy, SE and pairs."""

    model: RewardModel
    objective: str
    accuracy: float | None
    standard_error: float | None
    count: int | None


def model_rows(models: list[RewardModel], bars: list[AccuracyBar]) -> list[ModelRow]:
    measured = {bar.model.pk: bar for bar in bars}
    rows = []
    for model in models:
        bar = measured.get(model.pk)
        objective = objective_label(((model.model_card or {}).get("config") or {}).get("objective"))
        if bar is None:
            rows.append(ModelRow(model, objective, None, None, None))
        else:
            rows.append(ModelRow(model, objective, bar.accuracy, bar.standard_error, bar.count))
    return rows
