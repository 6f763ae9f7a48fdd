"""Selective annotation: a project's queue hands out first what teaches its reward model most.

An admin picks a strategy (training.ml.selection) in the project's selection policy. A selection run, on the gpu
worker (training.tasks.selection_run_task) under its job lock with a compare-and-swap claim, takes the project's
unlabelled pool (open, never annotated, not gold, not routed by a curation round; a seeded sample of at most the
policy's pool_limit), scores it with the active reward model (margins of every ensemble member and, for the
strategies that read them, the first member's last-layer features), and lets the strategy pick a batch. It then
swaps the project's ranks in one transaction (Item.selection_rank): the earlier picks nobody has started are
dropped, those part-way through their overlap keep their order above the new batch, so labels already given are
completed rather than wasted, and the batch is ranked from batch_size down to 1. The queue
(annotate.services.labeling) serves routed pairs, then ranked ones, then its own order, with every invariant it
keeps for the rest (overlap, leases, gold mixing, skip-locked, no repeats).

Selection runs again when a model is promoted (after_promotion) and after every_labels new human labels (the
watchdog's minute check, selection_runs_due), and whenever an admin asks. A strategy that reads a model (all but
random) waits for one: without a model that can serve it nothing is ranked and the page says so. One selection runs
at a time per project: asked again while one waits, the waiting one takes the new settings; while one runs, a new
one follows it, and a run whose strategy or model is no longer the project's writes nothing.
"""

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from annotate.models import Item, Project
from concord import jobs, locks
from concord.errors import FieldError, ServiceError
from concord.jobs import enqueue_on_commit
from concord.locks import job_lock
from training.ml.selection import STRATEGIES, Labelled, Pool, required_inputs
from training.models import RewardModel, SelectionPolicy, SelectionRun
from training.selectors_selection import (
    active_model,
    human_label_count,
    selection_blocker,
    selection_needs_model,
    selection_policy,
    selection_reads_features,
    selection_run_active,
)

if TYPE_CHECKING:
    from training.ml.scoring import PairSignals, RewardScorer

logger = logging.getLogger(__name__)

# Pairs scored at a time; the run's progress moves on after each chunk.
SCORE_CHUNK = 512
# Labelled pairs scored for the strategies that read them (fisher, coverage, errors): a sample, enough to place
# the information already gathered, the covered regions and the model's errors.
LABELLED_LIMIT = 5000
# The pool a strategy reading features may score: its features are hidden x 8 bytes a pair (1.4 GB at 200,000
# pairs and 3,584 dimensions), and fisher and coverage shortlist this many anyway (training.ml.selection).
FEATURE_POOL_MAX = 200_000
LIMITS = {
    # A batch's swap locks its items' rows for one transaction, which the queue's ranked stage waits on.
    "batch_size": (1, 10_000),
    "pool_limit": (1, 10_000_000),
    "every_labels": (0, 10_000_000),
}
# A queued selection that no worker has taken for this long is sent again (the broker may have lost it).
RESEND_QUEUED_AFTER = timedelta(hours=1)
SETTINGS = ("strategy", "batch_size", "random_share", "pool_limit")


class SelectionError(ServiceError):
    """A policy or a selection the service refuses: each problem with the field it is about."""


def policy_errors(values: dict[str, Any]) -> list[FieldError]:
    """Every problem with a policy's settings, each named by its field."""
    errors = []
    if values["strategy"] not in (SelectionPolicy.QUEUE_ORDER, *STRATEGIES):
        errors.append(FieldError("strategy", f"must be one of {', '.join(STRATEGIES)}, or empty for the queue order"))
    for name, (low, high) in LIMITS.items():
        if not low <= values[name] <= high:
            errors.append(FieldError(name, f"must be between {low:,} and {high:,}"))
    if not 0 <= values["random_share"] <= 1:
        errors.append(FieldError("random_share", "must be between 0 and 1"))
    if errors:
        return errors
    if values["pool_limit"] < values["batch_size"]:
        errors.append(FieldError("pool_limit", "must be at least the batch size"))
    elif values["pool_limit"] > FEATURE_POOL_MAX and _reads_features(values["strategy"]):
        message = f"must be at most {FEATURE_POOL_MAX:,} for a strategy that reads every item's features"
        errors.append(FieldError("pool_limit", message))
    return errors


