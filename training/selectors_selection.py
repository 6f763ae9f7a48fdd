"""Reads for selective annotation: a project's selection policy and runs, its human labels, and the learning curve
of its reward models (held-out accuracy against the human labels there were when each model's data was frozen)."""

import math
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.db.models import Count, Q

from annotate.models import Annotation, Item, Project
from training.ml.selection import required_inputs
from training.models import RewardModel, SelectionPolicy, SelectionRun
from training.selectors_campaigns import Tick, plot_x, plot_y

# The models a learning curve shows at most: the latest ones.
CURVE_MODELS = 30
LABELS_BEFORE_KEEP_S = 7 * 24 * 3600


def selection_policy(project: Project) -> SelectionPolicy:
    """The project's policy, or the default (no strategy: the queue's own order), unsaved."""
    return SelectionPolicy.objects.filter(project=project).first() or SelectionPolicy(project=project)


def selection_runs(project: Project, limit: int = 10) -> list[SelectionRun]:
    return list(SelectionRun.objects.filter(project=project).select_related("reward_model", "created_by")[:limit])


def selection_run_active(project: Project) -> SelectionRun | None:
    """The project's queued or running selection, if any (at most one: selection_run_one_active)."""
    active = [SelectionRun.Status.QUEUED, SelectionRun.Status.RUNNING]
    return SelectionRun.objects.filter(project=project, status__in=active).first()


def selection_last_done(project: Project) -> SelectionRun | None:
    return SelectionRun.objects.filter(project=project, status=SelectionRun.Status.DONE).first()


def active_model(project: Project) -> RewardModel | None:
    return RewardModel.objects.filter(project=project, is_active=True).select_related("run").first()


def selection_needs_model(*, strategy: str) -> bool:
    """Whether the strategy reads the active reward model's signals (all but random)."""
    return bool(required_inputs(strategy))


def selection_reads_features(*, strategy: str) -> bool:
    """Whether it reads last-layer features or embeddings of every pool item (hidden x 8 bytes each)."""
    return bool({"features", "embeddings"} & required_inputs(strategy))


def selection_blocker(*, policy: SelectionPolicy, model: RewardModel | None = None) -> str:
    """Why a selection under the policy cannot start now with the project's active model (looked up unless
    given); empty when it can."""
    if policy.strategy == SelectionPolicy.QUEUE_ORDER:
        return "choose a strategy first: the queue order needs no selection"
    if not selection_needs_model(strategy=policy.strategy):
        return ""
    model = model or active_model(policy.project)
    if model is None:
        return (
            f"the {policy.strategy} strategy reads the active reward model, and the project has none: "
            "promote a trained model first"
        )
    if "member_margins" in required_inputs(policy.strategy) and model.run.config.get("ensemble_size", 1) < 2:
        return (
            f"the {policy.strategy} strategy reads an ensemble's members, and the active model is a single model: "
            "train one with an ensemble size of 2 or more and promote it"
        )
    return ""


def human_label_count(project: Project) -> int:
    """The labels people gave in Concord on the project's items (imported ones cost nothing)."""
    return Annotation.objects.filter(item__project=project, origin=Annotation.Origin.HUMAN).count()


def selected_waiting(project: Project) -> int:
    """Ranked items still open: what the queue hands out before its own order (the partial index holds them)."""
    return Item.objects.filter(project=project, is_gold=False, selection_rank__gt=0, annotation_count=0).count()


def model_heldout_accuracy(model: RewardModel) -> float | None:
    metrics = (model.model_card or {}).get("metrics") or {}
    accuracy = (metrics.get("heldout") or {}).get("accuracy")
    return float(accuracy) if isinstance(accuracy, int | float) and math.isfinite(accuracy) else None


@dataclass(frozen=True)
class CurvePoint:
    model_id: int
    run_id: int
    labels: int
    accuracy: float
    active: bool
    x: float
    y: float


@dataclass(frozen=True)
class LearningCurve:
    points: list[CurvePoint]
    line: str
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    low: float


def learning_curve(project: Project) -> LearningCurve | None:
    """Each model's held-out accuracy against the human labels the project had when its data was frozen, in
    label order; None before a model has measured one. The labels are counted for every model in one pass over
    the project's human annotations."""
    measured_models = RewardModel.objects.filter(
        project=project,
        model_card__metrics__heldout__accuracy__isnull=False,
        run__dataset_version__frozen_at__isnull=False,
    )
    models = [
        (model, accuracy)
        for model in measured_models.select_related("run__dataset_version").order_by("-created_at", "-id")[
            :CURVE_MODELS
        ]
        if (accuracy := model_heldout_accuracy(model)) is not None
    ]
    if not models:
        return None
    counts = _labels_before(project, {model.pk: model.run.dataset_version.frozen_at for model, _ in models})
    measured = sorted(((counts[m.pk], accuracy, m) for m, accuracy in models), key=lambda p: (p[0], p[2].pk))
    return _curve(measured)


def _labels_before(project: Project, moments: dict[int, Any]) -> dict[int, int]:
    """The human labels made up to each moment, in one pass over the project's human annotations; kept in the
    cache under the moments themselves, since labels made before a moment past do not change."""
    key = f"concord:labels-before:{project.pk}:" + ",".join(f"{pk}@{m.timestamp()}" for pk, m in moments.items())
    cached = cache.get(key)
    if cached is not None:
        return {int(pk): count for pk, count in cached.items()}
    counts = Annotation.objects.filter(item__project=project, origin=Annotation.Origin.HUMAN).aggregate(
        **{f"m{pk}": Count("id", filter=Q(created_at__lte=moment)) for pk, moment in moments.items()}
    )
    found = {pk: int(counts[f"m{pk}"] or 0) for pk in moments}
    cache.set(key, found, timeout=LABELS_BEFORE_KEEP_S)
    return found


def _curve(measured: list[tuple[int, float, RewardModel]]) -> LearningCurve:
    """The plot of (labels, accuracy, model) points: x from 0 to the most labels, y from 1 down to 0.5 or lower."""
    most = max(labels for labels, _, _ in measured) or 1
    low = max(0.0, math.floor(min(0.5, *(accuracy for _, accuracy, _ in measured)) * 10) / 10)
    span = 1.0 - low or 1.0
    points = [
        CurvePoint(
            model_id=model.pk,
            run_id=model.run_id,
            labels=labels,
            accuracy=accuracy,
            active=model.is_active,
            x=plot_x(labels / most),
            y=plot_y(min(max((accuracy - low) / span, 0.0), 1.0)),
        )
        for labels, accuracy, model in measured
    ]
    x_ticks = [Tick(plot_x(i / 4), f"{round(most * i / 4):,}") for i in range(5)]
    y_ticks = [Tick(plot_y(i / 5), f"{low + span * i / 5:.2f}") for i in range(6)]
    return LearningCurve(points, " ".join(f"{p.x},{p.y}" for p in points), x_ticks, y_ticks, low)
