"""Reward models: promote one to be the project's active model, and score every item of a project with it.

A job scores every item of the project, or only the project's items in one of its frozen versions. Creating it
splits its items, in id order, into chunks of CONCORD_SCORING_CHUNK_ITEMS (ScoringChunk: a range of ids), and
sends one task per chunk (training.tasks.scoring_chunk_task) that any gpu worker takes. A worker claims its chunk
under the chunk's lock (concord.locks.SCORING_CHUNK) with a compare-and-swap, reads its items a batch at a time and
upserts their ItemScore rows, so a chunk delivered twice, or sent again after its worker died
(training.services.recovery), writes the same rows. The job's progress is the sum of its chunks' (kept in step
with F() updates), and the chunk that ends the last open one ends the job, in the same transaction, once.

A job with no chunks (nothing to score, or a row from before chunks) is scored whole by training.tasks.scoring_task
under the job's lock (concord.locks.SCORING). training.ml.scoring (torch) is imported inside the task.
"""

import logging
import math
import os
import socket
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, QuerySet, Window
from django.db.models.functions import Now, RowNumber
from django.utils import timezone

from annotate.models import Item, JobStatus, Project
from concord import jobs, locks
from concord.jobs import enqueue_on_commit
from concord.locks import job_lock
from curation.models import DatasetVersion
from training.models import ItemScore, RewardModel, ScoringChunk, ScoringJob
from training.selectors import items_to_score
from training.services.runs import TrainingError

if TYPE_CHECKING:
    from training.ml.scoring import RewardScorer

logger = logging.getLogger(__name__)

# Items read from the database and upserted at a time; the progress moves on after each batch.
SCORE_BATCH = 2048
ITEM_FIELDS = ("id", "prompt", "context", "response_a", "response_b")


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
    trained, active or not), split into chunks whose tasks are sent after the commit."""
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
    job.full_clean(exclude=["created_by"])
    job.save()
    ranges = item_ranges(items_to_score(job), size=settings.CONCORD_SCORING_CHUNK_ITEMS)
    chunks = ScoringChunk.objects.bulk_create(
        ScoringChunk(job=job, number=number, first_item_id=first, last_item_id=last, size=size)
        for number, (first, last, size) in enumerate(ranges, start=1)
    )
    job.total = sum(chunk.size for chunk in chunks)
    job.save(update_fields=["total"])
    for chunk in chunks:
        enqueue_on_commit(jobs.SCORING_CHUNK, chunk.pk)
    if not chunks:  # nothing to score: the whole-job task ends it (and wakes what waits for it) at once
        enqueue_on_commit(jobs.SCORING, job.pk)
    return job


def item_ranges(items: QuerySet[Item], *, size: int) -> list[tuple[int, int, int]]:
    """The items in id order, cut into runs of `size`: (first id, last id, count) of each. PostgreSQL numbers the
    ids (an index scan over the project's items) and groups them; only a row per range comes back to Python."""
    numbered = items.order_by().values(item=F("pk"), slot=(Window(RowNumber(), order_by=F("pk").asc()) - 1) / size)
    sql, params = numbered.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT MIN(item), MAX(item), COUNT(*) FROM ({sql}) AS numbered GROUP BY slot ORDER BY slot",  # noqa: S608
            params,
        )
        return [(int(first), int(last), int(count)) for first, last, count in cursor.fetchall()]


def _check_scorable(project: Project, version: DatasetVersion) -> None:
    if version.status != DatasetVersion.Status.FROZEN:
        raise TrainingError(f"dataset version {version.name!r} is {version.status}: only a frozen version has rows")
    if not version.projects.filter(pk=project.pk).exists():
        raise TrainingError(f"dataset version {version.name!r} is not a version of {project.name}")


# A chunk of a job, on any worker.

OPEN = [JobStatus.QUEUED, JobStatus.RUNNING]


def scoring_chunk_run(*, chunk: ScoringChunk) -> ScoringJob | None:
    """Score the chunk's items with its job's model. Safe to deliver twice: only the holder of the chunk's lock
    scores, and only a queued or running chunk of an open job. Returns the job when this call ended it (its last
    open chunk done, or this chunk failed), for the follow-ups that run once per job; else None."""
    with job_lock(locks.SCORING_CHUNK, chunk.pk) as mine:
        if not (mine and _chunk_claim(chunk)):
            return None
        try:
            _score_items(chunk.job, _chunk_items(chunk), partial(_chunk_progress, chunk))
        except Exception as error:
            logger.exception("Chunk %s of scoring job %s failed", chunk.number, chunk.job_id)
            return _chunk_end(chunk, error=f"Scoring failed in chunk {chunk.number}: {error}")
        return _chunk_end(chunk)


@transaction.atomic
def _chunk_claim(chunk: ScoringChunk) -> bool:
    """QUEUED/RUNNING -> RUNNING, and the job RUNNING. A running chunk is a dead worker's, scored again from its
    first item: the progress it had made is taken back from the job's. A chunk of a job already ended is closed."""
    # The job's row first, in every transaction that writes a job and its chunks: no deadlock, and chunks end
    # one at a time (_chunk_end).
    job = ScoringJob.objects.select_for_update().filter(pk=chunk.job_id).first()
    earlier = ScoringChunk.objects.select_for_update().filter(pk=chunk.pk, status__in=OPEN).values("done").first()
    if job is None or earlier is None:
        return False
    if job.finished:
        ScoringChunk.objects.filter(pk=chunk.pk).update(
            status=JobStatus.FAILED, error=f"Not scored: the job is {job.status}", finished_at=timezone.now()
        )
        return False
    worker = f"{os.getpid()}@{socket.gethostname()}"
    ScoringChunk.objects.filter(pk=chunk.pk).update(status=JobStatus.RUNNING, done=0, worker=worker, heartbeat_at=Now())
    ScoringJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, done=F("done") - earlier["done"], heartbeat_at=Now()
    )
    chunk.refresh_from_db(fields=["status", "done", "worker", "heartbeat_at"])  # its job stays as loaded
    return True


