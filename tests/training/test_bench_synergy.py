"""The helpers of bench/synergy.py that decide what its figures mean: the split, the noise, AUROC, the Secrets of
RLHF II rule, what Concord's curated data holds (training.ml.synergy.kept_label), how its routing splits the
budget (retrieval_budget) and how the report words differences."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bench.synergy import (
    Campaign,
    Dataset,
    _gap_sentences,
    auroc,
    precision_recall,
    secrets_rule,
    split,
)
from training.ml import synergy
from training.ml.synergy import CampaignSettings, Decision


def _data(n: int = 200) -> Dataset:
    rng = np.random.default_rng(0)
    prompts = [[{"role": "user", "content": f"prompt {i // 2}"}] for i in range(n)]  # two pairs per prompt
    return Dataset(
        "toy", prompts, [f"a{i}" for i in range(n)], [f"b{i}" for i in range(n)], rng.choice([-1, 1], size=n)
    )


def test_split_is_by_prompt_and_flips_exactly_the_noise_share() -> None:
    data = _data()
    split(data, seed=3, noise=0.25, gold_holdout=0.2)
    parts = [data.gold, data.silver, data.test]
    assert sum(len(p) for p in parts) == len(data)
    keys = [{json.dumps(data.prompts[i]) for i in p} for p in parts]
    assert not (keys[0] & keys[1])
    assert not (keys[0] & keys[2])
    assert not (keys[1] & keys[2])
    assert len(data.gold) == pytest.approx(0.2 * len(data), abs=2)
    assert data.flipped.sum() == round(0.25 * len(data.silver))
    assert not data.flipped[data.gold].any()
    assert not data.flipped[data.test].any()
    assert (data.noisy[data.flipped] == -data.truth[data.flipped]).all()
    assert set(data.gold_holdout) | set(data.gold_fit) == set(data.gold)


def test_auroc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=300).astype(float)
    positives = rng.random(300) < 0.3
    assert auroc(scores, positives) == pytest.approx(roc_auc_score(positives, scores))


def test_precision_recall() -> None:
    marked = np.array([True, True, False, False])
    flipped = np.array([True, False, True, False])
    assert precision_recall(marked, flipped) == (0.5, 0.5)


def test_secrets_rule_flips_the_lowest_share_of_silver() -> None:
    data = _data()
    split(data, seed=0, noise=0.25, gold_holdout=0.2)
    # Members that know the truth: strength towards the noisy label is negative exactly on the flipped pairs.
    margins = np.stack([data.truth[data.silver] * (1.0 + k) for k in range(3)]).astype(float)
    pairs, signs, stats = secrets_rule(data, margins, 0.2)
    assert (pairs == data.silver).all()
    assert (signs != data.noisy[data.silver]).sum() == round(0.2 * len(data.silver))
    assert stats["precision"] == 1.0
    assert stats["auroc"] == 1.0


def _campaign(settings: CampaignSettings, index: object = None) -> Campaign:
    data = _data()
    split(data, seed=0, noise=0.25, gold_holdout=0.2)
    return Campaign(data, None, settings, index, routing="concord", seed=0)  # type: ignore[arg-type]


def test_curated_rows_are_kept_label_under_both_uncertain_actions() -> None:
    campaign = _campaign(CampaignSettings())
    d = campaign.data
    human, accept, flip, drop, uncertain = (int(i) for i in d.silver[:5])
    campaign.p_latest[d.silver] = 0.55
    campaign.state[human], campaign.label[human] = "human", d.truth[human]
    campaign.state[accept], campaign.p_decided[accept] = Decision.ACCEPT.value, 0.8
    campaign.state[flip], campaign.p_decided[flip] = Decision.FLIP.value, 0.1
    campaign.label[flip] = -d.noisy[flip]
    campaign.state[drop], campaign.p_decided[drop] = Decision.DROP.value, 0.2
    campaign.p_latest[uncertain] = 0.6  # the last round's belief in its silver label

    keep = campaign.curated_rows(CampaignSettings(uncertain_action="keep"))
    rows = {int(p): (int(s), float(w)) for p, s, w in zip(*keep[:3], strict=True)}
    assert rows[human] == (d.truth[human], 1.0)
    assert rows[accept] == (d.noisy[accept], pytest.approx(0.8))
    assert rows[flip] == (-d.noisy[flip], pytest.approx(0.9))
    assert drop not in rows
    assert rows[uncertain] == (d.noisy[uncertain], pytest.approx(0.6))
    assert len(rows) == len(d.silver) - 1  # every pair but the dropped one
    for i in d.silver:  # the rows are exactly what kept_label gives
        state = str(campaign.state[i])
        if state in ("human", Decision.DROP.value):
            continue
        p = campaign.p_decided[i] if state else campaign.p_latest[i]
        side, confidence = synergy.kept_label(state or "uncertain", int(d.noisy[i]), float(p), CampaignSettings())
        assert rows[int(i)] == (side, pytest.approx(confidence))
    c = keep[3]
    assert c["by_source"] == {"human": 1, "accept": 1, "flip": 1, "uncertain": len(d.silver) - 4}
    assert c["rows"] == len(d.silver) - 1

    leave = campaign.curated_rows(CampaignSettings(uncertain_action="leave_out"))
    assert sorted(leave[0].tolist()) == sorted([human, accept, flip])
    assert leave[3]["by_source"]["uncertain"] == 0

    dropped = campaign.curated_rows(CampaignSettings(), flips_dropped=True)
    assert flip not in dropped[0].tolist()


def test_composition_weighs_wrong_labels() -> None:
    campaign = _campaign(CampaignSettings())
    d = campaign.data
    campaign.p_latest[d.silver] = np.where(d.flipped[d.silver], 0.4, 0.6)  # the ensemble doubts the flipped ones
    pairs, signs, weights, c = campaign.curated_rows(CampaignSettings())
    wrong = signs != d.truth[pairs]
    assert c["label_error"] == pytest.approx(wrong.mean()) == pytest.approx(0.25, abs=0.01)
    assert c["weighted_label_error"] == pytest.approx((weights * wrong).sum() / weights.sum())
    assert c["weighted_label_error"] < c["label_error"]
    assert c["uncertain_mean_weight_wrong"] == pytest.approx(0.4)
    assert c["uncertain_mean_weight_right"] == pytest.approx(0.6)


@pytest.mark.parametrize("share", [0.0, 0.25, 1.0])
def test_routing_splits_the_budget_by_retrieval_budget(share: float) -> None:
    from training.ml.retrieval import PairIndex

    settings = CampaignSettings(retrieval_share=share, retrieval_k=8)
    data = _data()
    split(data, seed=0, noise=0.25, gold_holdout=0.2)
    index = PairIndex.new(8)
    vectors = np.random.default_rng(2).normal(size=(len(data), 8)).astype(np.float32)
    index.add(np.arange(len(data), dtype=np.int64), vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    campaign = Campaign(data, None, settings, index, routing="concord", seed=0)  # type: ignore[arg-type]
    n = len(data.silver)
    decisions = np.full(n, Decision.UNCERTAIN.value, dtype=object)
    p_agree = np.random.default_rng(3).uniform(0.35, 0.65, size=n)
    gold_wrong = np.stack([-data.truth[data.gold].astype(float)] * 3)  # every gold pair wrong: each pulls k
    budget = 20
    chosen, retrieved = campaign._route(1, decisions, np.ones(n, dtype=bool), p_agree, gold_wrong, 1.0, budget)
    assert retrieved == synergy.retrieval_budget(budget, settings) == int(budget * share)
    assert len(chosen) == budget == len(set(chosen.tolist()))
    assert set(chosen.tolist()) <= set(data.silver.tolist())
    # What retrieval does not take goes to the most uncertain pairs, nearest p = 1/2 first.
    rest = chosen.tolist()[retrieved:]
    by_doubt = [int(data.silver[k]) for k in np.argsort(np.abs(p_agree - 0.5), kind="stable")]
    assert rest == [i for i in by_doubt if i not in set(chosen.tolist()[:retrieved])][: len(rest)]


def test_gap_sentences_report_no_share_of_a_noise_gap() -> None:
    acc = {"noisy": 0.52, "concord": 0.55, "concord_leave_out": 0.50, "clean": 0.56, "random": 0.53}
    text = _gap_sentences(acc, 400)[0]
    assert "not significant (under 2 standard errors)" in text
    assert "% of it" not in text
    assert "Concord keep - Concord leave_out: +5.0 ± 3.5 points (not significant)." in text
    big = _gap_sentences({"noisy": 0.50, "concord": 0.65, "concord_leave_out": 0.55, "clean": 0.70}, 2000)[0]
    assert "Curation (b, keep) closes 75% of it." in big
    assert "Curation (b, leave_out) closes 25% of it." in big
