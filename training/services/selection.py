"""Selective annotation: a project's queue hands out first what teaches its reward model most.

An admin picks a strategy (training.ml.selection) in the project's selection policy. A selection run, on the gpu
worker (training.tasks.selection_run_task) under its job lock with a compare-and-swap claim, takes the project's
unlabelled pool (open, never annotated, not gold, not routed by a curation round; a seeded sample of at most the
policy's pool_limit), scores it with the active reward model (margins of every ensemble member, the first member's
last-layer features), and lets the strategy pick a batch. It then swaps the project's ranks in one transaction:
every earlier rank cleared, the batch ranked from batch_size down to 1 (Item.selection_rank). The queue
(annotate.services.labeling) serves routed pairs, then ranked ones, then its own order, with every invariant it
keeps for the rest (overlap, leases, gold mixing, skip-locked, no repeats).

Selection runs again when a model is promoted (after_promotion) and after every_labels new human labels (the
watchdog's minute check, selection_runs_due), and whenever an admin asks. A strategy that reads a model (all but
random) waits for one: without an active model nothing is ranked and the page says so.
"""

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from annotate.models import Item, Project
from concord import jobs, locks
from concord.errors import FieldError, ServiceError
from concord.jobs import enqueue_on_commit
from concord.locks import job_lock
from training.ml.selection import STRATEGIES, Labelled, Pool, required_inputs
from training.models import RewardModel, SelectionPolicy, SelectionRun
from training.selectors_selection import human_label_count, selection_policy, selection_run_active
from training.services.scoring import active_reward_model

if TYPE_CHECKING:
    from training.ml.scoring import PairSignals, RewardScorer

logger = logging.getLogger(__name__)

# Pairs scored at a time; the run's progress moves on after each chunk.
SCORE_CHUNK = 512
# Labelled pairs scored for the strategies that read them (fisher, coverage, errors): a sample, enough to place
# the information already gathered, the covered regions and the model's errors.
LABELLED_LIMIT = 5000
LIMITS = {
    "batch_size": (1, 100_000),
    "pool_limit": (1, 10_000_000),
    "every_labels": (0, 10_000_000),
}


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
    if not errors and values["pool_limit"] < values["batch_size"]:
        errors.append(FieldError("pool_limit", "must be at least the batch size"))
    return errors


@transaction.atomic
def selection_policy_update(
    *,
    project: Project,
    updated_by: AbstractBaseUser | None,
    strategy: str,
    batch_size: int,
    random_share: float,
    pool_limit: int,
    every_labels: int,
    after_promotion: bool,
) -> tuple[SelectionPolicy, SelectionRun | None]:
    """Set the project's policy. Choosing the queue order clears every rank at once; choosing a strategy starts a
    selection under it (returned) when it can run now, that is when it needs no model or the project has one."""
    values = {
        "strategy": strategy,
        "batch_size": batch_size,
        "random_share": random_share,
        "pool_limit": pool_limit,
        "every_labels": every_labels,
        "after_promotion": after_promotion,
    }
    errors = policy_errors(values)
    if errors:
        raise SelectionError(errors=errors)
    Project.objects.select_for_update().filter(pk=project.pk).first()  # one policy change at a time
    before = selection_policy(project).strategy
    _refuse_what_the_model_cannot_serve(SelectionPolicy(project=project, strategy=strategy))
    policy, _ = SelectionPolicy.objects.update_or_create(
        project=project, defaults={**values, "updated_by_id": getattr(updated_by, "pk", None)}
    )
    if strategy == SelectionPolicy.QUEUE_ORDER:
        selection_ranks_clear(project=project)
        return policy, None
    if strategy == before or not selection_can_run(policy):
        return policy, None
    return policy, selection_run_create(project=project, reason=SelectionRun.Reason.POLICY, created_by=updated_by)


def _refuse_what_the_model_cannot_serve(policy: SelectionPolicy) -> None:
    """A strategy the active model cannot serve (disagreement on a single model) is refused; one that waits for a
    model is not, since promoting one lets it run."""
    blocker = selection_blocker(policy)
    if blocker and policy.strategy and active_reward_model(policy.project) is not None:
        raise SelectionError(errors=[("strategy", blocker)])


