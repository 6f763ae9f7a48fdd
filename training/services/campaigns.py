"""Human-AI synergy curation campaigns (Skywork-Reward-V2; Secrets of RLHF II), run round by round.

A campaign is started by an admin with its settings (training.ml.synergy.CampaignSettings). Each round:

  train     trains a reward-model ensemble (a TrainingRun of its own, with the run's guarantees) on the
            previous round's curated version, or in round 1 on a seed version of the gold pairs alone. Gold rows
            are split by prompt: train, validation (checkpoints are chosen and the temperature fitted there) and
            test (the round's held-out gold accuracy);
  score     scores every pair of the project with that ensemble (a ScoringJob): mean margin and spread;
  decide    decides every silver and unlabelled pair (training.ml.synergy: accept, flip or drop, uncertain; an AI
            label or none), written in bulk a chunk at a time;
  retrieve  embeds pairs not yet in the project's vector index (faiss, training.ml.retrieval), pulls the nearest
            undecided pairs of every gold pair the ensemble gets wrong or barely right, tops up with the most
            uncertain silver pairs, up to the round's human budget, and routes them (Item.priority: annotators
            get them first);
  label     waits until every routed pair is labelled by Concord's annotators, or a curator closes the round;
  freeze    freezes the round's version: gold rows (human consensus, adjudicated, gold answers) plus the pairs the
            round kept (ai_accepted, ai_flipped, ai_labelled: margin and weight from the ensemble's confidence),
            with lineage to the round, its models and the previous round's version. Then the campaign stops (its
            stop rule) or the next round starts, training on this version.

Every stage runs on the gpu queue (training.tasks.campaign_round_task) under the round's advisory job lock with a
compare-and-swap claim, so a second delivery leaves it alone; `stage` is written as each one ends, and every
stage can run again from its start, so a round whose worker was killed resumes where it was (the watchdog,
training.services.recovery, sends a running round whose lock is free again). Between stages that wait (for the
training run, the scoring job, the humans) the round is WAITING: the jobs it waits for send its task when they
end, and campaign_rounds_check (every minute, with the watchdog) sends it for anything that ended unnoticed.
"""

import hashlib
import logging
import time
import traceback
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings as django_settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Count, F, FilteredRelation, Max, Min, Q, Sum
from django.db.models.functions import Abs, Greatest, Now
from django.utils import timezone

from annotate import rules
from annotate.models import GoldAnswer, Item, Project
from annotate.rules import Pool
from concord import jobs, locks
from concord.errors import ServiceError
from concord.jobs import enqueue_on_commit
from concord.locks import job_lock
from curation import rule_sql
from curation.models import DatasetRow, DatasetVersion
from curation.services.version_rows import (
    DEFAULT_STATES,
    PlannedRow,
    VersionFilters,
    candidates,
    prompt_hash,
    split_for,
)
from curation.services.versions import dataset_version_create, dataset_version_freeze
from training.ml.synergy import (
    KEEPING,
    CampaignSettings,
    Decision,
    Vote,
    ai_margin,
    decide_silver,
    decide_unlabelled,
    kept_label,
    probability,
    retrieval_budget,
    retrieval_k,
    round_budget,
    stop_reason,
)
from training.models import Campaign, CampaignRound, DecisionOverride, PairDecision, TrainingRun
from training.selectors_backbones import BACKBONE_REFUSED, backbone_allowed
from training.selectors_campaigns import routed_labelled
from training.services.runs import training_run_enqueue
from training.services.scoring import model_temperature, scoring_job_create

logger = logging.getLogger(__name__)

# A campaign needs at least this many gold pairs with a side: fewer train nothing and measure nothing.
MIN_GOLD_PAIRS = 10
DECIDE_CHUNK = 20_000
EMBED_CHUNK = 4_096
# The index is saved this often while new pairs are embedded (and at the end): rewriting a large index after
# every chunk would cost more than embedding it.
INDEX_SAVE_INTERVAL_S = 300
HISTOGRAM_BINS = 24
# Strengths beyond this many temperatures fall in the histogram's end bins (p below 0.25% or above 99.75%).
HISTOGRAM_SPAN_T = 6.0
# A round queued this long without a worker's claim is sent again (campaign_rounds_check).
QUEUED_RESEND_AFTER = timedelta(minutes=10)
# Priorities of routed pairs: pulled by a gold error first (nearest to the worst errors highest), then the most
# uncertain silver pairs.
RETRIEVED_PRIORITY = 2_000_000
UNCERTAIN_PRIORITY = 1_000_000
OVERRIDES = {
    Pool.SILVER: (Decision.ACCEPT, Decision.FLIP, Decision.DROP, "route"),
    Pool.UNLABELLED: (Decision.AI_LABEL, Decision.DROP, "route"),
}


class CampaignError(ServiceError):
    """A campaign that cannot be started or changed, or a round that cannot go on."""


def campaign_settings_clean(config: dict[str, Any]) -> dict[str, Any]:
    """The settings as CampaignSettings reads them back; CampaignError names every one out of range."""
    try:
        parsed = CampaignSettings.from_dict(config)
    except (TypeError, ValueError) as error:
        raise CampaignError(str(error)) from error
    problems = parsed.problems()
    if problems:
        raise CampaignError(errors=problems)
    return parsed.to_dict()


def gold_items(project: Project) -> Any:
    """The project's gold pairs with the side their label prefers (`gold`), 0 (a tie) left out."""
    items = rule_sql.with_pools(Item.objects.filter(project=project), project).filter(pool=Pool.GOLD)
    return items.annotate(gold=rule_sql.gold_sign()).exclude(gold=0)