def _reads_features(strategy: str) -> bool:
    return bool(strategy) and selection_reads_features(strategy=strategy)


@transaction.atomic
def selection_policy_update(
    *, project: Project, updated_by: AbstractBaseUser | None, **values: Any
) -> tuple[SelectionPolicy, SelectionRun | None]:
    """Set the project's policy (strategy, batch_size, random_share, pool_limit, every_labels, after_promotion).
    A strategy the active model cannot serve is refused. Choosing the queue order, or a strategy that must wait
    for a model, takes every rank back at once; otherwise a change of strategy or settings selects again (the run
    returned), and a change of the reruns alone does not."""
    errors = policy_errors(values)
    if errors:
        raise SelectionError(errors=errors)
    Project.objects.select_for_update().filter(pk=project.pk).first()  # one policy change at a time
    before = selection_policy(project)
    model = active_model(project)
    blocker = selection_blocker(policy=SelectionPolicy(project=project, **values), model=model)
    if blocker and values["strategy"] and model is not None:
        raise SelectionError(errors=[("strategy", blocker)])
    policy, _ = SelectionPolicy.objects.update_or_create(
        project=project, defaults={**values, "updated_by_id": getattr(updated_by, "pk", None)}
    )
    if blocker:
        selection_ranks_clear(project=project)
        return policy, None
    changed = any(getattr(before, name) != getattr(policy, name) for name in SETTINGS)
    if not changed:
        return policy, None
    return policy, selection_run_create(project=project, reason=SelectionRun.Reason.POLICY, created_by=updated_by)


def selection_ranks_clear(*, project: Project) -> int:
    """Take every selection rank of the project back: the queue returns to its own order."""
    return Item.objects.filter(project=project, selection_rank__gt=0).update(selection_rank=0)


@transaction.atomic
def selection_run_create(*, project: Project, reason: str, created_by: AbstractBaseUser | None = None) -> SelectionRun:
    """A selection under the project's policy and active model, enqueued after the commit. While one waits, that
    one takes the policy's settings and model now and is returned; while one runs, it is asked to be followed by
    a new one (rerun_requested) and is returned."""
    Project.objects.select_for_update().filter(pk=project.pk).first()
    policy = selection_policy(project)
    model = active_model(project)
    blocker = selection_blocker(policy=policy, model=model)
    if blocker:
        raise SelectionError(errors=[("strategy", blocker)])
    fields = {
        **{name: getattr(policy, name) for name in SETTINGS},
        "reward_model": model if selection_needs_model(strategy=policy.strategy) else None,
    }
    active = selection_run_active(project)
    if active is not None:
        return _follow_up(active, fields)
    run = SelectionRun.objects.create(
        project=project, reason=reason, created_by_id=getattr(created_by, "pk", None), **fields
    )
    enqueue_on_commit(jobs.SELECTION, run.pk)
    return run


def _follow_up(active: SelectionRun, fields: dict[str, Any]) -> SelectionRun:
    """A waiting run takes the new settings; a running one is asked for a successor if they differ from its own."""
    waiting = SelectionRun.objects.filter(pk=active.pk, status=SelectionRun.Status.QUEUED)
    if waiting.update(**fields):
        active.refresh_from_db()
        return active
    if any(getattr(active, name) != value for name, value in fields.items()):
        SelectionRun.objects.filter(pk=active.pk).update(rerun_requested=True)
        active.refresh_from_db()
    return active


def selection_after_promotion(*, reward_model: RewardModel) -> SelectionRun | None:
    """Select again under the project's policy now that it has a new active model, if the policy says so and the
    model can serve its strategy (a promotion never fails for a selection's sake)."""
    policy = selection_policy(reward_model.project)
    if not policy.pk or not policy.after_promotion or selection_blocker(policy=policy, model=reward_model):
        return None
    return selection_run_create(project=reward_model.project, reason=SelectionRun.Reason.PROMOTION)


