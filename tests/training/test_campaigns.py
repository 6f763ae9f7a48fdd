"""Human-AI synergy curation campaigns, through the real stack: rounds run on a real Celery worker (training run,
scoring job and the round's own stages), annotators get the routed pairs first, each round freezes a version
with provenance and lineage that the next round trains on."""

import uuid

import numpy as np
import pytest
from celery.contrib.testing.worker import start_worker

from annotate.labels import Labels
from annotate.models import Item, Role
from annotate.rules import Pool
from annotate.services.labeling import annotation_submit, assignment_next
from concord import jobs, locks
from concord.celery import app as celery_app
from curation import rule_sql
from curation.models import Adjudication, DatasetRow, DatasetVersion
from curation.selectors_review import review_queue_page
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member
from tests.jobs import private_queue
from tests.locks import held_by_a_live_worker
from tests.waits import HANG_GUARD_S, wait_for
from training.ml.synergy import (
    CampaignSettings,
    Decision,
    Vote,
    decide_silver,
    decide_unlabelled,
    kept_label,
    retrieval_budget,
    retrieval_k,
)
from training.models import Campaign, CampaignRound, PairDecision, TrainingRun
from training.selectors import queue_model
from training.services.campaigns import (
    CampaignError,
    campaign_round_advance,
    campaign_round_close,
    campaign_round_unroute,
    campaign_rounds_check,
    campaign_rows,
    campaign_start,
    gold_splits,
    pair_decision_override,
)
from training.services.review_sync import review_queue_bring_up_to_date

GOOD, BAD = "yes, the answer is {n} because it is good.", "no."


def toy_item(project, n: int, *, b_wins: bool, **fields) -> Item:  # type: ignore[no-untyped-def]
    good, bad = GOOD.format(n=n), BAD
    a, b = (bad, good) if b_wins else (good, bad)
    prompt = [{"role": "user", "content": f"what is the number {n}?"}]
    return ItemFactory(project=project, prompt=prompt, response_a=a, response_b=b, **fields)


def campaign_project(
    *, gold: int = 24, silver: int = 40, unlabelled: int = 12, ambiguous: int = 2, flip_every: int = 4
):  # type: ignore[no-untyped-def]
    """A project with human-verified gold pairs (one annotation each, overlap 1; one of them wrong), silver pairs
    whose source label is wrong for every `flip_every`-th one, unlabelled pairs, and silver pairs no model can
    decide; returns it with the ids of the wrong labels."""
    project = ProjectFactory(overlap=1)
    n = 0
    for _ in range(gold):
        b_wins = n % 2 == 0
        AnnotationFactory(item=toy_item(project, n, b_wins=b_wins), strength=2 if b_wins else -2)
        n += 1
    # One gold pair whose annotator got it wrong: the ensemble should contradict it.
    mislabelled = toy_item(project, n, b_wins=True)
    AnnotationFactory(item=mislabelled, strength=-2)
    n += 1
    flipped = {mislabelled.pk}
    for index in range(silver):
        b_wins = n % 2 == 0
        wrong = index % flip_every == 0
        item = toy_item(project, n, b_wins=b_wins, source_label=(1 if b_wins else -1) * (-1 if wrong else 1))
        if wrong:
            flipped.add(item.pk)
        n += 1
    for _ in range(unlabelled):
        toy_item(project, n, b_wins=n % 2 == 0)
        n += 1
    for _ in range(ambiguous):
        # Two answers that tokenise alike: no model can prefer either, so the round routes them to the humans.
        prompt = [{"role": "user", "content": f"what is the number {n}?"}]
        ItemFactory(project=project, prompt=prompt, response_a="no.", response_b="no. ", source_label=1)
        n += 1
    return project, flipped


def tiny_campaign(backbone, **overrides):  # type: ignore[no-untyped-def]
    config = {
        "backbone": str(backbone),
        "ensemble_size": 2,
        "epochs": 10,
        "batch_size": 4,
        "max_length": 32,
        "learning_rate": 3e-3,
        "accept_threshold": 0.6,
        "contradict_threshold": 0.6,
        "ai_label_threshold": 0.6,
        "budget_per_round": 4,
        "retrieval_k": 2,
        "max_rounds": 2,
        "gold_holdout": 0.3,
    }
    return {**config, **overrides}


