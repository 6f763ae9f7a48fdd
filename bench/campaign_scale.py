"""A curation round's set-based stages on a big project: pool counts, deciding every silver and unlabelled pair,
and choosing the pairs to route, against the naive way (one pair at a time through the ORM) in the same run.

The project (built once with COPY and kept between runs): N items, 2% gold (a human annotation's counts on the
item row), 60% silver (a source label), the rest unlabelled; a reward model's scores of every item (mean margin
and spread drawn around the true side, with a quarter of the silver labels wrong). No training or embedding runs
here: those are the gpu's part (bench/train_throughput.py, bench/retrieval.py). What is timed is the part that
must not grow into a Python loop per request: training.services.campaigns' decide stage (ranges of ids through
numpy, written by COPY) and its routing query, and the pools' GROUP BY.

The naive way decides the same pairs one at a time, in Python, each with its own INSERT: timed on the first
NAIVE_PAIRS pairs and reported per pair beside the stage's rate.

    .venv/bin/python bench/campaign_scale.py --items 1000000
"""

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import django_setup, machine, write_section

BATCH = 50_000
NAIVE_PAIRS = 5_000


def build_project(items: int):  # type: ignore[no-untyped-def]
    from annotate.models import Item, Project

    project, _ = Project.objects.get_or_create(name=f"bench-campaign-{items}", defaults={"overlap": 1})
    if Item.objects.filter(project=project).count() == items:
        return project
    Item.objects.filter(project=project).delete()
    started = time.perf_counter()
    for start in range(0, items, BATCH):
        _insert_items(project, start, min(items, start + BATCH))
        print(f"  {min(items, start + BATCH)} items ({time.perf_counter() - started:.0f} s)", flush=True)
    return project


def _insert_items(project, start: int, end: int) -> None:  # type: ignore[no-untyped-def]
    from django.db import connection, transaction
    from django.utils import timezone

    from annotate.models import Item

    rng = random.Random(start)
    now = timezone.now()
    columns = ("project_id", "prompt", "context", "response_a", "response_b", "source", "external_id", "metadata")
    columns += ("content_hash", "annotation_count", "human_count", "strength_count", "prefer_a_count")
    columns += ("prefer_b_count", "strength_sum", "strength_min", "strength_max", "rating_spread", "is_gold")
    columns += ("extra_overlap", "priority", "source_label", "created_at")
    copy_sql = f"COPY {Item._meta.db_table} ({', '.join(columns)}) FROM STDIN"
    with transaction.atomic(), connection.cursor() as cursor, cursor.cursor.copy(copy_sql) as copy:
        for n in range(start, end):
            digest = hashlib.sha256(f"{project.pk}:{n}".encode()).hexdigest()
            prompt = json.dumps([{"role": "user", "content": f"Question {n}?"}])
            side = 1 if rng.random() < 0.5 else -1
            kind = rng.random()
            if kind < 0.02:  # gold: one agreeing human annotation, as the item row counts it
                counts = (1, 1, 1, int(side < 0), int(side > 0), 2 * side, 2 * side, 2 * side)
                label = None
            else:
                counts = (0, 0, 0, 0, 0, 0, None, None)
                label = side if kind < 0.62 else None
            row = (project.pk, prompt, "", f"A {n}", f"B {n}", "bench", str(n), "{}", digest, *counts)
            copy.write_row((*row, 0, False, 0, 0, label, now))


def build_scores(project):  # type: ignore[no-untyped-def]
    """A reward model of the project, with a score of every item: the mean margin leans to the source label,
    except for a quarter of the silver pairs, where it leans the other way (the label is wrong)."""
    from django.db import connection, transaction

    from annotate.models import Item
    from curation.models import DatasetVersion
    from training.models import Campaign, ItemScore, RewardModel, TrainingRun

    run = TrainingRun.objects.filter(project=project).first()
    if run is not None and ItemScore.objects.filter(reward_model__run=run).count() == project.items.count():
        return run
    Campaign.objects.filter(project=project).delete()
    RewardModel.objects.filter(project=project).delete()  # and its scores
    TrainingRun.objects.filter(project=project).delete()
    version = DatasetVersion.objects.create(name="bench", status=DatasetVersion.Status.FROZEN)
    run = TrainingRun.objects.create(project=project, dataset_version=version, status=TrainingRun.Status.SUCCEEDED)
    model = RewardModel.objects.create(project=project, run=run, path="/bench/none")
    rng = random.Random(7)
    items = Item.objects.filter(project=project).order_by("id")
    columns = "item_id, reward_model_id, reward_a, reward_b, margin, probability_b, ensemble_mean, ensemble_std"
    last = 0
    while True:
        # Read a batch, then COPY it: a connection cannot read while its COPY is open.
        rows = list(items.filter(id__gt=last).values_list("id", "source_label", "strength_sum")[:BATCH])
        if not rows:
            return run
        last = rows[-1][0]
        copy_sql = f"COPY {ItemScore._meta.db_table} ({columns}, created_at) FROM STDIN"
        with transaction.atomic(), connection.cursor() as cursor, cursor.cursor.copy(copy_sql) as copy:
            for item_id, label, strength in rows:
                side = label or (1 if strength > 0 else -1 if strength < 0 else rng.choice((1, -1)))
                if label and rng.random() < 0.25:
                    side = -side
                mean = rng.gauss(1.2 * side, 1.0)
                copy.write_row((item_id, model.pk, 0.0, mean, mean, None, mean, abs(rng.gauss(0, 0.3)), "now"))


