"""Held-out metrics of a saved reward model or ensemble, and the baselines to read them against."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.ml.data import PairExample
from training.ml.model import member_dirs, model_metadata
from training.ml.scoring import member_outputs

TIE = 1e-6
# Margins are preference strengths scaled to [0, 1] (curation.services.version_rows).
STRENGTH_BUCKETS = (("none", 0.0), ("slight", 1 / 3), ("clear", 2 / 3), ("strong", 1.0))


def evaluate(
    model_dir: Path | str,
    examples: Sequence[PairExample],
    *,
    batch_size: int = 32,
    max_length: int = 256,
    calibration: Sequence[PairExample] = (),
    attribute_means: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Accuracy (chosen scored higher), ties, accuracy by source and by strength, calibration, attribute RMSE
    for models that predict attributes (beside a constant predictor's), and the members' spread for an ensemble.

    With `calibration` pairs (a validation set, not `examples`), a temperature is fitted on them
    (fit_temperature): the model's probability that B beats A is then sigmoid((r_b - r_a) / T), and the ECE of
    those probabilities on `examples` is reported beside the uncalibrated one. `attribute_means` (the training
    set's mean of each rating) is the constant predictor whose RMSE a model's must beat."""
    if not examples:
        return {"count": 0}
    outputs = _pair_outputs(model_dir, examples, batch_size=batch_size, max_length=max_length)
    n = len(examples)
    deltas = outputs[:, :n, 0] - outputs[:, n:, 0]  # (members, pairs)
    metrics = pair_metrics(deltas.mean(axis=0), examples)
    attributes = model_metadata(member_dirs(model_dir)[0]).get("attributes", [])
    if attributes and outputs.shape[2] > 1:
        metrics["attribute_rmse"] = attribute_rmse(outputs.mean(axis=0), examples, attributes)
        if attribute_means is not None:
            metrics["attribute_constant_rmse"] = constant_rmse(examples, attributes, attribute_means)
    if len(deltas) > 1:
        metrics["ensemble"] = {
            "members": len(deltas),
            "member_accuracy": [float((d > TIE).mean()) for d in deltas],
            "mean_std": float(deltas.std(axis=0).mean()),
        }
    if calibration:
        # The held-out pairs may be the calibration pairs themselves (a version without a test split).
        same = calibration is examples
        fitted = (
            outputs if same else _pair_outputs(model_dir, calibration, batch_size=batch_size, max_length=max_length)
        )
        m = len(calibration)
        temperature = fit_temperature(fitted[:, :m, 0].mean(axis=0) - fitted[:, m:, 0].mean(axis=0))
        metrics["calibration"] = {
            "temperature": temperature,
            "pairs": m,
            "ece": expected_calibration_error(deltas.mean(axis=0) / temperature),
        }
    return metrics


def _pair_outputs(
    model_dir: Path | str, examples: Sequence[PairExample], *, batch_size: int, max_length: int
) -> np.ndarray:
    """(members, 2 * pairs, outputs): every chosen response, then every rejected one."""
    items = [(e.prompt, e.chosen) for e in examples] + [(e.prompt, e.rejected) for e in examples]
    return member_outputs(model_dir, items, batch_size=batch_size, max_length=max_length)


# Temperatures searched, on a log scale: from 20x sharper to 20x softer than the raw rewards.
TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(deltas: np.ndarray) -> float:
    """The temperature T that makes sigmoid(delta / T) the best probability that the chosen response wins:
    minimum negative log-likelihood over the calibration pairs, a golden-section search on log T (temperature
    scaling, Guo et al. 2017, for a Bradley-Terry model). 1.0 without pairs."""
    values = np.asarray(deltas, dtype=np.float64)
    if not len(values):
        return 1.0

    def nll(log_t: float) -> float:
        return float(np.logaddexp(0.0, -values / np.exp(log_t)).mean())

    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if nll(a) < nll(b):
            high = b
        else:
            low = a
    return round(float(np.exp((low + high) / 2)), 4)