def the_round(campaign: Campaign, number: int) -> CampaignRound | None:
    return CampaignRound.objects.filter(campaign=campaign, number=number).first()


def running(campaign: Campaign) -> bool:
    return Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.RUNNING


def waiting_for_labels(campaign: Campaign, number: int) -> bool:
    round_ = the_round(campaign, number)
    if round_ is not None and round_.status == CampaignRound.Status.FAILED:
        raise AssertionError(round_.error)
    return round_ is not None and round_.stage == CampaignRound.Stage.LABEL and round_.status == "waiting"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_closes_connections")
def test_a_campaign_runs_its_rounds_on_a_worker_routes_pairs_first_and_freezes_versions(
    monkeypatch, settings, tmp_path, tiny_backbone
):
    settings.TRAINING_ROOT = tmp_path / "training"
    settings.CONCORD_EMBEDDING_MODEL = str(tiny_backbone)
    project, flipped = campaign_project()
    mislabelled_pk = min(flipped)
    admin, curator = member(project, Role.ADMIN), member(project, Role.CURATOR)
    annotator = member(project, Role.ANNOTATOR)
    queue = private_queue(monkeypatch, jobs.TRAINING_RUN, jobs.SCORING, jobs.SCORING_CHUNK, jobs.CAMPAIGN_ROUND)
    with start_worker(celery_app, perform_ping_check=False, queues=[queue], shutdown_timeout=HANG_GUARD_S):
        campaign = campaign_start(project=project, name="toy", config=tiny_campaign(tiny_backbone), created_by=admin)
        assert wait_for(lambda: waiting_for_labels(campaign, 1))
        first = the_round(campaign, 1)
        assert first is not None
        routed = set(PairDecision.objects.filter(round=first, routed=True).values_list("item_id", flat=True))
        assert 0 < len(routed) == first.routed <= 4
        # While the campaign runs, its ensemble is the model the review queue weighs the humans against: the
        # mislabelled gold pair is there, with the ensemble named.
        model = queue_model(project)
        assert model is not None
        assert "campaign 'toy' round 1 ensemble" in model.name
        assert review_queue_bring_up_to_date(project=project, model=model)  # as the queue's page does first
        contradicted = [entry for entry in review_queue_page(project=project, reason="ensemble", model=model)[1]]

        assert [entry.item.pk for entry in contradicted] == [mislabelled_pk]
        assert contradicted[0].reasons[0].label == "Campaign ensemble disagrees"
        assert "campaign 'toy' round 1 ensemble prefers B" in contradicted[0].reasons[0].detail
        # The annotators get the routed pairs before any other, highest priority first.
        priorities = dict(Item.objects.filter(pk__in=routed).values_list("pk", "priority"))
        for _ in routed:
            item = assignment_next(project=project, annotator=annotator)
            assert item is not None
            assert item.pk in routed
            assert priorities[item.pk] == max(priorities.values())
            priorities.pop(item.pk)
            truth = 1 if item.response_b.startswith("yes") else -1  # the ambiguous pairs: A
            annotation_submit(
                item=item,
                annotator=annotator,
                labels=Labels(strength=2 * truth),
                seconds_spent=2,
                submission_uuid=uuid.uuid4(),
            )
        assert campaign_rounds_check() == [first.pk]
        # Round 2's ensemble may leave nothing uncertain to route; if it routed pairs, a curator closes it.
        assert wait_for(lambda: waiting_for_labels(campaign, 2) or not running(campaign))
        second = the_round(campaign, 2)
        assert second is not None
        if running(campaign):
            campaign_round_close(round_=second, by=curator)
        assert wait_for(lambda: not running(campaign))
    campaign.refresh_from_db()
    first.refresh_from_db()
    second.refresh_from_db()
    assert campaign.status == Campaign.Status.FINISHED, campaign.stop_reason
    assert campaign.stop_reason == "2 of 2 rounds done"
    # Round 1 trained on the gold seed; round 2 on what round 1 froze, which holds the routed pairs as gold now.
    seed = first.training_version
    assert seed is not None
    assert seed.status == DatasetVersion.Status.FROZEN
    assert set(seed.rows.values_list("provenance", flat=True)) == {DatasetRow.Provenance.CONSENSUS}
    assert second.training_version == first.version
    assert first.version is not None
    assert first.version.parent == seed
    assert second.version is not None
    assert second.version.parent == first.version
    assert TrainingRun.objects.get(pk=second.training_run_id).dataset_version == first.version
    version = first.version
    assert version.status == DatasetVersion.Status.FROZEN
    lineage = version.manifest["curation_round"]
    assert (lineage["round"], lineage["training_run"], lineage["previous_version"]) == (
        1,
        first.training_run_id,
        seed.pk,
    )
    consensus_items = set(
        version.rows.filter(provenance=DatasetRow.Provenance.CONSENSUS).values_list("item_id", flat=True)
    )
    assert routed <= consensus_items, "the routed pairs, labelled by the annotator, are gold in the round's version"
    # Every model-decided row is a training row, and says what the ensemble thought of it.
    ai_rows = version.rows.exclude(provenance=DatasetRow.Provenance.CONSENSUS)
    for row in ai_rows:
        assert row.split == "train"
        assert row.provenance in (
            DatasetRow.Provenance.AI_ACCEPTED,
            DatasetRow.Provenance.AI_FLIPPED,
            DatasetRow.Provenance.AI_LABELLED,
            DatasetRow.Provenance.IMPORTED,  # uncertain silver, kept with its label (uncertain_action "keep")
        )
        assert 0 <= row.margin <= 1
        assert row.labels["ensemble"]["round"] == 1
        # A kept uncertain row is weighted by the ensemble's belief in its label, which may be below 1/2.
        assert (0 if row.provenance == DatasetRow.Provenance.IMPORTED else 0.5) <= row.weight <= 1
    decisions = {d.item_id: d for d in PairDecision.objects.filter(round=first)}
    assert {d.pool for d in decisions.values()} == {Pool.SILVER, Pool.UNLABELLED}
    assert sum(sum(by_decision.values()) for by_decision in first.counts.values()) == len(decisions)
    assert first.gold_pairs > 0
    assert first.gold_accuracy is not None
    assert first.histogram
    assert sum(sum(b["counts"].values()) for b in first.histogram) == len(decisions)
    # The toy task is easy: the ensemble finds flipped silver labels and accepts the right ones.
    for row in ai_rows.filter(provenance=DatasetRow.Provenance.AI_FLIPPED):
        assert row.item_id in flipped
    for row in ai_rows.filter(provenance=DatasetRow.Provenance.AI_ACCEPTED):
        assert row.item_id not in flipped
    for row in version.rows.exclude(item_id=mislabelled_pk).exclude(rejected__startswith="no. "):
        assert row.chosen.startswith("yes"), (row.item_id, row.provenance)
    assert ai_rows.filter(provenance=DatasetRow.Provenance.AI_FLIPPED).exists()
    # Nothing is left at the front of the queue once the campaign is over.
    assert not Item.objects.filter(project=project, priority__gt=0).exists()