@transaction.atomic
def campaign_start(
    *, project: Project, name: str, config: dict[str, Any], created_by: AbstractBaseUser | None
) -> Campaign:
    """A running campaign of the project and its first round, whose task is sent after the commit. Refused while
    another campaign of the project runs, or with fewer than MIN_GOLD_PAIRS gold pairs to train on."""
    clean = campaign_settings_clean(config)
    if clean["backbone"] and not backbone_allowed(clean["backbone"], user=created_by):
        # Its rounds' runs are checked again (training_run_enqueue, the worker); this says so beside the field.
        raise CampaignError(errors=[("backbone", BACKBONE_REFUSED)])
    Project.objects.select_for_update().filter(pk=project.pk).first()  # two starts queue rather than collide
    if Campaign.objects.filter(project=project, status=Campaign.Status.RUNNING).exists():
        raise CampaignError("a campaign of this project is running: stop it before starting another")
    gold = gold_items(project).count()
    if gold < MIN_GOLD_PAIRS:
        raise CampaignError(
            f"the project has {gold} gold pairs (human-verified, with a side); a campaign needs at least "
            f"{MIN_GOLD_PAIRS}: label or adjudicate more first"
        )
    campaign = Campaign(
        project=project,
        name=name.strip() or f"Campaign {timezone.now():%Y-%m-%d %H:%M}",
        config=clean,
        created_by_id=created_by.pk if created_by is not None else None,
    )
    campaign.full_clean(exclude=["created_by"])
    campaign.save()
    _round_create(campaign, 1)
    return campaign


def _round_create(campaign: Campaign, number: int) -> CampaignRound:
    round_ = CampaignRound.objects.create(campaign=campaign, number=number, message="Waiting for a gpu worker")
    enqueue_on_commit(jobs.CAMPAIGN_ROUND, round_.pk)
    return round_


def campaign_settings(campaign: Campaign) -> CampaignSettings:
    return CampaignSettings.from_dict(campaign.config)


@transaction.atomic
def campaign_stop(*, campaign: Campaign, by: AbstractBaseUser) -> Campaign:
    """Stop a running campaign: its unfinished round ends where it is, and its routed pairs go back to the
    ordinary queue. What the finished rounds froze stays."""
    # The rounds' rows first: a worker routing pairs holds its round's row (_stage_retrieve), so it has either
    # routed (and the pairs are un-routed below) or finds the campaign stopped.
    list(CampaignRound.objects.select_for_update().filter(campaign=campaign))
    stopped = Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.RUNNING).update(
        status=Campaign.Status.STOPPED, stop_reason=f"stopped by {by}", finished_at=timezone.now()
    )
    if not stopped:
        raise CampaignError(f"campaign {campaign.name!r} is not running")
    for round_ in CampaignRound.objects.filter(campaign=campaign).exclude(status=CampaignRound.Status.DONE):
        campaign_round_unroute(round_=round_)
        CampaignRound.objects.filter(pk=round_.pk).update(
            status=CampaignRound.Status.FAILED, error=f"Stopped by {by}", finished_at=timezone.now()
        )
    campaign.refresh_from_db()
    return campaign


@transaction.atomic
def campaign_round_close(*, round_: CampaignRound, by: AbstractBaseUser) -> CampaignRound:
    """A curator ends a round's labelling now: pairs not labelled yet stay out of its version; it freezes next.
    Closing a closed round changes nothing."""
    open_round = CampaignRound.objects.filter(
        pk=round_.pk,
        stage=CampaignRound.Stage.LABEL,
        status__in=[CampaignRound.Status.WAITING, CampaignRound.Status.RUNNING],
        campaign__status=Campaign.Status.RUNNING,
    )
    if not open_round.exists():
        raise CampaignError(f"round {round_.number} is not waiting for labels")
    if not open_round.filter(closed_by__isnull=True).update(closed_by_id=by.pk):
        round_.refresh_from_db()
        return round_
    enqueue_on_commit(jobs.CAMPAIGN_ROUND, round_.pk)
    round_.refresh_from_db()
    return round_


@transaction.atomic
def pair_decision_override(
    *, pair_decision: PairDecision, curator: AbstractBaseUser, decision: str, reason: str
) -> PairDecision:
    """A curator's decision on a pair in place of the round's, kept with who and why (the latest one counts).
    "route" sends the pair to the annotators now. Refused once the round's version is frozen."""
    allowed = OVERRIDES.get(Pool(pair_decision.pool), ())
    if decision not in allowed:
        raise CampaignError(
            errors=[("decision", f"must be one of {', '.join(allowed)} for a {pair_decision.pool} pair")]
        )
    if not reason.strip():
        raise CampaignError(errors=[("reason", "say why: the next curator reads it")])
    locked = PairDecision.objects.select_for_update().select_related("round__campaign").get(pk=pair_decision.pk)
    round_ = locked.round
    if round_.campaign.status != Campaign.Status.RUNNING or round_.status == CampaignRound.Status.FAILED:
        raise CampaignError(f"campaign {round_.campaign.name!r} is {round_.campaign.status}: its rounds are over")
    if round_.stage in (CampaignRound.Stage.FREEZE, CampaignRound.Stage.DONE):
        raise CampaignError(f"round {round_.number} is frozen: override the pair in a later round")
    if round_.stage != CampaignRound.Stage.LABEL:
        # Until then its stages may decide and route its pairs again (a worker's rerun), which would undo it.
        raise CampaignError(f"round {round_.number} takes overrides once it has decided and routed its pairs")
    DecisionOverride.objects.create(
        pair_decision=locked, curator_id=curator.pk, decision=decision, reason=reason.strip()
    )
    locked.override = decision
    fields = ["override"]
    if decision == "route" and not locked.routed:
        locked.routed, locked.priority = True, RETRIEVED_PRIORITY * 2
        added = _route_items({locked.item_id: locked.priority}, locked.round.campaign.project)
        locked.overlap_added = added.get(locked.item_id, 0)
        fields += ["routed", "priority", "overlap_added"]
        CampaignRound.objects.filter(pk=locked.round_id).update(routed=F("routed") + 1)
    locked.save(update_fields=fields)
    return locked


