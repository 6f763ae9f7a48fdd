"""Reward models: promote one to be the project's active model, and score every item of a project with it.

A job scores every item of the project, or only the project's items in one of its frozen versions. Scoring runs
on the gpu worker (training.tasks.scoring_task) under its job lock (concord.locks.SCORING) with a
compare-and-swap claim, like a training run; it reads items a batch at a time and upserts their ItemScore rows,
so a redelivered job simply scores every item again. training.ml.scoring (torch) is imported inside the task.
"""

import logging
import math
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from annotate.models import Item, Project
from concord import jobs, locks
from concord.jobs import enqueue_on_commit
from concord.locks import job_lock
from curation.models import DatasetVersion
from training.models import ItemScore, RewardModel, ScoringJob
from training.selectors import items_to_score
from training.services.runs import TrainingError

if TYPE_CHECKING:
    from training.ml.scoring import RewardScorer

logger = logging.getLogger(__name__)

# Items read from the database and upserted at a time; the job's progress moves on after each chunk.
SCORE_BATCH = 2048


def heldout_pairs(reward_model: RewardModel) -> int:
    """How many held-out pairs its accuracy was measured on."""
    metrics = (reward_model.model_card or {}).get("metrics") or {}
    count = metrics.get("heldout_pairs")
    return count if isinstance(count, int) else 0


def promotion_warning(reward_model: RewardModel) -> str:
    """Why promoting the model is refused unless insisted on; empty when nothing speaks against it."""
    metrics = (reward_model.model_card or {}).get("metrics") or {}
    if metrics.get("heldout_split", "test") != "test":
        return (
            "Its version has no test split: its accuracy was measured on the validation pairs the run also "
            "calibrated it on, which flatters it. Freeze a version with a test split, or promote anyway knowing this."
        )
    measured, needed = heldout_pairs(reward_model), settings.CONCORD_MIN_HELDOUT_PAIRS
    if measured >= needed:
        return ""
    return (
        f"Its held-out accuracy was measured on {measured} pair{'s' if measured != 1 else ''}, fewer than the "
        f"{needed} it takes to mean anything: its scores would send items to curators on a guess. Freeze a "
        "version with a larger test split, or promote anyway knowing this."
    )


@transaction.atomic
def reward_model_promote(*, reward_model: RewardModel, despite_warning: bool = False) -> RewardModel:
    """Make the model its project's active reward model; the one active before is deactivated in the same
    transaction (the project row is locked, so two promotions queue rather than collide). A model with too few
    held-out pairs (promotion_warning) is refused unless `despite_warning`; the model card records it."""
    warning = promotion_warning(reward_model)
    if warning and not despite_warning:
        raise TrainingError(errors=[("despite_warning", warning)])
    Project.objects.select_for_update().filter(pk=reward_model.project_id).first()
    if warning:
        card = {**(reward_model.model_card or {}), "promoted_despite": warning}
        RewardModel.objects.filter(pk=reward_model.pk).update(model_card=card)
    RewardModel.objects.filter(project_id=reward_model.project_id, is_active=True).exclude(pk=reward_model.pk).update(
        is_active=False
    )
    RewardModel.objects.filter(pk=reward_model.pk).update(is_active=True)
    reward_model.refresh_from_db()
    # Here, not at the top: the selection service reads the active model through this module.
    from training.services.selection import selection_after_promotion

    # A policy that selects after each promotion ranks the pool with the new model (a job after the commit).
    selection_after_promotion(reward_model=reward_model)
    return reward_model


def active_reward_model(project: Project) -> RewardModel | None:
    return RewardModel.objects.filter(project=project, is_active=True).first()


@transaction.atomic
def scoring_job_create(
    *,
    project: Project,
    created_by: AbstractBaseUser | None,
    dataset_version: DatasetVersion | None = None,
    reward_model: RewardModel | None = None,
) -> ScoringJob:
    """A queued job scoring the project's items (only those in `dataset_version`, a frozen version of the project,
    when given) with its active model, or with `reward_model` (a curation round scores with the ensemble it just
    trained, active or not); enqueued after the commit."""
    model = reward_model or active_reward_model(project)
    if model is None:
        raise TrainingError("the project has no active reward model: promote a trained model first")
    if model.project_id != project.pk:
        raise TrainingError(f"reward model {model.pk} is not a model of {project.name}")
    if dataset_version is not None:
        _check_scorable(project, dataset_version)
    job = ScoringJob(
        project=project,
        reward_model=model,
        dataset_version=dataset_version,
        created_by_id=created_by.pk if created_by is not None else None,
    )
    job.total = items_to_score(job).count()
    job.full_clean(exclude=["created_by"])
    job.save()
    enqueue_on_commit(jobs.SCORING, job.pk)
    return job


