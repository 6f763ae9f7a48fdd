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

from annotate.rules import sign

Array = npt.NDArray[np.float64]


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


@dataclass(frozen=True)
class Labels:
    """Labels as triples, one per (unit, coder) that has one: the sparse form Dawid-Skene runs on, so a million
    units and a hundred coders cost memory per label rather than per cell."""

    unit: npt.NDArray[np.int64]
    coder: npt.NDArray[np.int64]
    given: npt.NDArray[np.int64]  # class index 0..classes-1
    units: int
    coders: int


def _dense_labels(labels: npt.ArrayLike) -> Labels:
    given = np.asarray(labels, dtype=np.int64)
    rows, cols = np.nonzero(given >= 0)
    return Labels(rows.astype(np.int64), cols.astype(np.int64), given[rows, cols], *given.shape)


def dawid_skene(labels: npt.ArrayLike, classes: int, *, max_iter: int = 100, tol: float = 1e-6) -> DawidSkene:
    """Dawid and Skene's (1979) EM estimate of each item's true class and each coder's confusion matrix.

    `labels` is units x coders holding class indices 0..classes-1, or -1 where a coder gave none."""
    return dawid_skene_sparse(_dense_labels(labels), classes, max_iter=max_iter, tol=tol)


def dawid_skene_sparse(labels: Labels, classes: int, *, max_iter: int = 100, tol: float = 1e-6) -> DawidSkene:
    """Dawid-Skene over labels given as triples (Labels). Starts from the majority vote; a little additive
    smoothing keeps unseen confusions from becoming certainties.

    Each EM step is a few np.bincount calls over the labels (sums grouped by unit, or by coder and given class),
    so time and memory grow with the number of labels, not with units x coders x classes as a dense tensor's do
    (dawid_skene_dense, the reference it matches)."""
    # The (coder, given class) cell of each label, and the unit's (unit, given class) cell for the first votes.
    cell = labels.coder * classes + labels.given
    votes = np.bincount(labels.unit * classes + labels.given, minlength=labels.units * classes)
    votes = votes.reshape(labels.units, classes).astype(np.float64)
    posteriors = (votes + 1e-9) / (votes + 1e-9).sum(axis=1, keepdims=True)
    iteration = 0
    for iteration in range(1, max_iter + 1):  # noqa: B007 - reported in the result
        priors, confusion = _ds_maximise(posteriors, labels, cell, classes)
        updated = _ds_expect(priors, confusion, labels, cell)
        change = float(np.abs(updated - posteriors).max()) if len(updated) else 0.0
        posteriors = updated
        if change < tol:
            break
    priors, confusion = _ds_maximise(posteriors, labels, cell, classes)
    reliability = np.einsum("k,wkk->w", priors, confusion)
    return DawidSkene(posteriors, confusion, priors, reliability, iteration)


def _ds_maximise(
    posteriors: Array, labels: Labels, cell: npt.NDArray[np.int64], classes: int, smoothing: float = 0.01
) -> tuple[Array, Array]:
    priors = (posteriors.sum(axis=0) + smoothing) / (posteriors.sum() + smoothing * classes)
    # confusion[w, k, l]: expected count of coder w saying l when the truth is k, normalised over l: for each k,
    # the posteriors of k summed over the labels in each (w, l) cell.
    per_label = posteriors[labels.unit]
    confusion = np.empty((labels.coders, classes, classes))
    for truth in range(classes):
        summed = np.bincount(cell, weights=per_label[:, truth], minlength=labels.coders * classes)
        confusion[:, truth, :] = summed.reshape(labels.coders, classes)
    confusion += smoothing
    return priors, confusion / confusion.sum(axis=2, keepdims=True)


def _ds_expect(priors: Array, confusion: Array, labels: Labels, cell: npt.NDArray[np.int64]) -> Array:
    # Each label adds log P(coder says l | truth k) to its unit's row, for every k: rows of a (w, l) x k table.
    coders, classes = confusion.shape[0], confusion.shape[1]
    per_cell = np.log(confusion).transpose(0, 2, 1).reshape(coders * classes, classes)
    per_label = per_cell[cell]
    log_likelihood = np.empty((labels.units, classes))
    for truth in range(classes):
        log_likelihood[:, truth] = np.bincount(labels.unit, weights=per_label[:, truth], minlength=labels.units)
    log_likelihood += np.log(priors)
    return _normalised(log_likelihood)