# The round's task.


def campaign_round_advance(*, round_: CampaignRound) -> CampaignRound:
    """Run the round's stages from the one it is in until one must wait or the round is done. Safe to deliver
    twice: only the holder of the round's lock, having claimed it, runs (module doc)."""
    with job_lock(locks.CAMPAIGN_ROUND, round_.pk) as mine:
        waiting = [CampaignRound.Status.QUEUED, CampaignRound.Status.RUNNING, CampaignRound.Status.WAITING]
        claimed = mine and CampaignRound.objects.filter(
            pk=round_.pk, status__in=waiting, campaign__status=Campaign.Status.RUNNING
        ).update(status=CampaignRound.Status.RUNNING, heartbeat_at=Now(), error="")
        if not claimed:
            round_.refresh_from_db()
            return round_
        try:
            _run_stages(round_)
        except Exception as error:
            logger.exception("Campaign round %s failed", round_.pk)
            _fail(round_, f"{CampaignRound.Stage(round_.stage).label} failed: {error}", traceback.format_exc())
            raise
    round_.refresh_from_db()
    return round_


def _fail(round_: CampaignRound, message: str, detail: str = "") -> None:
    campaign_round_unroute(round_=round_)
    CampaignRound.objects.filter(pk=round_.pk).update(
        status=CampaignRound.Status.FAILED, error=(message + ("\n\n" + detail[-3000:] if detail else ""))[:5000]
    )
    Campaign.objects.filter(pk=round_.campaign_id, status=Campaign.Status.RUNNING).update(
        status=Campaign.Status.FAILED, stop_reason=message[:2000], finished_at=timezone.now()
    )


def _run_stages(round_: CampaignRound) -> None:
    stages = {
        CampaignRound.Stage.TRAIN: _stage_train,
        CampaignRound.Stage.SCORE: _stage_score,
        CampaignRound.Stage.DECIDE: _stage_decide,
        CampaignRound.Stage.RETRIEVE: _stage_retrieve,
        CampaignRound.Stage.LABEL: _stage_label,
        CampaignRound.Stage.FREEZE: _stage_freeze,
    }
    while True:
        round_.refresh_from_db()
        stage = CampaignRound.Stage(round_.stage)
        if stage == CampaignRound.Stage.DONE:
            return
        next_stage = stages[stage](round_)
        if next_stage is None:  # waiting for a job or for the humans
            CampaignRound.objects.filter(pk=round_.pk, status=CampaignRound.Status.RUNNING).update(
                status=CampaignRound.Status.WAITING, heartbeat_at=Now()
            )
            return
        CampaignRound.objects.filter(pk=round_.pk).update(stage=next_stage, done=0, total=0, heartbeat_at=Now())


def _progress(round_: CampaignRound, message: str, *, done: int = 0, total: int = 0) -> None:
    CampaignRound.objects.filter(pk=round_.pk).update(message=message[:500], done=done, total=total, heartbeat_at=Now())


# Stage: train.


def _stage_train(round_: CampaignRound) -> str | None:
    campaign = round_.campaign
    if round_.training_run_id is None:
        version = _training_version(round_)
        config = _train_config(campaign_settings(campaign))
        with transaction.atomic():
            run = training_run_enqueue(
                project=campaign.project, version=version, config=config, created_by=campaign.created_by
            )
            CampaignRound.objects.filter(pk=round_.pk).update(training_run=run)
        _progress(
            round_, f"Training an ensemble of {config['ensemble_size']} on {version.row_count} pairs (run {run.pk})"
        )
        return None
    run = TrainingRun.objects.get(pk=round_.training_run_id or 0)
    if run.status == TrainingRun.Status.SUCCEEDED:
        return CampaignRound.Stage.SCORE
    if run.finished:
        raise CampaignError(f"training run {run.pk} {run.status}: {run.error or 'see its page'}")
    _progress(
        round_, f"Training run {run.pk}: step {run.step} of {run.total_steps}", done=run.step, total=run.total_steps
    )
    return None


def _training_version(round_: CampaignRound) -> DatasetVersion:
    """What the round trains on: the version the previous round froze, or in round 1 the gold seed (frozen here)."""
    if round_.training_version is not None and round_.training_version.status == DatasetVersion.Status.FROZEN:
        return round_.training_version
    previous = (
        CampaignRound.objects.filter(campaign=round_.campaign, number__lt=round_.number, version__isnull=False)
        .order_by("-number")
        .first()
    )
    if previous is not None and previous.version is not None:
        CampaignRound.objects.filter(pk=round_.pk).update(training_version=previous.version)
        return previous.version
    _progress(round_, "Freezing the gold seed version")
    return _version_freeze(round_, name=f"{round_.campaign.name}: gold seed", with_decisions=False)


def _train_config(settings: CampaignSettings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "objective": "bt",
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "max_length": settings.max_length,
        "ensemble_size": settings.ensemble_size,
        "ensemble_kind": settings.ensemble_kind,
        "select_best": True,
        "seed": settings.seed,
    }
    if settings.backbone:
        config["backbone"] = settings.backbone
    return config