def selection_runs_due() -> list[SelectionRun]:
    """The watchdog's minute check: start a selection in every project whose policy asks for one after
    every_labels new human labels and has had that many since its last selection began (failed ones included,
    so a selection that keeps failing waits for new labels too), or has never selected; and send again a queued
    selection no worker has taken for RESEND_QUEUED_AFTER."""
    _resend_stale_queued()
    started = []
    for policy in SelectionPolicy.objects.filter(every_labels__gt=0).exclude(strategy="").select_related("project"):
        try:
            run = _run_if_due(policy)
        except SelectionError as error:  # the model changed since the check: this project waits, the rest go on
            logger.warning("Selection for project %s not started: %s", policy.project_id, error)
            continue
        if run is not None:
            started.append(run)
    return started


def _run_if_due(policy: SelectionPolicy) -> SelectionRun | None:
    project = policy.project
    if selection_run_active(project) is not None or selection_blocker(policy=policy):
        return None
    last = SelectionRun.objects.filter(project=project).first()
    if last is not None and human_label_count(project) - last.labels_at_start < policy.every_labels:
        return None
    return selection_run_create(project=project, reason=SelectionRun.Reason.LABELS)


def _resend_stale_queued() -> None:
    stale_before = timezone.now() - RESEND_QUEUED_AFTER
    stale = SelectionRun.objects.filter(status=SelectionRun.Status.QUEUED).alias(
        last_sent=Coalesce("recovered_at", "created_at")
    )
    for pk in stale.filter(last_sent__lt=stale_before).values_list("pk", flat=True):
        if SelectionRun.objects.filter(pk=pk, status=SelectionRun.Status.QUEUED).update(recovered_at=Now()):
            enqueue_on_commit(jobs.SELECTION, pk)


def selection_run_execute(*, run: SelectionRun) -> SelectionRun:
    """Rank the project's pool under the run's strategy. Safe to deliver twice: only the lock holder runs it, and
    its result replaces the earlier ranks at once. A successor asked for meanwhile is started after it."""
    with job_lock(locks.SELECTION, run.pk) as mine:
        active = [SelectionRun.Status.QUEUED, SelectionRun.Status.RUNNING]
        claimed = mine and SelectionRun.objects.filter(pk=run.pk, status__in=active).update(
            status=SelectionRun.Status.RUNNING, done=0, heartbeat_at=Now(), message="reading the pool"
        )
        if claimed:
            run.refresh_from_db()
            _execute_claimed(run)
    run.refresh_from_db()
    if run.finished and run.rerun_requested:
        _start_successor(run)
    return run


def _execute_claimed(run: SelectionRun) -> None:
    try:
        SelectionRun.objects.filter(pk=run.pk).update(labels_at_start=human_label_count(run.project))
        _select(run)
    except Exception as error:
        logger.exception("Selection run %s failed", run.pk)
        _finish(run, status=SelectionRun.Status.FAILED, error=f"Selection failed: {error}"[:2000])


def _start_successor(run: SelectionRun) -> None:
    try:
        selection_run_create(project=run.project, reason=run.reason)
    except SelectionError as error:
        logger.warning("No selection follows run %s: %s", run.pk, error)


def _finish(run: SelectionRun, **changes: Any) -> None:
    SelectionRun.objects.filter(pk=run.pk).update(message="", heartbeat_at=Now(), finished_at=timezone.now(), **changes)


def _progress(run: SelectionRun, **changes: Any) -> None:
    SelectionRun.objects.filter(pk=run.pk).update(heartbeat_at=Now(), **changes)