def selection_ranks_clear(*, project: Project) -> int:
    """Take every selection rank of the project back: the queue returns to its own order."""
    return Item.objects.filter(project=project, selection_rank__gt=0).update(selection_rank=0)


def selection_needs_model(strategy: str) -> bool:
    return bool(required_inputs(strategy))


def selection_blocker(policy: SelectionPolicy) -> str:
    """Why a selection under the policy cannot start now; empty when it can."""
    if policy.strategy == SelectionPolicy.QUEUE_ORDER:
        return "choose a strategy first: the queue order needs no selection"
    if not selection_needs_model(policy.strategy):
        return ""
    model = active_reward_model(policy.project)
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


def selection_can_run(policy: SelectionPolicy) -> bool:
    return not selection_blocker(policy)


@transaction.atomic
def selection_run_create(*, project: Project, reason: str, created_by: AbstractBaseUser | None = None) -> SelectionRun:
    """A queued selection under the project's policy, enqueued after the commit; the one already queued or running,
    if there is one (a second ask adds nothing)."""
    Project.objects.select_for_update().filter(pk=project.pk).first()
    active = selection_run_active(project)
    if active is not None:
        return active
    policy = selection_policy(project)
    blocker = selection_blocker(policy)
    if blocker:
        raise SelectionError(errors=[("strategy", blocker)])
    model = active_reward_model(project)
    run = SelectionRun.objects.create(
        project=project,
        strategy=policy.strategy,
        batch_size=policy.batch_size,
        random_share=policy.random_share,
        pool_limit=policy.pool_limit,
        reward_model=model if selection_needs_model(policy.strategy) else None,
        reason=reason,
        labels_at_start=human_label_count(project),
        created_by_id=getattr(created_by, "pk", None),
    )
    enqueue_on_commit(jobs.SELECTION, run.pk)
    return run


def selection_after_promotion(*, reward_model: RewardModel) -> SelectionRun | None:
    """Select again under the project's policy now that it has a new active model, if the policy says so."""
    policy = selection_policy(reward_model.project)
    if not policy.pk or not policy.after_promotion or not selection_can_run(policy):
        return None
    return selection_run_create(project=reward_model.project, reason=SelectionRun.Reason.PROMOTION)


def selection_runs_due() -> list[SelectionRun]:
    """Start a selection in every project whose policy asks for one after every_labels new human labels and has
    had that many since its last selection started (the watchdog calls this every minute)."""
    started = []
    for policy in SelectionPolicy.objects.filter(every_labels__gt=0).exclude(strategy="").select_related("project"):
        project = policy.project
        if selection_run_active(project) is not None or not selection_can_run(policy):
            continue
        last = SelectionRun.objects.filter(project=project).exclude(status=SelectionRun.Status.FAILED).first()
        since = human_label_count(project) - (last.labels_at_start if last else 0)
        if last is None or since >= policy.every_labels:  # never selected: the policy wants ranks now
            started.append(selection_run_create(project=project, reason=SelectionRun.Reason.LABELS))
    return started


def selection_run_execute(*, run: SelectionRun) -> SelectionRun:
    """Rank the project's pool under the run's strategy. Safe to deliver twice: only the lock holder runs it, and
    its result replaces every earlier rank at once."""
    with job_lock(locks.SELECTION, run.pk) as mine:
        active = [SelectionRun.Status.QUEUED, SelectionRun.Status.RUNNING]
        claimed = mine and SelectionRun.objects.filter(pk=run.pk, status__in=active).update(
            status=SelectionRun.Status.RUNNING, done=0, heartbeat_at=Now(), message="reading the pool"
        )
        if claimed:
            try:
                _select(run)
            except Exception as error:
                logger.exception("Selection run %s failed", run.pk)
                SelectionRun.objects.filter(pk=run.pk).update(
                    status=SelectionRun.Status.FAILED,
                    error=f"Selection failed: {error}"[:2000],
                    message="",
                    finished_at=timezone.now(),
                )
    run.refresh_from_db()
    return run