# Stage: score.


def _stage_score(round_: CampaignRound) -> str | None:
    if round_.scoring_job is None:
        run = TrainingRun.objects.select_related("reward_model").get(pk=round_.training_run_id or 0)
        model = run.reward_model
        metrics = (model.model_card or {}).get("metrics") or {}
        with transaction.atomic():  # a worker killed here leaves both or neither
            job = scoring_job_create(project=round_.campaign.project, created_by=None, reward_model=model)
            CampaignRound.objects.filter(pk=round_.pk).update(
                scoring_job=job,
                temperature=model_temperature(model),
                gold_accuracy=run.eval_accuracy,
                gold_pairs=metrics.get("heldout_pairs") or 0,
            )
        _progress(round_, f"Scoring {job.total} pairs (scoring job {job.pk})", total=job.total)
        return None
    job = round_.scoring_job
    if job.status == job.Status.DONE:
        return CampaignRound.Stage.DECIDE
    if job.finished:
        raise CampaignError(f"scoring job {job.pk} failed: {job.error}")
    _progress(round_, f"Scoring job {job.pk}: {job.done} of {job.total} pairs", done=job.done, total=job.total)
    return None


def _round_model_id(round_: CampaignRound) -> int:
    return TrainingRun.objects.select_related("reward_model").get(pk=round_.training_run_id or 0).reward_model.pk


def _scored(items: Any, model_id: int) -> Any:
    """The items the round's model scored, joined to their score (one join, not a subquery per column): its
    members' mean margin towards B as `mean`, their spread as `std`."""
    score = FilteredRelation("model_scores", condition=Q(model_scores__reward_model_id=model_id))
    return (
        items.annotate(score=score)
        .filter(score__isnull=False)
        .annotate(mean=F("score__ensemble_mean"), std=F("score__ensemble_std"))
    )


# Stage: decide.


def _stage_decide(round_: CampaignRound) -> str:
    project, settings = round_.campaign.project, campaign_settings(round_.campaign)
    temperature = round_.temperature or 1.0
    model_id = _round_model_id(round_)
    PairDecision.objects.filter(round=round_).delete()  # an earlier, interrupted attempt's
    pool = rule_sql.with_pools(Item.objects.filter(project=project), project).filter(
        pool__in=[Pool.SILVER, Pool.UNLABELLED]
    )
    total = pool.count()
    rows = _scored(pool, model_id).values_list("id", "pool", "silver", "mean", "std").order_by("id")
    histogram = _Histogram(temperature)
    done = 0
    bounds = Item.objects.filter(project=project).aggregate(low=Min("id"), high=Max("id"))
    low, high = bounds["low"] or 0, bounds["high"] or 0
    # A range of ids at a time, each its own short query over the primary key: no cursor held open over the whole
    # pool (PostgreSQL would materialise it in full before the first row), and no chunk query that rescans what
    # the ones before it read.
    for start in range(low, high + 1, DECIDE_CHUNK):
        chunk = list(rows.filter(id__gte=start, id__lt=start + DECIDE_CHUNK))
        done += _decide_chunk(round_, chunk, settings, temperature, histogram)
        _progress(round_, f"Deciding: {done} of {total} pairs", done=done, total=total)
    counts: dict[str, dict[str, int]] = {}
    for row in PairDecision.objects.filter(round=round_).values("pool", "decision").annotate(n=Count("id")):
        counts.setdefault(row["pool"], {})[row["decision"]] = row["n"]
    CampaignRound.objects.filter(pk=round_.pk).update(counts=counts, histogram=histogram.to_json())
    _progress(round_, f"Decided {done} pairs", done=done, total=total)
    return CampaignRound.Stage.RETRIEVE


def _decide_chunk(
    round_: CampaignRound,
    chunk: list[tuple[int, str, int, float, float]],
    settings: CampaignSettings,
    temperature: float,
    histogram: "_Histogram",
) -> int:
    if not chunk:
        return 0
    ids = np.array([r[0] for r in chunk], dtype=np.int64)
    silver = np.array([r[1] == Pool.SILVER for r in chunk])
    labels = np.array([r[2] for r in chunk], dtype=np.float64)
    mean_b = np.array([r[3] for r in chunk], dtype=np.float64)  # members' mean margin towards B
    spread = np.array([r[4] or 0.0 for r in chunk], dtype=np.float64)
    # Towards the silver label; towards B for an unlabelled pair.
    strength = np.where(silver, labels * mean_b, mean_b)
    p = probability(strength, temperature)
    decisions = np.empty(len(chunk), dtype=object)
    decisions[silver] = decide_silver(Vote("ensemble", p[silver]), spread[silver], settings)
    decisions[~silver] = decide_unlabelled(p[~silver], spread[~silver], settings)[0]
    histogram.add(strength, decisions)
    # COPY rather than INSERT: a million decisions a round are written in bulk (bench/campaign_scale.py).
    columns = "round_id, item_id, pool, label_sign, decision, override, strength, spread, p_agree, votes"
    columns += ", routed, priority, overlap_added"
    copy_sql = f"COPY {PairDecision._meta.db_table} ({columns}) FROM STDIN"
    with transaction.atomic(), connection.cursor() as cursor, cursor.cursor.copy(copy_sql) as copy:
        for i in range(len(chunk)):
            pool = Pool.SILVER if silver[i] else Pool.UNLABELLED
            label = int(labels[i]) if silver[i] else 0
            values = (float(strength[i]), float(spread[i]), float(p[i]))
            row = (round_.pk, int(ids[i]), pool.value, label, decisions[i], "", *values, "{}", False, 0, 0)
            copy.write_row(row)
    return len(chunk)