def _select(run: SelectionRun) -> None:
    from training.ml.selection import select  # numpy, and faiss for errors: only on the worker

    rng = np.random.default_rng(run.pk)
    pool_ids = _pool_ids(run, rng)
    labelled_ids, signs = _labelled(run, rng)
    _progress(run, pool=len(pool_ids), total=len(pool_ids) + len(labelled_ids), message="scoring the pool")
    if not len(pool_ids):
        _ranks_write(run, pool_ids)  # nothing left unlabelled: nothing ranked
        return
    pool_ids, pool, labelled = _inputs(run, pool_ids, labelled_ids, signs)
    _progress(run, message=f"choosing {min(run.batch_size, len(pool_ids)):,} of {len(pool_ids):,} items")
    picks = select(run.strategy, pool, run.batch_size, rng=rng, labelled=labelled, random_share=run.random_share)
    _ranks_write(run, pool_ids[picks])


def _pool_ids(run: SelectionRun, rng: np.random.Generator) -> np.ndarray:
    """The unlabelled pool's ids, a seeded sample of pool_limit of them when there are more, in id order."""
    open_unlabelled = Item.objects.filter(
        project_id=run.project_id, is_gold=False, annotation_count=0, priority=0
    ).order_by("pk")
    ids = np.fromiter(open_unlabelled.values_list("pk", flat=True).iterator(chunk_size=50_000), dtype=np.int64)
    if len(ids) > run.pool_limit:
        ids = np.sort(rng.choice(ids, size=run.pool_limit, replace=False))
    return ids