def _progress(run: SelectionRun, **changes: Any) -> None:
    SelectionRun.objects.filter(pk=run.pk).update(heartbeat_at=Now(), **changes)


def _select(run: SelectionRun) -> None:
    from training.ml.selection import select  # numpy and faiss: only on the worker

    rng = np.random.default_rng(run.pk)
    pool_ids = _pool_ids(run, rng)
    labelled_ids, signs = _labelled(run, rng)
    _progress(run, pool=len(pool_ids), total=len(pool_ids) + len(labelled_ids), message="scoring the pool")
    if not len(pool_ids):
        _ranks_write(run, pool_ids)  # nothing left unlabelled: nothing ranked
        return
    pool, labelled = _inputs(run, pool_ids, labelled_ids, signs)
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
    if not {"features", "embeddings"} & required_inputs(run.strategy):
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
) -> tuple[Pool, Labelled]:
    """The strategy's inputs: the model's signals on the pool and on the labelled sample (none for random)."""
    if not required_inputs(run.strategy):
        return Pool(size=len(pool_ids)), Labelled()
    if run.reward_model is None:
        raise SelectionError(f"the {run.strategy} strategy needs a reward model, and its model was deleted")
    scorer = _scorer(run.reward_model)
    pool = _signals(run, scorer, pool_ids, done=0)
    known = _signals(run, scorer, labelled_ids, done=len(pool_ids))
    assert pool is not None  # an empty pool ranks nothing and is not scored (_select)
    # Only what the strategy reads: a single model's one column of member margins is no ensemble to check.
    needed = required_inputs(run.strategy)
    given = {name: getattr(pool, name) for name in needed}
    labelled = Labelled() if known is None else Labelled(known.features, known.margins, known.embeddings, signs)
    return Pool(size=len(pool_ids), **given), labelled


def _scorer(model: RewardModel) -> "RewardScorer":
    from training.ml.scoring import RewardScorer  # torch: only on the worker

    config = model.run.config
    batch_size, max_length = config.get("batch_size", 32) * 2, config.get("max_length", 256)
    return RewardScorer(model.path, batch_size=batch_size, max_length=max_length)


def _signals(run: SelectionRun, scorer: "RewardScorer", ids: np.ndarray, *, done: int) -> "PairSignals | None":
    """The model's signals on these items, in their order, a chunk at a time with the run's progress; None for no
    items."""
    from training.ml.data import prompt_with_context
    from training.ml.scoring import PairSignals

    parts = []
    for start in range(0, len(ids), SCORE_CHUNK):
        chunk = [int(pk) for pk in ids[start : start + SCORE_CHUNK]]
        items = Item.objects.only("prompt", "context", "response_a", "response_b").in_bulk(chunk)
        pairs = [
            (prompt_with_context(items[pk].prompt, items[pk].context), items[pk].response_a, items[pk].response_b)
            for pk in chunk
        ]
        parts.append(scorer.pair_signals(pairs))
        _progress(run, done=done + start + len(chunk))
    if not parts:
        return None
    fields = ("margins", "member_margins", "features", "embeddings")
    return PairSignals(*(np.concatenate([getattr(part, name) for part in parts]) for name in fields))


_RANKS_SQL = """
UPDATE {item} AS item SET selection_rank = ranked.rank
FROM unnest(%s::bigint[], %s::bigint[]) AS ranked(id, rank)
WHERE item.id = ranked.id AND item.project_id = %s
"""


@transaction.atomic
def _ranks_write(run: SelectionRun, picked: np.ndarray) -> None:
    """Every earlier rank of the project cleared and the picks ranked, the first highest, with the run done: one
    transaction, so the queue sees the old ranks or the new, never a mix."""
    selection_ranks_clear(project=run.project)
    ranks = np.arange(len(picked), 0, -1, dtype=np.int64)
    with connection.cursor() as cursor:
        cursor.execute(_RANKS_SQL.format(item=Item._meta.db_table), [picked.tolist(), ranks.tolist(), run.project_id])
    SelectionRun.objects.filter(pk=run.pk).update(
        status=SelectionRun.Status.DONE,
        picked=len(picked),
        message="",
        heartbeat_at=Now(),
        finished_at=timezone.now(),
    )