def _normalised(log_likelihood: Array) -> Array:
    log_likelihood = log_likelihood - log_likelihood.max(axis=1, keepdims=True)
    likelihood = np.exp(log_likelihood)
    return np.asarray(likelihood / likelihood.sum(axis=1, keepdims=True), dtype=np.float64)


def dawid_skene_dense(labels: npt.ArrayLike, classes: int, *, max_iter: int = 100, tol: float = 1e-6) -> DawidSkene:
    """The same estimate over a dense units x coders x classes one-hot tensor, by einsum: Concord's first
    implementation, kept as the reference that dawid_skene_sparse is tested and benchmarked against. Its memory
    is units x coders x classes floats (2.4 GB for 1M items, 100 annotators, 3 classes): not for real projects."""
    given = np.asarray(labels, dtype=np.int64)
    units, coders = given.shape
    said = np.zeros((units, coders, classes))
    rows, cols = np.nonzero(given >= 0)
    said[rows, cols, given[rows, cols]] = 1.0
    votes = said.sum(axis=1)
    posteriors = (votes + 1e-9) / (votes + 1e-9).sum(axis=1, keepdims=True)
    iteration = 0
    for iteration in range(1, max_iter + 1):  # noqa: B007 - reported in the result
        priors, confusion = _ds_maximise_dense(posteriors, said)
        log_likelihood = np.log(priors)[None, :] + np.einsum("uwl,wkl->uk", said, np.log(confusion))
        updated = _normalised(log_likelihood)
        change = float(np.abs(updated - posteriors).max()) if len(updated) else 0.0
        posteriors = updated
        if change < tol:
            break
    priors, confusion = _ds_maximise_dense(posteriors, said)
    reliability = np.einsum("k,wkk->w", priors, confusion)
    return DawidSkene(posteriors, confusion, priors, reliability, iteration)


def _ds_maximise_dense(posteriors: Array, said: Array, smoothing: float = 0.01) -> tuple[Array, Array]:
    priors = (posteriors.sum(axis=0) + smoothing) / (posteriors.sum() + smoothing * posteriors.shape[1])
    confusion = np.einsum("uk,uwl->wkl", posteriors, said) + smoothing
    return priors, confusion / confusion.sum(axis=2, keepdims=True)


def sign_dawid_skene(
    unit: npt.ArrayLike, coder: npt.ArrayLike, strength: npt.ArrayLike, *, units: int, coders: int
) -> DawidSkene:
    """Dawid-Skene over the preferred sides of strengths given as triples (unit, coder, strength), three classes:
    0 prefers A, 1 a tie, 2 prefers B. A coder who picks sides at random ends up trusted less."""
    classes = np.sign(np.asarray(strength, dtype=np.float64)).astype(np.int64) + 1
    labels = Labels(np.asarray(unit, dtype=np.int64), np.asarray(coder, dtype=np.int64), classes, units, coders)
    return dawid_skene_sparse(labels, 3)


# Consensus rules: how several annotators' strengths on one item become one preference, for dataset versions and
# the adjudication page. Each gives a side and its confidence, which a version's row carries as its weight.

CONSENSUS_RULES = {
    "mean": "Mean strength",
    "weighted": "Annotator-weighted mean (the weights on the annotators page)",
    "dawid_skene": "Dawid-Skene posterior (annotator reliability learnt from the whole project)",
}


@dataclass(frozen=True)
class Consensus:
    side: int  # -1 A, +1 B, 0 no preference (a tie, or nothing to go on)
    confidence: float  # the rule's confidence in that side, 0 to 1


NO_CONSENSUS = Consensus(0, 0.0)


def mean_consensus(strengths: Sequence[float]) -> Consensus:
    """The side of the mean strength; confidence: the share of strengths on that side."""
    return weighted_consensus(strengths, [1.0] * len(strengths))


def weighted_consensus(strengths: Sequence[float], weights: Sequence[float]) -> Consensus:
    """The side of the weighted mean strength; confidence: the weighted share of strengths on that side."""
    mean = mean_strength(strengths, weights)
    side = sign(mean) if mean is not None else 0
    if side == 0:
        return NO_CONSENSUS
    total = sum(weights)
    behind = sum(w for s, w in zip(strengths, weights, strict=True) if sign(s) == side)
    return Consensus(side, behind / total)


def posterior_consensus(posterior: Sequence[float]) -> Consensus:
    """The most probable of (A, tie, B) under a Dawid-Skene posterior; confidence: its posterior probability."""
    best = max(range(3), key=lambda k: posterior[k])
    return Consensus(best - 1, float(posterior[best])) if best != 1 else NO_CONSENSUS
