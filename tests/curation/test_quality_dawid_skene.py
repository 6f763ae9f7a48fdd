"""Dawid-Skene over label triples (curation.aggregation.dawid_skene_sparse, np.bincount per EM step) gives the
same estimate as the dense units x coders x classes einsum it replaced (dawid_skene_dense)."""

import numpy as np
import pytest

from curation.aggregation import Labels, dawid_skene, dawid_skene_dense, dawid_skene_sparse, sign_dawid_skene


def random_labels(seed: int) -> tuple[np.ndarray, int]:
    """A units x coders matrix of class indices, -1 where missing: coders of varied reliability, some units and
    one coder without any label."""
    rng = np.random.default_rng(seed)
    units, coders, classes = int(rng.integers(20, 120)), int(rng.integers(3, 9)), int(rng.integers(2, 5))
    truth = rng.integers(0, classes, units)
    skill = rng.uniform(0.2, 0.95, coders)
    right = rng.random((units, coders)) < skill
    matrix = np.where(right, truth[:, None], rng.integers(0, classes, (units, coders)))
    matrix[rng.random((units, coders)) < 0.5] = -1
    matrix[:3] = -1
    matrix[:, -1] = -1
    return matrix, classes


@pytest.mark.parametrize("seed", range(8))
def test_the_sparse_estimate_matches_the_dense_one(seed: int) -> None:
    matrix, classes = random_labels(seed)
    sparse, dense = dawid_skene(matrix, classes), dawid_skene_dense(matrix, classes)
    assert sparse.iterations == dense.iterations
    np.testing.assert_allclose(sparse.posteriors, dense.posteriors, rtol=0, atol=1e-9)
    np.testing.assert_allclose(sparse.confusion, dense.confusion, rtol=0, atol=1e-9)
    np.testing.assert_allclose(sparse.priors, dense.priors, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sparse.reliability, dense.reliability, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(sparse.labels, dense.labels)


def test_the_order_of_the_triples_does_not_matter() -> None:
    matrix, classes = random_labels(42)
    rows, cols = np.nonzero(matrix >= 0)
    order = np.random.default_rng(0).permutation(len(rows))
    shuffled = Labels(rows[order], cols[order], matrix[rows, cols][order], *matrix.shape)
    np.testing.assert_allclose(
        dawid_skene_sparse(shuffled, classes).posteriors, dawid_skene_dense(matrix, classes).posteriors, atol=1e-9
    )


def test_signs_of_strengths_as_triples_match_the_dense_estimate() -> None:
    rng = np.random.default_rng(7)
    units, coders = 200, 6
    unit = np.repeat(np.arange(units), 3)
    coder = np.concatenate([rng.choice(coders, 3, replace=False) for _ in range(units)])
    strength = rng.integers(-3, 4, len(unit))
    matrix = np.full((units, coders), -1)
    matrix[unit, coder] = np.sign(strength) + 1
    sparse = sign_dawid_skene(unit, coder, strength, units=units, coders=coders)
    np.testing.assert_allclose(sparse.posteriors, dawid_skene_dense(matrix, 3).posteriors, atol=1e-9)


def test_no_labels_at_all_gives_uniform_posteriors() -> None:
    result = dawid_skene(np.full((4, 3), -1), 3)
    np.testing.assert_allclose(result.posteriors, np.full((4, 3), 1 / 3))