def _labelled(run: SelectionRun, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A sample of the items people have labelled with a side, and that side (+1 B, -1 A) by their majority: for
    the strategies that read what is labelled already."""
    if not selection_reads_features(strategy=run.strategy):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rows = list(
        Item.objects.filter(project_id=run.project_id, human_count__gt=0)
        .exclude(prefer_a_count=F("prefer_b_count"))
        .values_list("pk", "prefer_a_count", "prefer_b_count")
        .order_by("pk")
    )
    if len(rows) > LABELLED_LIMIT:
        rows = [rows[i] for i in np.sort(rng.choice(len(rows), size=LABELLED_LIMIT, replace=False))]
    ids = np.array([pk for pk, _, _ in rows], dtype=np.int64)
    signs = np.array([1 if b > a else -1 for _, a, b in rows], dtype=np.int64)
    return ids, signs


def _inputs(
    run: SelectionRun, pool_ids: np.ndarray, labelled_ids: np.ndarray, signs: np.ndarray
) -> tuple[np.ndarray, Pool, Labelled]:
    """The strategy's inputs: the model's signals on the pool and on the labelled sample (none for random), with
    the pool's ids (less any item deleted meanwhile)."""
    needed = required_inputs(run.strategy)
    if not needed:
        return pool_ids, Pool(size=len(pool_ids)), Labelled()
    if run.reward_model is None:
        raise SelectionError(f"the {run.strategy} strategy needs a reward model, and its model was deleted")
    scorer = _scorer(run.reward_model)
    features = selection_reads_features(strategy=run.strategy)
    pool_ids, pool = _signals(run, scorer, pool_ids, done=0, features=features)
    kept_ids, known = _signals(run, scorer, labelled_ids, done=len(pool_ids), features=features)
    labelled = Labelled()
    if known is not None:
        kept_signs = signs[np.isin(labelled_ids, kept_ids)]  # kept_ids keep labelled_ids' order
        labelled = Labelled(known.features, known.margins, known.embeddings, kept_signs)
    # Only what the strategy reads: a single model's one column of member margins is no ensemble to check.
    given = {name: getattr(pool, name) for name in needed} if pool is not None else {}
    return pool_ids, Pool(size=len(pool_ids), **given), labelled


def _scorer(model: RewardModel) -> "RewardScorer":
    from training.ml.scoring import RewardScorer  # torch: only on the worker

    config = model.run.config
    batch_size, max_length = config.get("batch_size", 32) * 2, config.get("max_length", 256)
    return RewardScorer(model.path, batch_size=batch_size, max_length=max_length)


def _signals(
    run: SelectionRun, scorer: "RewardScorer", ids: np.ndarray, *, done: int, features: bool
) -> "tuple[np.ndarray, PairSignals | None]":
    """The model's signals on those of these items that still exist, in their order, a chunk at a time with the
    run's progress, and their ids; None for no items."""
    from training.ml.data import prompt_with_context
    from training.ml.scoring import PairSignals

    parts: list[PairSignals] = []
    kept: list[int] = []
    for start in range(0, len(ids), SCORE_CHUNK):
        chunk = [int(pk) for pk in ids[start : start + SCORE_CHUNK]]
        items = Item.objects.only("prompt", "context", "response_a", "response_b").in_bulk(chunk)
        found = [items[pk] for pk in chunk if pk in items]
        pairs = [(prompt_with_context(i.prompt, i.context), i.response_a, i.response_b) for i in found]
        if pairs:
            parts.append(scorer.pair_signals(pairs, features=features))
            kept.extend(i.pk for i in found)
        _progress(run, done=done + start + len(chunk))
    if not parts:
        return np.zeros(0, dtype=np.int64), None
    return np.array(kept, dtype=np.int64), PairSignals(
        margins=np.concatenate([part.margins for part in parts]),
        member_margins=np.concatenate([part.member_margins for part in parts]),
        features=_joined([part.features for part in parts]),
        embeddings=_joined([part.embeddings for part in parts]),
    )


def _joined(arrays: list[np.ndarray | None]) -> np.ndarray | None:
    present = [array for array in arrays if array is not None]
    return np.concatenate(present) if present else None


# The ranks of earlier picks part-way through their overlap, carried above the new batch in their order.
_CARRY_SQL = """
WITH carried AS (
    SELECT id, row_number() OVER (ORDER BY selection_rank, id) AS place FROM {item}
    WHERE project_id = %(project)s AND selection_rank > 0
)
UPDATE {item} AS item SET selection_rank = %(batch)s + carried.place FROM carried WHERE item.id = carried.id
"""
_RANKS_SQL = """
UPDATE {item} AS item SET selection_rank = ranked.rank
FROM unnest(%(picked)s::bigint[], %(ranks)s::bigint[]) AS ranked(id, rank)
WHERE item.id = ranked.id AND item.project_id = %(project)s AND item.annotation_count = 0
"""


@transaction.atomic
def _ranks_write(run: SelectionRun, picked: np.ndarray) -> None:
    """Swap the project's ranks for the picks, with the run done, in one transaction, so the queue sees the old
    ranks or the new, never a mix: earlier picks nobody started are dropped, and those part-way through their
    overlap are carried above the new batch in their order. Under the project's lock, a run whose strategy,
    settings or model is no longer the project's writes nothing."""
    project = Project.objects.select_for_update().get(pk=run.project_id)
    stale = _superseded(run)
    if stale:
        _finish(run, status=SelectionRun.Status.FAILED, error=f"Not applied: {stale} while it ran.")
        return
    Item.objects.filter(project=project, selection_rank__gt=0).filter(
        Q(annotation_count=0) | Q(annotation_count__gte=F("extra_overlap") + project.overlap)
    ).update(selection_rank=0)
    ranks = np.arange(len(picked), 0, -1, dtype=np.int64)
    values = {
        "project": project.pk,
        "batch": len(picked),
        "picked": picked.tolist(),
        "ranks": ranks.tolist(),
    }
    with connection.cursor() as cursor:
        cursor.execute(_CARRY_SQL.format(item=Item._meta.db_table), values)
        cursor.execute(_RANKS_SQL.format(item=Item._meta.db_table), values)
    _finish(run, status=SelectionRun.Status.DONE, picked=len(picked))


def _superseded(run: SelectionRun) -> str:
    """What changed since the run began that makes its picks out of date; empty when nothing did."""
    policy = selection_policy(run.project)
    if any(getattr(policy, name) != getattr(run, name) for name in SETTINGS):
        return "the project's selection policy changed"
    if run.reward_model_id is not None and getattr(active_model(run.project), "pk", None) != run.reward_model_id:
        return "another reward model was promoted"
    return ""