def decided_round(project, config):  # type: ignore[no-untyped-def]
    """A campaign's round with decisions written by hand (no training): for the override and routing rules."""
    campaign = Campaign.objects.create(project=project, name="c", config=CampaignSettings(**config).to_dict())
    round_ = CampaignRound.objects.create(
        campaign=campaign, number=1, stage=CampaignRound.Stage.LABEL, status=CampaignRound.Status.WAITING
    )
    return campaign, round_


@pytest.mark.django_db
def test_a_curator_overrides_a_decision_with_a_reason_and_route_sends_the_pair_to_the_annotators(sent_jobs):
    project, _ = campaign_project(gold=10, silver=2, unlabelled=1, ambiguous=0)
    curator, annotator = member(project, Role.CURATOR), member(project, Role.ANNOTATOR)
    _, round_ = decided_round(project, {"budget_per_round": 1})
    silver = rule_sql.with_pools(Item.objects.filter(project=project), project).filter(pool=Pool.SILVER)
    older, routed_item = list(silver.order_by("pk"))
    # Its imported label fills the overlap (1): routing makes room for one human annotation, and takes it back.
    AnnotationFactory(item=routed_item, origin="imported", strength=2)
    decision = PairDecision.objects.create(
        round=round_,
        item=routed_item,
        pool=Pool.SILVER,
        label_sign=1,
        decision=Decision.ACCEPT,
        strength=1,
        spread=0,
        p_agree=0.8,
    )
    with pytest.raises(CampaignError) as refused:
        pair_decision_override(pair_decision=decision, curator=curator, decision="ai_label", reason="x")
    assert refused.value.errors[0].path == "decision"
    with pytest.raises(CampaignError) as refused:
        pair_decision_override(pair_decision=decision, curator=curator, decision="flip", reason="  ")
    assert refused.value.errors[0].path == "reason"
    flipped = pair_decision_override(pair_decision=decision, curator=curator, decision="flip", reason="B is wrong")
    assert (flipped.decision, flipped.override, flipped.effective) == ("accept", "flip", "flip")
    assert flipped.overrides.get().reason == "B is wrong"
    routed = pair_decision_override(pair_decision=decision, curator=curator, decision="route", reason="ask")
    assert routed.routed
    assert routed.effective == "route"
    assert [o.decision for o in routed.overrides.all()] == ["route", "flip"]  # the history stays
    # The routed pair comes before the older, ordinary one.
    assert Item.objects.get(pk=routed_item.pk).priority > 0 == Item.objects.get(pk=older.pk).priority
    assert Item.objects.get(pk=routed_item.pk).extra_overlap == 1
    assert assignment_next(project=project, annotator=annotator) == routed_item
    campaign_round_unroute(round_=round_)
    assert Item.objects.filter(pk=routed_item.pk).values_list("priority", "extra_overlap").get() == (0, 0)