def fresh_round(project, run):  # type: ignore[no-untyped-def]
    from training.models import Campaign, CampaignRound

    Campaign.objects.filter(project=project).delete()
    campaign = Campaign.objects.create(project=project, name="bench", config={"budget_per_round": 10_000})
    return CampaignRound.objects.create(
        campaign=campaign, number=1, stage="decide", status="running", training_run=run, temperature=1.0
    )


def naive_decide(round_, limit: int) -> float:  # type: ignore[no-untyped-def]
    """One pair at a time: read its score, decide with the same rules on one value, INSERT its row."""
    import numpy as np

    from annotate.models import Item
    from annotate.rules import Pool
    from curation import rule_sql
    from training.ml.synergy import CampaignSettings, Vote, decide_silver, decide_unlabelled, probability
    from training.models import ItemScore, PairDecision

    settings = CampaignSettings()
    project = round_.campaign.project
    model_id = round_.training_run.reward_model.pk
    pairs = rule_sql.with_pools(Item.objects.filter(project=project), project).filter(
        pool__in=[Pool.SILVER, Pool.UNLABELLED]
    )
    started = time.perf_counter()
    for item_id, pool, silver in pairs.values_list("id", "pool", "silver").order_by("id")[:limit]:
        score = ItemScore.objects.get(reward_model_id=model_id, item_id=item_id)
        strength = silver * score.ensemble_mean if pool == Pool.SILVER else score.ensemble_mean
        p = probability(np.array([strength]))
        spread = np.array([score.ensemble_std])
        if pool == Pool.SILVER:
            decision = decide_silver(Vote("ensemble", p), spread, settings)[0]
        else:
            decision = decide_unlabelled(p, spread, settings)[0][0]
        PairDecision.objects.create(
            round=round_,
            item_id=item_id,
            pool=pool,
            label_sign=silver,
            decision=decision,
            strength=float(strength),
            spread=float(spread[0]),
            p_agree=float(p[0]),
        )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true", help="print the figures, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    django_setup()
    from curation.selectors_quality import pool_counts
    from training.models import PairDecision
    from training.services import campaigns

    print(f"building a project of {args.items} items (kept between runs)", flush=True)
    project = build_project(args.items)
    run = build_scores(project)
    started = time.perf_counter()
    pools = pool_counts(project=project)
    pools_s = time.perf_counter() - started
    round_ = fresh_round(project, run)
    started = time.perf_counter()
    campaigns._stage_decide(round_)
    decide_s = time.perf_counter() - started
    decided = PairDecision.objects.filter(round=round_).count()
    round_.refresh_from_db()
    started = time.perf_counter()
    routed = campaigns._most_uncertain(round_, exclude=[], limit=10_000)
    route_s = time.perf_counter() - started
    naive_round = fresh_round(project, run)
    naive_n = min(NAIVE_PAIRS, decided)
    naive_s = naive_decide(naive_round, naive_n)
    per_pair_stage, per_pair_naive = decide_s / decided, naive_s / naive_n
    lines = [
        f"One process on {machine()}, PostgreSQL 15 on the same machine; command: "
        f"`.venv/bin/python bench/campaign_scale.py --items {args.items}`. {bench_note()}",
        "",
        "| step | pairs | time | per pair |",
        "| --- | ---: | ---: | ---: |",
        f"| pool counts (one GROUP BY, curation.rule_sql) | {args.items:,} | {pools_s:.1f} s | |",
        f"| decide stage (id ranges through numpy, written by COPY) | {decided:,} | {decide_s:.1f} s "
        f"| {1e6 * per_pair_stage:.0f} µs |",
        f"| naive: one pair at a time through the ORM | {naive_n:,} | {naive_s:.1f} s "
        f"| {1e6 * per_pair_naive:.0f} µs |",
        f"| routing: the 10,000 most uncertain | {len(routed):,} | {route_s:.2f} s | |",
        "",
        f"The decide stage is {per_pair_naive / per_pair_stage:.0f}x faster per pair than the naive loop, which would "
        f"take about {per_pair_naive * decided / 60:.0f} minutes for these {decided:,} pairs. Pools: "
        + ", ".join(f"{name} {count:,}" for name, count in pools.items())
        + ". Decisions: "
        + ", ".join(f"{pool}: {counts}" for pool, counts in round_.counts.items())
        + ".",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section("Curation round stages on a big project", "\n".join(lines))


def bench_note() -> str:
    return (
        "The scores are synthetic (no model runs): the figures time the database and numpy work of a round, "
        "which must not grow into a loop per pair, on a machine also running other work: compare rows of one run."
    )


if __name__ == "__main__":
    main()