def _chunk_items(chunk: ScoringChunk) -> QuerySet[Item]:
    return items_to_score(chunk.job).filter(pk__gte=chunk.first_item_id, pk__lte=chunk.last_item_id)


@transaction.atomic
def _chunk_progress(chunk: ScoringChunk, scored: int) -> None:
    """The chunk's and its job's progress move on together."""
    ScoringJob.objects.filter(pk=chunk.job_id).update(done=F("done") + scored, heartbeat_at=Now())
    ScoringChunk.objects.filter(pk=chunk.pk).update(done=F("done") + scored, heartbeat_at=Now())


@transaction.atomic
def _chunk_end(chunk: ScoringChunk, *, error: str = "") -> ScoringJob | None:
    """Mark the chunk done (or failed, failing its job); the job is done when no chunk of it is left open. Its
    row is locked first, so two chunks ending at once end one after the other and exactly one sees none left."""
    ScoringJob.objects.select_for_update().filter(pk=chunk.job_id).first()
    status = JobStatus.FAILED if error else JobStatus.DONE
    ScoringChunk.objects.filter(pk=chunk.pk, status=JobStatus.RUNNING).update(
        status=status, error=error[:2000], heartbeat_at=Now(), finished_at=timezone.now()
    )
    if error:
        return scoring_job_fail(job_id=chunk.job_id, error=error)
    open_chunks = ScoringChunk.objects.filter(job_id=OuterRef("pk"), status__in=OPEN)
    ended = (
        ScoringJob.objects.filter(pk=chunk.job_id, status=JobStatus.RUNNING)
        .filter(~Exists(open_chunks))
        .update(status=JobStatus.DONE, total=F("done"), finished_at=timezone.now())
    )
    return ScoringJob.objects.get(pk=chunk.job_id) if ended else None


@transaction.atomic
def scoring_job_fail(*, job_id: int, error: str) -> ScoringJob | None:
    """Fail an open job with the reason, and close its queued chunks (their tasks then do nothing); chunks still
    running finish or die. Returns the job if this call failed it."""
    ended = ScoringJob.objects.filter(pk=job_id, status__in=OPEN).update(
        status=JobStatus.FAILED, error=error[:2000], finished_at=timezone.now()
    )
    if not ended:
        return None
    ScoringChunk.objects.filter(job_id=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.FAILED, error="Not scored: the job failed", finished_at=timezone.now()
    )
    return ScoringJob.objects.get(pk=job_id)


# A job with no chunks, whole.


def scoring_run(*, job: ScoringJob) -> ScoringJob:
    """Score every item of a job that has no chunks. Safe to deliver twice: only the lock holder scores."""
    if job.chunks.exists():  # its chunks' tasks score it
        logger.warning("Scoring job %s has chunks: not scored whole", job.pk)
        return job
    with job_lock(locks.SCORING, job.pk) as mine:
        claimed = mine and ScoringJob.objects.filter(pk=job.pk, status__in=OPEN).update(
            status=JobStatus.RUNNING, done=0, heartbeat_at=Now()
        )
        if not claimed:
            job.refresh_from_db()
            return job
        try:
            _score_items(job, items_to_score(job), partial(_job_progress, job))
        except Exception as error:
            logger.exception("Scoring job %s failed", job.pk)
            ScoringJob.objects.filter(pk=job.pk).update(
                status=JobStatus.FAILED, error=f"Scoring failed: {error}"[:2000], finished_at=timezone.now()
            )
            raise
        ScoringJob.objects.filter(pk=job.pk).update(status=JobStatus.DONE, total=F("done"), finished_at=timezone.now())
    job.refresh_from_db()
    return job


def _job_progress(job: ScoringJob, scored: int) -> None:
    ScoringJob.objects.filter(pk=job.pk).update(done=F("done") + scored, heartbeat_at=Now())


def _score_items(job: ScoringJob, items: QuerySet[Item], progress: Callable[[int], None]) -> None:
    """Score the items with the job's model, SCORE_BATCH at a time in id order, reporting each batch's count."""
    from training.ml.scoring import RewardScorer  # torch: only on the worker

    model = job.reward_model
    config = model.run.config
    # Loaded once for all the items, not once per batch.
    scorer = RewardScorer(
        model.path, batch_size=config.get("batch_size", 32) * 2, max_length=config.get("max_length", 256)
    )
    temperature = model_temperature(model)
    batch: list[Item] = []
    for item in items.order_by("pk").only(*ITEM_FIELDS).iterator(chunk_size=SCORE_BATCH):
        batch.append(item)
        if len(batch) >= SCORE_BATCH:
            progress(_score_batch(scorer, model, batch, temperature))
            batch = []
    if batch:
        progress(_score_batch(scorer, model, batch, temperature))


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