@pytest.mark.django_db
def test_a_campaign_is_refused_without_enough_gold_or_with_bad_settings_or_while_another_runs(
    sent_jobs, django_capture_on_commit_callbacks
):
    project, _ = campaign_project(gold=4, silver=4, unlabelled=0, ambiguous=0)
    admin = member(project, Role.ADMIN)
    with pytest.raises(CampaignError, match="5 gold pairs"):
        campaign_start(project=project, name="c", config={}, created_by=admin)
    project, _ = campaign_project(gold=12, silver=4, unlabelled=0, ambiguous=0)
    with pytest.raises(CampaignError) as refused:
        campaign_start(
            project=project, name="c", config={"accept_threshold": 0.4, "ensemble_size": 1}, created_by=admin
        )
    assert {e.path for e in refused.value.errors} == {"accept_threshold", "ensemble_size"}
    with pytest.raises(CampaignError, match="unknown campaign settings: colour"):
        campaign_start(project=project, name="c", config={"colour": "red"}, created_by=admin)
    assert not Campaign.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        campaign_start(project=project, name="c", config={}, created_by=admin)
    assert sent_jobs == [(jobs.CAMPAIGN_ROUND, CampaignRound.objects.get().pk)]
    with pytest.raises(CampaignError, match="is running"):
        campaign_start(project=project, name="d", config={}, created_by=admin)


@pytest.mark.django_db
def test_a_round_held_by_a_live_worker_is_not_run_twice(sent_jobs):
    project, _ = campaign_project(gold=10, silver=0, unlabelled=0, ambiguous=0)
    campaign = campaign_start(project=project, name="c", config={}, created_by=None)
    round_ = campaign.rounds.get()
    with held_by_a_live_worker((locks.CAMPAIGN_ROUND, round_.pk)):
        after = campaign_round_advance(round_=round_)
    assert (after.status, after.stage, after.training_run_id) == ("queued", "train", None)


def test_decisions_follow_the_thresholds_and_a_second_voter_must_agree_too() -> None:
    settings = CampaignSettings(accept_threshold=0.7, contradict_threshold=0.8, max_spread=1.0)
    p = np.array([0.9, 0.75, 0.5, 0.25, 0.1, 0.95])
    spread = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 2.0])
    decided = decide_silver(Vote("ensemble", p), spread, settings).tolist()
    assert decided == ["accept", "accept", "uncertain", "uncertain", "flip", "uncertain"]
    judge = Vote("judge", np.array([0.2, 0.9, 0.5, 0.1, np.nan, 0.9]))
    with_judge = decide_silver(Vote("ensemble", p), spread, settings, seconds=(judge,)).tolist()
    assert with_judge == ["uncertain", "accept", "uncertain", "uncertain", "uncertain", "uncertain"]
    drop = CampaignSettings(contradict_threshold=0.8, contradiction_action="drop")
    assert decide_silver(Vote("e", np.array([0.1])), np.zeros(1), drop).tolist() == ["drop"]
    decisions, signs = decide_unlabelled(np.array([0.9, 0.5, 0.1]), np.zeros(3), CampaignSettings())
    assert decisions.tolist() == ["ai_label", "unlabelled", "ai_label"]
    assert signs.tolist() == [1, 0, -1]
    assert [retrieval_k(p) for p in (0.1, 0.5, 0.51, 0.9, 0.99)] == [8, 8, 4, 1, 1]