class _Histogram:
    """Counts of strength (towards the label) per decision, in HISTOGRAM_BINS bins over +-HISTOGRAM_SPAN_T
    temperatures (the end bins take everything beyond)."""

    def __init__(self, temperature: float) -> None:
        self.edges = np.linspace(-HISTOGRAM_SPAN_T * temperature, HISTOGRAM_SPAN_T * temperature, HISTOGRAM_BINS + 1)
        self.counts: dict[str, np.ndarray] = {}

    def add(self, strength: np.ndarray, decisions: np.ndarray) -> None:
        clipped = np.clip(strength, self.edges[0], self.edges[-1])
        for decision in set(decisions.tolist()):
            counts, _ = np.histogram(clipped[decisions == decision], bins=self.edges)
            self.counts[decision] = self.counts.get(decision, np.zeros(HISTOGRAM_BINS, dtype=np.int64)) + counts

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                "low": float(self.edges[i]),
                "high": float(self.edges[i + 1]),
                "counts": {decision: int(counts[i]) for decision, counts in sorted(self.counts.items())},
            }
            for i in range(HISTOGRAM_BINS)
        ]


# Stage: retrieve (and route).


def _stage_retrieve(round_: CampaignRound) -> str:
    settings = campaign_settings(round_.campaign)
    spent = (
        CampaignRound.objects.filter(campaign=round_.campaign, number__lt=round_.number).aggregate(n=Sum("routed"))["n"]
        or 0
    )
    budget = round_budget(settings, spent=spent)
    campaign_round_unroute(round_=round_)  # what an earlier, interrupted attempt routed
    PairDecision.objects.filter(round=round_, routed=True).update(routed=False, priority=0, retrieved_by=None)
    share = retrieval_budget(budget, settings)
    pulled = _retrieved(round_, settings, share) if share else []
    chosen: dict[int, tuple[int, int | None]] = {}
    for rank, (item_id, query_id) in enumerate(pulled):
        chosen[item_id] = (RETRIEVED_PRIORITY - rank, query_id)
    if len(chosen) < budget:
        for rank, item_id in enumerate(_most_uncertain(round_, exclude=list(chosen), limit=budget - len(chosen))):
            chosen[item_id] = (UNCERTAIN_PRIORITY - rank, None)
    decisions = list(PairDecision.objects.filter(round=round_, item_id__in=list(chosen)))
    for decision in decisions:
        decision.routed = True
        decision.priority, decision.retrieved_by = chosen[decision.item_id]
    with transaction.atomic():
        _hold_running(round_)
        added = _route_items({d.item_id: d.priority for d in decisions}, round_.campaign.project)
        for decision in decisions:
            decision.overlap_added = added.get(decision.item_id, 0)
        fields = ["routed", "priority", "retrieved_by", "overlap_added"]
        PairDecision.objects.bulk_update(decisions, fields, batch_size=5000)
        CampaignRound.objects.filter(pk=round_.pk).update(routed=len(decisions), routed_labelled=0)
    _progress(round_, f"Routed {len(decisions)} pairs to the annotators ({len(pulled)} near gold errors)")
    return CampaignRound.Stage.LABEL


def _hold_running(round_: CampaignRound) -> None:
    """Lock the round's row while its campaign runs (campaign_stop locks it too), else stop the stage."""
    running = CampaignRound.objects.select_for_update(of=("self",)).filter(
        pk=round_.pk, status=CampaignRound.Status.RUNNING, campaign__status=Campaign.Status.RUNNING
    )
    if not running.exists():
        raise CampaignError(f"round {round_.number}'s campaign was stopped")


def _most_uncertain(round_: CampaignRound, *, exclude: list[int], limit: int) -> list[int]:
    """Silver pairs the ensemble could not decide, most uncertain first (p nearest 1/2); ties by item id."""
    undecided = PairDecision.objects.filter(round=round_, decision=Decision.UNCERTAIN).exclude(item_id__in=exclude)
    ordered = undecided.annotate(doubt=Abs(F("p_agree") - 0.5)).order_by("doubt", "item_id")
    return list(ordered.values_list("item_id", flat=True)[:limit])


def _retrieved(round_: CampaignRound, settings: CampaignSettings, budget: int) -> list[tuple[int, int]]:
    """(item, gold item) pairs pulled to the humans by the gold pairs the ensemble gets wrong or barely right."""
    from training.ml.retrieval import retrieve  # faiss: only on the worker

    project, temperature = round_.campaign.project, round_.temperature or 1.0
    model_id = _round_model_id(round_)
    gold = _scored(gold_items(project), model_id).values_list("id", "gold", "mean", "prompt")
    # Only the gold pairs the ensemble trained on ask for neighbours: held-out gold measures the round, and pairs
    # humans labelled near its errors would flatter the next round's measure.
    fractions = gold_splits(settings)
    train = [
        (item_id, side, mean)
        for item_id, side, mean, prompt in gold
        if split_for(prompt_hash(prompt), seed=settings.seed, fractions=fractions) == "train"
    ]
    rows = np.array(train, dtype=np.float64).reshape(-1, 3)
    if not len(rows):
        return []
    p_correct = probability(rows[:, 1] * rows[:, 2], temperature)
    order = np.argsort(p_correct, kind="stable")  # the worst errors first
    ks = np.array([retrieval_k(float(p), settings.retrieval_k) for p in p_correct[order]], dtype=np.int64)
    undecided = [Decision.UNCERTAIN, Decision.UNLABELLED]
    allowed = np.array(
        PairDecision.objects.filter(round=round_, decision__in=undecided).values_list("item_id", flat=True),
        dtype=np.int64,
    )
    if not len(allowed):
        return []
    index = _pair_index(round_, project)
    return retrieve(index, rows[order, 0].astype(np.int64), ks, allowed, budget=budget)