def _check_scorable(project: Project, version: DatasetVersion) -> None:
    if version.status != DatasetVersion.Status.FROZEN:
        raise TrainingError(f"dataset version {version.name!r} is {version.status}: only a frozen version has rows")
    if not version.projects.filter(pk=project.pk).exists():
        raise TrainingError(f"dataset version {version.name!r} is not a version of {project.name}")


def scoring_run(*, job: ScoringJob) -> ScoringJob:
    """Score the job's project with its model. Safe to deliver twice: only the lock holder scores."""
    with job_lock(locks.SCORING, job.pk) as mine:
        active = [ScoringJob.Status.QUEUED, ScoringJob.Status.RUNNING]
        claimed = mine and ScoringJob.objects.filter(pk=job.pk, status__in=active).update(
            status=ScoringJob.Status.RUNNING, done=0, heartbeat_at=Now()
        )
        if not claimed:
            job.refresh_from_db()
            return job
        try:
            _score_all(job)
        except Exception as error:
            logger.exception("Scoring job %s failed", job.pk)
            ScoringJob.objects.filter(pk=job.pk).update(
                status=ScoringJob.Status.FAILED, error=f"Scoring failed: {error}"[:2000], finished_at=timezone.now()
            )
            raise
    job.refresh_from_db()
    return job


def _score_all(job: ScoringJob) -> None:
    from training.ml.scoring import RewardScorer  # torch: only on the worker

    model = job.reward_model
    config = model.run.config
    # Loaded once for the whole job, not once per chunk.
    scorer = RewardScorer(
        model.path, batch_size=config.get("batch_size", 32) * 2, max_length=config.get("max_length", 256)
    )
    temperature = model_temperature(model)
    items = items_to_score(job).order_by("pk").only("id", "prompt", "context", "response_a", "response_b")
    done = 0
    batch: list[Item] = []
    for item in items.iterator(chunk_size=SCORE_BATCH):
        batch.append(item)
        if len(batch) >= SCORE_BATCH:
            done += _score_batch(scorer, model, batch, temperature)
            ScoringJob.objects.filter(pk=job.pk).update(done=done, heartbeat_at=Now())
            batch = []
    done += _score_batch(scorer, model, batch, temperature)
    ScoringJob.objects.filter(pk=job.pk).update(
        status=ScoringJob.Status.DONE, done=done, total=done, finished_at=timezone.now()
    )


def model_temperature(model: RewardModel) -> float:
    """The temperature its run fitted on the validation split (training.ml.evaluate.fit_temperature), else 1."""
    metrics = (model.model_card or {}).get("metrics") or {}
    calibration = (metrics.get("heldout") or {}).get("calibration") or {}
    temperature = calibration.get("temperature")
    return float(temperature) if isinstance(temperature, int | float) and temperature > 0 else 1.0


def probability_b(margin: float, temperature: float) -> float:
    """sigmoid(margin / T): how likely B is the preferred response, by the calibrated model."""
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, margin / temperature))))


def _score_batch(scorer: "RewardScorer", model: RewardModel, batch: list[Item], temperature: float) -> int:
    if not batch:
        return 0
    from training.ml.data import prompt_with_context  # torch: only on the worker

    # The item as the model was trained on it: the context, when there is one, before the prompt.
    pairs = [(prompt_with_context(item.prompt, item.context), item.response_a, item.response_b) for item in batch]
    scores = scorer.score_pairs(pairs)
    rows = []
    for item, score in zip(batch, scores, strict=True):
        # Here every margin is B minus A, so positive prefers B like an annotation's strength; score_pairs' are
        # A minus B.
        margin = score.reward_b - score.reward_a
        rows.append(
            ItemScore(
                item_id=item.pk,
                reward_model=model,
                reward_a=score.reward_a,
                reward_b=score.reward_b,
                margin=margin,
                probability_b=probability_b(margin, temperature),
                ensemble_mean=-score.ensemble_mean,
                ensemble_std=score.ensemble_std,
            )
        )
    ItemScore.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["reward_model", "item"],
        update_fields=["reward_a", "reward_b", "margin", "probability_b", "ensemble_mean", "ensemble_std"],
    )
    return len(batch)