def test_what_row_each_decision_gives_and_how_the_budget_is_shared() -> None:
    keep, leave_out = CampaignSettings(), CampaignSettings(uncertain_action="leave_out")
    assert kept_label("accept", -1, 0.9, keep) == (-1, 0.9)
    assert kept_label("flip", -1, 0.2, keep) == (1, pytest.approx(0.8))
    assert kept_label("ai_label", 0, 0.1, keep) == (-1, pytest.approx(0.9))
    assert kept_label("uncertain", 1, 0.45, keep) == (1, 0.45)
    assert kept_label("uncertain", 1, 0.45, leave_out) is None
    assert kept_label("drop", 1, 0.1, keep) is None
    assert kept_label("unlabelled", 0, 0.5, keep) is None
    assert retrieval_budget(10, CampaignSettings(retrieval_share=0.5)) == 5
    assert retrieval_budget(10, CampaignSettings(retrieval_k=0)) == 0
    assert ("uncertain_action", "must be keep or leave_out") in CampaignSettings(uncertain_action="x").problems()


@pytest.mark.django_db
def test_a_round_s_version_leaves_to_people_the_pairs_they_labelled_or_excluded_since_it_decided() -> None:
    project, _ = campaign_project(gold=10, silver=5, unlabelled=0, ambiguous=0)
    curator = member(project, Role.CURATOR)
    _, round_ = decided_round(project, {"uncertain_action": "keep", "gold_holdout": 0.05})
    silver = list(rule_sql.with_pools(Item.objects.filter(project=project), project).filter(pool=Pool.SILVER))
    decisions = [
        PairDecision.objects.create(
            round=round_,
            item=item,
            pool=Pool.SILVER,
            label_sign=item.source_label,
            decision=Decision.FLIP,
            strength=-1,
            spread=0,
            p_agree=0.1,
        )
        for item in silver
    ]
    kept, labelled, excluded, routed, overridden = silver
    Item.objects.filter(pk=labelled.pk).update(extra_overlap=1)  # a curator asked for two opinions
    AnnotationFactory(item=labelled, strength=2)  # the annotators are at it since: it is theirs (in progress)
    Adjudication.objects.create(item=excluded, curator=curator, decision="exclude", reason="broken")
    # Routed to the humans, who had not labelled it when the round closed: it waits for a later round.
    PairDecision.objects.filter(item=routed).update(decision=Decision.UNCERTAIN, routed=True, p_agree=0.5)
    pair_decision_override(pair_decision=decisions[4], curator=curator, decision="accept", reason="checked it")
    settings = CampaignSettings.from_dict(round_.campaign.config)
    rows = list(campaign_rows(round_, with_decisions=True, fractions=gold_splits(settings), seed=0))
    by_item = {row.fields["item_id"]: row.fields for row in rows}
    assert by_item[kept.pk]["provenance"] == DatasetRow.Provenance.AI_FLIPPED
    assert (by_item[kept.pk]["chosen"] == kept.response_b) == (kept.source_label < 0)  # the other side than its label
    assert by_item[kept.pk]["weight"] == pytest.approx(0.9)
    assert labelled.pk not in by_item
    assert excluded.pk not in by_item
    assert routed.pk not in by_item
    # The curator's word counts fully, under their provenance, on the side of the silver label they accepted.
    row = by_item[overridden.pk]
    assert (row["provenance"], row["weight"], row["margin"]) == (DatasetRow.Provenance.ADJUDICATED, 1.0, 1.0)
    assert (row["chosen"] == overridden.response_b) == (overridden.source_label > 0)
    assert len(rows) == len(by_item)  # one row per item