def _pair_index(round_: CampaignRound, project: Project) -> Any:
    """The project's vector index of its pairs, with every pair that arrived since it was last saved embedded
    and added (once each: a pair's text never changes)."""
    from training.ml.retrieval import PairEncoder, PairIndex, pair_text

    encoder_dir = embedding_model()
    path = index_path(project, encoder_dir)
    encoder = PairEncoder(encoder_dir, max_length=campaign_settings(round_.campaign).max_length)
    index = PairIndex.load(path) if path.exists() else None
    all_ids = np.array(Item.objects.filter(project=project).values_list("id", flat=True), dtype=np.int64)
    missing = index.missing(all_ids) if index is not None else all_ids
    done, saved = 0, time.monotonic()
    for start in range(0, len(missing), EMBED_CHUNK):
        ids = missing[start : start + EMBED_CHUNK]
        items = Item.objects.filter(pk__in=ids.tolist()).only("id", "prompt", "context", "response_a", "response_b")
        texts = {i.pk: pair_text(i.prompt, i.context, i.response_a, i.response_b) for i in items}
        present = [i for i in ids.tolist() if i in texts]
        vectors = encoder.encode([texts[i] for i in present])
        if index is None:
            index = PairIndex.new(vectors.shape[1])
        index.add(np.array(present, dtype=np.int64), vectors)
        done += len(ids)
        _progress(round_, f"Embedding new pairs: {done} of {len(missing)}", done=done, total=len(missing))
        if time.monotonic() - saved >= INDEX_SAVE_INTERVAL_S:
            index.save(path)  # a killed worker keeps what it embedded until now
            saved = time.monotonic()
    if index is not None and len(missing):
        index.save(path)
    if index is None:
        index = PairIndex.new(encoder.dim)
    return index


def embedding_model() -> str:
    """The encoder of pairs for retrieval: CONCORD_EMBEDDING_MODEL, else the default backbone."""
    from training.ml.config import default_backbone

    return django_settings.CONCORD_EMBEDDING_MODEL or default_backbone()


def index_path(project: Project, encoder_dir: str) -> Path:
    """One index per project and encoder: vectors of two encoders do not mix."""
    encoder = hashlib.sha256(str(Path(encoder_dir).resolve()).encode()).hexdigest()[:12]
    return Path(django_settings.TRAINING_ROOT) / "embeddings" / f"project-{project.pk}-{encoder}.faiss"


def _route_items(priorities: dict[int, int], project: Project) -> dict[int, int]:
    """Put the items first in the annotators' queue. An item whose imported labels already fill the overlap wants
    one more annotation, a human one, to be verified: returns the annotations added to each item's overlap, which
    un-routing takes back."""
    if not priorities:
        return {}
    items = list(
        Item.objects.filter(pk__in=list(priorities)).only("id", "annotation_count", "extra_overlap", "priority")
    )
    added: dict[int, int] = {}
    for item in items:
        item.priority = priorities[item.pk]
        if item.annotation_count >= project.overlap + item.extra_overlap:
            wanted = item.annotation_count - project.overlap + 1
            added[item.pk] = wanted - item.extra_overlap
            item.extra_overlap = wanted
    Item.objects.bulk_update(items, ["priority", "extra_overlap"], batch_size=5000)
    return added


def campaign_round_unroute(*, round_: CampaignRound) -> None:
    """Send the round's routed pairs back to the ordinary queue, and take back the annotation routing added to
    the overlap of those no human has labelled yet (one that was labelled used it)."""
    routed = PairDecision.objects.filter(round=round_, routed=True)
    Item.objects.filter(pk__in=routed.values("item_id")).update(priority=0)
    grown = routed.filter(overlap_added__gt=0)
    for added in set(grown.values_list("overlap_added", flat=True)):
        unlabelled = grown.filter(overlap_added=added, item__human_count=0).values("item_id")
        Item.objects.filter(pk__in=unlabelled).update(extra_overlap=Greatest(F("extra_overlap") - added, 0))
    grown.update(overlap_added=0)


# Stage: label.


def _stage_label(round_: CampaignRound) -> str | None:
    labelled = routed_labelled(round_)
    CampaignRound.objects.filter(pk=round_.pk).update(routed_labelled=labelled)
    if labelled < round_.routed and round_.closed_by_id is None:
        _progress(
            round_,
            f"Waiting for the annotators: {labelled} of {round_.routed} routed pairs labelled",
            done=labelled,
            total=round_.routed,
        )
        return None
    with transaction.atomic():
        _hold_running(round_)
        campaign_round_unroute(round_=round_)
        CampaignRound.objects.filter(pk=round_.pk).update(stage=CampaignRound.Stage.FREEZE)
    return CampaignRound.Stage.FREEZE


# Stage: freeze.


def _stage_freeze(round_: CampaignRound) -> str:
    if round_.version is None or round_.version.status != DatasetVersion.Status.FROZEN:
        _progress(round_, "Freezing the round's curated version")
        _version_freeze(round_, name=f"{round_.campaign.name}: round {round_.number}", with_decisions=True)
    with transaction.atomic():
        _hold_running(round_)
        CampaignRound.objects.filter(pk=round_.pk).update(
            stage=CampaignRound.Stage.DONE, status=CampaignRound.Status.DONE, finished_at=timezone.now(), message=""
        )
        _next_round_or_stop(round_)
    return CampaignRound.Stage.DONE