def _ratings_of(examples: Sequence[PairExample], name: str) -> list[float]:
    """Every rating of one attribute over both responses of the examples."""
    ratings = [e.chosen_ratings for e in examples] + [e.rejected_ratings for e in examples]
    return [r[name] for r in ratings if r and name in r]


def constant_rmse(
    examples: Sequence[PairExample], attributes: Sequence[str], means: Mapping[str, float]
) -> dict[str, float]:
    """RMSE of always predicting `means` (the training set's mean rating) on the ratings present."""
    rated = {name: _ratings_of(examples, name) for name in attributes if name in means}
    return {name: float(np.sqrt(np.mean((np.array(v) - means[name]) ** 2))) for name, v in rated.items() if v}


def attribute_means(examples: Sequence[PairExample], attributes: Sequence[str]) -> dict[str, float]:
    """Each attribute's mean rating over both responses of the examples (the constant predictor)."""
    rated = {name: _ratings_of(examples, name) for name in attributes}
    return {name: float(np.mean(values)) for name, values in rated.items() if values}


def pair_metrics(deltas: np.ndarray, examples: Sequence[PairExample]) -> dict[str, Any]:
    """Metrics of reward gaps r_chosen - r_rejected, one per example."""
    correct = deltas > TIE
    ties = np.abs(deltas) < TIE
    return {
        "count": len(examples),
        "accuracy": float(correct.mean()),
        "tie_rate": float(ties.mean()),
        "ece": expected_calibration_error(deltas),
        "by_source": _grouped(correct, [e.source for e in examples]),
        "by_strength": _grouped(correct, [strength_bucket(e.margin) for e in examples]),
        "length_baseline_accuracy": length_baseline_accuracy(examples),
        "constant_baseline_accuracy": constant_baseline_accuracy(),
    }


def strength_bucket(margin: float) -> str:
    return next(name for name, top in STRENGTH_BUCKETS if margin <= top + 1e-9) if margin <= 1 else "strong"


def _grouped(correct: np.ndarray, keys: list[str]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[bool]] = {}
    for key, hit in zip(keys, correct.tolist(), strict=True):
        groups.setdefault(key, []).append(hit)
    return {key: {"count": len(hits), "accuracy": sum(hits) / len(hits)} for key, hits in sorted(groups.items())}


def expected_calibration_error(deltas: np.ndarray, bins: int = 10) -> float:
    """ECE of p = sigmoid(delta), the model's probability that the chosen response is preferred: predictions
    binned by confidence max(p, 1 - p) into 10 equal bins; the count-weighted mean |accuracy - confidence|."""
    p = 1 / (1 + np.exp(-deltas.astype(np.float64)))
    confidence = np.maximum(p, 1 - p)
    correct = (p > 0.5).astype(np.float64)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    ece = 0.0
    for b in np.unique(index):
        inside = index == b
        ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def attribute_rmse(outputs: np.ndarray, examples: Sequence[PairExample], attributes: list[str]) -> dict[str, float]:
    """RMSE of outputs 1..n against the ratings present; outputs is (2 * pairs, outputs), chosen then rejected."""
    ratings = [e.chosen_ratings for e in examples] + [e.rejected_ratings for e in examples]
    result = {}
    for column, name in enumerate(attributes, start=1):
        rows = [(i, r[name]) for i, r in enumerate(ratings) if r and name in r]
        if rows:
            errors = [(outputs[i, column] - value) ** 2 for i, value in rows]
            result[name] = float(np.sqrt(np.mean(errors)))
    return result


def length_baseline_accuracy(examples: Sequence[PairExample]) -> float:
    """Accuracy of 'the longer response wins' (a tie counts half): a reward model should beat it."""
    if not examples:
        return 0.0
    score = sum(
        1.0 if len(e.chosen) > len(e.rejected) else 0.5 if len(e.chosen) == len(e.rejected) else 0.0 for e in examples
    )
    return score / len(examples)


def constant_baseline_accuracy() -> float:
    """A coin flip."""
    return 0.5
