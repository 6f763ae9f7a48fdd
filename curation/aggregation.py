"""From several annotators' labels to one per item. Pure numpy: no Django import.

Reliability-weighted consensus is Dawid-Skene, implemented here in numpy rather than taken from crowd-kit:
crowd-kit 1.4.2 requires transformers, nltk, pandas and scikit-learn unconditionally, far too much to pull into
a web app for one EM loop.
"""

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def sign(value: float) -> int:
    return (value > 0) - (value < 0)


def mean_strength(strengths: Sequence[float], weights: Sequence[float] | None = None) -> float | None:
    """The (weighted) mean strength: each annotator's Membership.weight discounts their label. None when
    there is nothing to average (no labels, or every weight is 0)."""
    if weights is None:
        weights = [1.0] * len(strengths)
    total = sum(weights)
    if not strengths or total <= 0:
        return None
    return sum(s * w for s, w in zip(strengths, weights, strict=True)) / total


def majority_sign(strengths: Sequence[float]) -> int | None:
    """The most common sign (-1, 0 or +1) among the labels; None when two signs tie for the most votes."""
    ranked = Counter(sign(s) for s in strengths).most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def rating_consensus(values: Sequence[int], rule: Literal["mean", "helpsteer2"] = "mean") -> float | None:
    """One rating from several annotators' ratings of one attribute of one response.

    "mean" is the plain mean. "helpsteer2" is HelpSteer2's rule: the rounded mean of the three annotators who
    agree most, i.e. the three values with the smallest spread (all of them when there are three or fewer).
    """
    if not values:
        return None
    if rule == "mean":
        return sum(values) / len(values)
    ordered = sorted(values)
    if len(ordered) > 3:
        # The closest three are neighbours once sorted; the first window of least spread wins ties.
        start = min(range(len(ordered) - 2), key=lambda i: ordered[i + 2] - ordered[i])
        ordered = ordered[start : start + 3]
    return float(_round_half_up(sum(ordered) / len(ordered)))


def ratings_consensus(
    ratings: Sequence[Mapping[str, Mapping[str, int]]], rule: Literal["mean", "helpsteer2"] = "mean"
) -> dict[str, dict[str, float]]:
    """Consensus ratings {"a": {attribute: value}, "b": {...}} from each annotator's ratings of one item."""
    gathered: dict[str, dict[str, list[int]]] = {}
    for given in ratings:
        for side, values in given.items():
            for name, value in values.items():
                gathered.setdefault(side, {}).setdefault(name, []).append(value)
    return {
        side: {name: agreed for name, values in names.items() if (agreed := rating_consensus(values, rule)) is not None}
        for side, names in gathered.items()
    }


@dataclass(frozen=True)
class SpanConsensus:
    response: str
    category: str
    # Character ranges [start, end) marked by at least half of the item's annotators.
    segments: list[tuple[int, int]]
    # Characters marked by every annotator / characters marked by anyone (Jaccard's index over n sets).
    agreement: float


def spans_merge(spans_by_annotator: Sequence[Sequence[Mapping[str, Any]]]) -> list[SpanConsensus]:
    """Error spans of one item merged per response and category.

    Each annotator marks a set of characters per (response, category), overlapping spans counting once. The
    consensus keeps characters marked by at least half of all annotators (those who marked nothing count too);
    agreement is the characters everyone marked over the characters anyone marked.
    """
    annotators = len(spans_by_annotator)
    marked: dict[tuple[str, str], list[set[int]]] = {}
    for index, spans in enumerate(spans_by_annotator):
        for span in spans:
            sets = marked.setdefault((span["response"], span["category"]), [set() for _ in range(annotators)])
            sets[index].update(range(span["start"], span["end"]))
    merged = []
    for (response, category), sets in sorted(marked.items()):
        length = max(max(s) for s in sets if s) + 1
        counts = np.zeros(length, dtype=np.int64)
        for chars in sets:
            counts[list(chars)] += 1
        union = int((counts > 0).sum())
        merged.append(
            SpanConsensus(
                response=response,
                category=category,
                segments=_segments(counts * 2 >= annotators),
                agreement=int((counts == annotators).sum()) / union,
            )
        )
    return merged


def _segments(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


@dataclass(frozen=True)
class DawidSkene:
    # Units x classes: the probability of each true class.
    posteriors: Array
    # Coders x true class x given class.
    confusion: Array
    priors: Array
    # Each coder's chance of giving the true class, averaged over the classes by their priors.
    reliability: Array
    iterations: int

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        return np.asarray(self.posteriors.argmax(axis=1), dtype=np.int64)


def dawid_skene(labels: npt.ArrayLike, classes: int, *, max_iter: int = 100, tol: float = 1e-6) -> DawidSkene:
    """Dawid and Skene's (1979) EM estimate of each item's true class and each coder's confusion matrix.

    `labels` is units x coders holding class indices 0..classes-1, or -1 where a coder gave none. Starts from
    the majority vote; a little additive smoothing keeps unseen confusions from becoming certainties.
    """
    given = np.asarray(labels, dtype=np.int64)
    units, coders = given.shape
    # One-hot of what each coder said on each unit: units x coders x classes (all zero where missing).
    said = np.zeros((units, coders, classes))
    rows, cols = np.nonzero(given >= 0)
    said[rows, cols, given[rows, cols]] = 1.0
    votes = said.sum(axis=1)
    posteriors = (votes + 1e-9) / (votes + 1e-9).sum(axis=1, keepdims=True)
    iteration = 0
    for iteration in range(1, max_iter + 1):  # noqa: B007 - reported in the result
        priors, confusion = _ds_maximise(posteriors, said)
        updated = _ds_expect(priors, confusion, said)
        change = float(np.abs(updated - posteriors).max())
        posteriors = updated
        if change < tol:
            break
    priors, confusion = _ds_maximise(posteriors, said)
    reliability = np.einsum("k,wkk->w", priors, confusion)
    return DawidSkene(posteriors, confusion, priors, reliability, iteration)


def _ds_maximise(posteriors: Array, said: Array, smoothing: float = 0.01) -> tuple[Array, Array]:
    priors = (posteriors.sum(axis=0) + smoothing) / (posteriors.sum() + smoothing * posteriors.shape[1])
    # confusion[w, k, l]: expected count of coder w saying l when the truth is k, normalised over l.
    confusion = np.einsum("uk,uwl->wkl", posteriors, said) + smoothing
    return priors, confusion / confusion.sum(axis=2, keepdims=True)


def _ds_expect(priors: Array, confusion: Array, said: Array) -> Array:
    log_likelihood = np.log(priors)[None, :] + np.einsum("uwl,wkl->uk", said, np.log(confusion))
    log_likelihood -= log_likelihood.max(axis=1, keepdims=True)
    likelihood = np.exp(log_likelihood)
    return np.asarray(likelihood / likelihood.sum(axis=1, keepdims=True), dtype=np.float64)


def sign_consensus_dawid_skene(strengths: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], Array]:
    """Each unit's sign (-1, 0, +1) by Dawid-Skene over a units x coders matrix of strengths (NaN missing),
    and each coder's reliability: a coder who disagrees at random ends up trusted less."""
    matrix = np.asarray(strengths, dtype=np.float64)
    classes = np.where(np.isnan(matrix), -1, np.sign(np.nan_to_num(matrix)) + 1).astype(np.int64)
    result = dawid_skene(classes, 3)
    return result.labels - 1, result.reliability