def _next_round_or_stop(round_: CampaignRound) -> None:
    campaign = Campaign.objects.select_for_update().get(pk=round_.campaign_id)
    if campaign.status != Campaign.Status.RUNNING:
        return
    rounds = list(CampaignRound.objects.filter(campaign=campaign).order_by("number"))
    reason = stop_reason(
        campaign_settings(campaign),
        rounds_done=len(rounds),
        spent=sum(r.routed for r in rounds),
        gold_accuracy=[r.gold_accuracy for r in rounds],
    )
    if reason:
        Campaign.objects.filter(pk=campaign.pk).update(
            status=Campaign.Status.FINISHED, stop_reason=reason, finished_at=timezone.now()
        )
        return
    _round_create(campaign, round_.number + 1)


def _version_freeze(round_: CampaignRound, *, name: str, with_decisions: bool) -> DatasetVersion:
    """Create (or take up again, after a killed worker) and freeze a version of the round's rows: the round's own
    (`version`) with its decisions, or the gold seed it trains on (`training_version`) without. The version is
    remembered on the round before it is frozen, so a worker killed mid-freeze leaves no orphan behind."""
    campaign = round_.campaign
    settings = campaign_settings(campaign)
    fractions = gold_splits(settings)
    field = "version" if with_decisions else "training_version"
    version = getattr(round_, field)
    if version is None:
        with transaction.atomic():
            version = _version_create(round_, name, fractions, settings, with_decisions)
            CampaignRound.objects.filter(pk=round_.pk).update(**{field: version})
    lineage = {
        "campaign": {"id": campaign.pk, "name": campaign.name, "settings": campaign.config},
        "round": round_.number if with_decisions else 0,
        "reward_model": _round_model_id(round_) if with_decisions else None,
        "training_run": round_.training_run_id if with_decisions else None,
        "previous_version": round_.training_version_id if with_decisions else None,
        "rows": "gold (human consensus, adjudicated, gold answers)"
        + (
            " and the round's kept pairs (ai_accepted, ai_flipped, ai_labelled; imported: uncertain silver kept "
            "with its label; adjudicated: a curator's override)"
            if with_decisions
            else ""
        ),
    }
    return dataset_version_freeze(
        version=version,
        rows=lambda: campaign_rows(round_, with_decisions=with_decisions, fractions=fractions, seed=settings.seed),
        manifest_extra={"curation_round": lineage},
    )


def _version_create(
    round_: CampaignRound, name: str, fractions: dict[str, float], settings: CampaignSettings, with_decisions: bool
) -> DatasetVersion:
    campaign = round_.campaign
    return dataset_version_create(
        name=name,
        projects=[campaign.project],
        filters=VersionFilters(states=DEFAULT_STATES, splits=fractions, seed=settings.seed),
        parent=round_.training_version if with_decisions else None,
        created_by=campaign.created_by,
    )


def gold_splits(settings: CampaignSettings) -> dict[str, float]:
    """Gold rows are split by prompt: half the held-out share chooses checkpoints, half measures the round."""
    held = settings.gold_holdout
    return {"train": round(1 - held, 6), "validation": round(held / 2, 6), "test": round(held / 2, 6)}


def campaign_rows(
    round_: CampaignRound, *, with_decisions: bool, fractions: dict[str, float], seed: int
) -> Iterator[PlannedRow]:
    """The round's version: every gold row, then the pairs the round kept (with a curator's override counting)."""
    project = round_.campaign.project
    filters = VersionFilters(
        states=DEFAULT_STATES,
        provenance=(DatasetRow.Provenance.CONSENSUS, DatasetRow.Provenance.ADJUDICATED),
        splits=fractions,
        seed=seed,
    )
    gold_ids: set[int] = set()
    for candidate in candidates(project=project, filters=filters):
        if candidate.item.is_gold:
            continue  # its gold answer is its label (below)
        gold_ids.add(candidate.item.pk)
        yield candidate.planned(split=split_for(prompt_hash(candidate.item.prompt), seed=seed, fractions=fractions))
    answers = GoldAnswer.objects.filter(item__project=project).exclude(preference_sign=0).select_related("item")
    for answer in answers.order_by("item_id").iterator(chunk_size=1000):
        gold_ids.add(answer.item_id)
        split = split_for(prompt_hash(answer.item.prompt), seed=seed, fractions=fractions)
        yield _model_free_row(answer.item, answer.preference_sign, split, answer.ratings or {})
    if with_decisions:
        yield from _decision_rows(round_, gold_ids, fractions, seed)


def _model_free_row(item: Item, side: int, split: str, ratings: dict[str, Any]) -> PlannedRow:
    chosen, rejected = ("b", "a") if side > 0 else ("a", "b")
    fields = _pair_fields(item, side, split) | {
        "margin": 1.0,
        "weight": 1.0,
        "provenance": DatasetRow.Provenance.GOLD_ANSWER,
        "labels": {"chosen": _empty_side(ratings.get(chosen)), "rejected": _empty_side(ratings.get(rejected))},
    }
    return PlannedRow(fields=fields, state="gold", agreement=1.0, schema_ids=set())


def _pair_fields(item: Item, side: int, split: str) -> dict[str, Any]:
    return {
        "item_id": item.pk,
        "split": split,
        "prompt": item.prompt,
        "context": item.context,
        "chosen": item.response_b if side > 0 else item.response_a,
        "rejected": item.response_a if side > 0 else item.response_b,
        "source": item.source,
        "annotation_ids": [],
    }


def _empty_side(ratings: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"ratings": ratings or {}, "spans": [], "missing": []}


