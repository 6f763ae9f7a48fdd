"""Evaluation metrics and baselines, and scoring that puts length-sorted batches back in order."""

import math
from pathlib import Path

import numpy as np
import pytest

from training.ml.config import TrainConfig
from training.ml.data import PairExample
from training.ml.evaluate import (
    evaluate,
    expected_calibration_error,
    length_baseline_accuracy,
    pair_metrics,
    strength_bucket,
)
from training.ml.scoring import score_pairs, score_texts
from training.ml.tiny import tiny_backbone, toy_pairs
from training.ml.trainer import train


def pair(chosen: str, rejected: str, *, margin: float = 0.0, source: str = "") -> PairExample:
    return PairExample(
        prompt=[{"role": "user", "content": "q"}], chosen=chosen, rejected=rejected, margin=margin, source=source
    )


def test_the_length_baseline_prefers_the_longer_response() -> None:
    examples = [pair("long answer", "no"), pair("no", "long answer"), pair("same", "four"), pair("longer", "x")]
    assert length_baseline_accuracy(examples) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert length_baseline_accuracy([]) == 0.0


def test_ece_of_hand_made_gaps() -> None:
    # p = sigmoid(0) = 0.5: confidence 0.5, wrong (not > 0.5) -> |0 - 0.5| = 0.5.
    assert expected_calibration_error(np.array([0.0])) == pytest.approx(0.5)
    # Two right at p = sigmoid(2) = 0.8808 and one wrong at the same confidence (gap -2): one bin,
    # accuracy 2/3 against confidence 0.8808.
    p = 1 / (1 + math.exp(-2))
    assert expected_calibration_error(np.array([2.0, 2.0, -2.0])) == pytest.approx(abs(2 / 3 - p))
    # Separate bins weigh by count: conf 0.8808 (right) and 0.5498 (gap 0.2, right).
    q = 1 / (1 + math.exp(-0.2))
    assert expected_calibration_error(np.array([2.0, 0.2])) == pytest.approx(((1 - p) + (1 - q)) / 2)


def test_pair_metrics_count_ties_apart_and_group_by_source_and_strength() -> None:
    examples = [
        pair("a", "b", margin=0.0, source="hh"),
        pair("a", "b", margin=1 / 3, source="hh"),
        pair("a", "b", margin=0.9, source="web"),
        pair("a", "b", margin=0.5, source="web"),
    ]
    metrics = pair_metrics(np.array([1.0, 0.0, -1.0, 2.0]), examples)
    assert metrics["accuracy"] == 0.5
    assert metrics["tie_rate"] == 0.25
    assert metrics["by_source"] == {"hh": {"count": 2, "accuracy": 0.5}, "web": {"count": 2, "accuracy": 0.5}}
    assert metrics["by_strength"]["strong"] == {"count": 1, "accuracy": 0.0}
    assert [strength_bucket(m) for m in (0.0, 0.2, 1 / 3, 0.5, 0.9, 1.0)] == [
        "none",
        "slight",
        "slight",
        "clear",
        "strong",
        "strong",
    ]
    assert metrics["constant_baseline_accuracy"] == 0.5


@pytest.fixture(scope="module")
def regression_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("regression")
    config = TrainConfig(
        backbone=str(tiny_backbone(root / "bert")),
        objective="combined",
        attributes=("helpful", "correct"),
        batch_size=16,
        learning_rate=1e-2,
        max_length=32,
    )
    train(config, toy_pairs(48, seed=1), [], output_dir=root / "run")
    return root / "run" / "model"


def test_evaluate_reports_accuracy_calibration_and_attribute_rmse(regression_model: Path) -> None:
    examples = toy_pairs(12, seed=9, source="toy")
    metrics = evaluate(regression_model.parent, examples)  # a run directory works as well as model/
    assert metrics["count"] == 12
    assert 0 <= metrics["accuracy"] <= 1
    assert 0 <= metrics["ece"] <= 1
    assert set(metrics["by_source"]) == {"toy"}
    assert set(metrics["attribute_rmse"]) == {"helpful", "correct"}
    assert all(math.isfinite(v) for v in metrics["attribute_rmse"].values())
    assert "ensemble" not in metrics
    assert evaluate(regression_model, []) == {"count": 0}


def test_scores_come_back_in_the_order_given(regression_model: Path) -> None:
    # Lengths out of order, so length-sorted batching must put them back.
    items = [("q", "good " + "why " * n) for n in (3, 9, 0, 6, 1, 12, 2)]
    batched = score_texts(regression_model, items, batch_size=3)
    one_by_one = np.array([score_texts(regression_model, [item])[0] for item in items])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert len(set(np.round(batched, 6))) > 1


def test_score_pairs_gives_both_rewards_and_their_margin(regression_model: Path) -> None:
    [score] = score_pairs(regression_model, [("q", "good answer", "bad answer")])
    assert score.margin == pytest.approx(score.reward_a - score.reward_b)
    assert score.ensemble_mean == pytest.approx(score.margin)
    assert score.ensemble_std == 0.0
    assert score_pairs(regression_model, []) == []