ROW_PROVENANCE = {
    Decision.UNCERTAIN: DatasetRow.Provenance.IMPORTED,  # kept as it came, weighted by the ensemble's belief
    Decision.ACCEPT: DatasetRow.Provenance.AI_ACCEPTED,
    Decision.FLIP: DatasetRow.Provenance.AI_FLIPPED,
    Decision.AI_LABEL: DatasetRow.Provenance.AI_LABELLED,
}


def _decision_rows(
    round_: CampaignRound, gold_ids: set[int], fractions: dict[str, float], seed: int
) -> Iterator[PlannedRow]:
    """Rows of the pairs the round kept. They train only: a model-decided pair whose prompt falls in a held-out
    split is left out, so held-out gold measures the model on prompts it never saw. People come first: a pair
    Concord's annotators have labelled since the round decided is theirs (a gold row, or with the curators while
    they disagree), and one a curator excluded stays out."""
    settings = campaign_settings(round_.campaign)
    kept = [d.value for d in KEEPING] + ([Decision.UNCERTAIN.value] if settings.uncertain_action == "keep" else [])
    excluded = rule_sql.latest_decision_ids(round_.campaign.project, [rules.EXCLUDE, rules.AMBIGUOUS])
    decisions = (
        PairDecision.objects.filter(round=round_, item__human_count=0)
        .exclude(item_id__in=excluded)
        .filter(Q(override__in=kept) | Q(override="", decision__in=kept))
        # A pair routed to the humans is theirs: unlabelled when the round closed, it waits for a later round.
        .filter(Q(routed=False) | ~Q(override=""))
        .select_related("item")
        .only(
            "item_id",
            "pool",
            "label_sign",
            "decision",
            "override",
            "strength",
            "spread",
            "p_agree",
            "item__id",
            "item__prompt",
            "item__context",
            "item__response_a",
            "item__response_b",
            "item__source",
        )
        .order_by("item_id")
    )
    for decision in decisions.iterator(chunk_size=2000):
        if decision.item_id in gold_ids:
            continue
        if split_for(prompt_hash(decision.item.prompt), seed=seed, fractions=fractions) != "train":
            continue
        row = _decision_row(round_, decision, settings)
        if row is not None:
            yield row


def _decision_row(round_: CampaignRound, decision: PairDecision, settings: CampaignSettings) -> PlannedRow | None:
    effective = Decision(decision.effective)
    kept = kept_label(effective, decision.label_sign, decision.p_agree, settings)
    if kept is None:
        return None
    side, confidence = kept
    if decision.override:
        confidence = 1.0  # a curator's decision, not the ensemble's guess: it counts fully
    ensemble = {
        "round": round_.number,
        "decision": decision.decision,
        "override": decision.override,
        "strength": round(decision.strength, 6),
        "spread": round(decision.spread, 6),
        "p_agree": round(decision.p_agree, 6),
    }
    fields = _pair_fields(decision.item, side, "train") | {
        "margin": round(float(ai_margin(np.array(confidence))), 4),
        "weight": round(confidence, 4),
        "provenance": DatasetRow.Provenance.ADJUDICATED if decision.override else ROW_PROVENANCE[effective],
        "labels": {"chosen": _empty_side(), "rejected": _empty_side(), "ensemble": ensemble},
    }
    return PlannedRow(fields=fields, state=decision.pool, agreement=1.0, schema_ids=set())


# Waking waiting rounds.


def campaign_rounds_check() -> list[int]:
    """Send the task of every waiting round whose training run or scoring job has ended, or whose routed pairs are
    all labelled (or closed): the ends that their jobs' own notice may have missed. Returns the rounds sent."""
    # A round still queued after the grace period is sent again, at most once an hour (it may simply wait behind
    # long jobs): its first task may have been lost, and a second delivery is harmless (its lock and claim).
    now = timezone.now()
    unsent = Q(status=CampaignRound.Status.QUEUED, created_at__lt=now - QUEUED_RESEND_AFTER) & (
        Q(recovered_at__isnull=True) | Q(recovered_at__lt=now - timedelta(hours=1))
    )
    waiting = CampaignRound.objects.filter(
        Q(status=CampaignRound.Status.WAITING) | unsent, campaign__status=Campaign.Status.RUNNING
    ).select_related("training_run", "scoring_job", "campaign__project")
    sent = []
    for round_ in waiting:
        if round_.status == CampaignRound.Status.QUEUED:
            CampaignRound.objects.filter(pk=round_.pk).update(recovered_at=now)
        elif not _ready(round_):
            continue
        jobs.send(jobs.CAMPAIGN_ROUND, round_.pk)
        sent.append(round_.pk)
    return sent


def _ready(round_: CampaignRound) -> bool:
    if round_.stage == CampaignRound.Stage.TRAIN:
        return round_.training_run is None or round_.training_run.finished
    if round_.stage == CampaignRound.Stage.SCORE:
        return round_.scoring_job is None or round_.scoring_job.finished
    if round_.stage == CampaignRound.Stage.LABEL:
        return round_.closed_by_id is not None or routed_labelled(round_) >= round_.routed
    return True


def campaign_rounds_notify(*, training_run: TrainingRun | None = None, scoring_job: Any = None) -> None:
    """A training run or scoring job has ended: send the task of the round waiting for it, if any."""
    rounds = CampaignRound.objects.filter(status=CampaignRound.Status.WAITING)
    if training_run is not None:
        rounds = rounds.filter(training_run=training_run)
    if scoring_job is not None:
        rounds = rounds.filter(scoring_job=scoring_job)
    for pk in rounds.values_list("pk", flat=True):
        jobs.send(jobs.CAMPAIGN_ROUND, pk)
