"""Agreement metrics and aggregation, pure numpy: checked against the krippendorff package and textbook examples."""

import krippendorff
import numpy as np
import pytest

from curation.aggregation import (
    dawid_skene,
    majority_sign,
    mean_strength,
    rating_consensus,
    ratings_consensus,
    sign_dawid_skene,
    spans_merge,
)
from curation.metrics import (
    cohen_kappa,
    fleiss_kappa,
    fleiss_kappa_counts,
    krippendorff_alpha,
    modal_units,
    pairwise_agreement,
)


def _random_matrix(seed: int, low: int, high: int, units: int = 60, coders: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = rng.integers(low, high + 1, size=units)
    matrix = np.clip(truth[:, None] + rng.integers(-1, 2, size=(units, coders)), low, high).astype(float)
    matrix[rng.random(matrix.shape) < 0.35] = np.nan
    return matrix


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("level", "low", "high"), [("ordinal", -3, 3), ("nominal", -1, 1), ("interval", 0, 4)])
def test_alpha_matches_the_krippendorff_package(seed: int, level: str, low: int, high: int) -> None:
    matrix = _random_matrix(seed, low, high)
    expected = krippendorff.alpha(reliability_data=matrix.T, level_of_measurement=level)
    assert krippendorff_alpha(matrix, level) == pytest.approx(expected, abs=1e-10)  # type: ignore[arg-type]


def test_alpha_matches_on_pure_noise_too() -> None:
    rng = np.random.default_rng(42)
    matrix = rng.integers(-3, 4, size=(30, 4)).astype(float)
    matrix[rng.random(matrix.shape) < 0.5] = np.nan
    for level in ("ordinal", "nominal"):
        expected = krippendorff.alpha(reliability_data=matrix.T, level_of_measurement=level)
        assert krippendorff_alpha(matrix, level) == pytest.approx(expected, abs=1e-10)  # type: ignore[arg-type]


def test_alpha_is_one_for_perfect_agreement_and_nan_when_undefined() -> None:
    perfect = np.array([[1, 1, np.nan], [-2, -2, -2], [0, np.nan, 0]], dtype=float)
    assert krippendorff_alpha(perfect, "ordinal") == pytest.approx(1.0)
    assert np.isnan(krippendorff_alpha(np.array([[1.0, 1.0], [1.0, 1.0]]), "nominal"))
    assert np.isnan(krippendorff_alpha(np.array([[1.0, np.nan], [np.nan, 2.0]]), "nominal"))


def test_ordinal_alpha_punishes_far_disagreements_more_than_near_ones() -> None:
    near = np.array([[3, 2], [-3, -3], [1, 1], [-2, -1], [0, 0]], dtype=float)
    far = np.array([[3, -3], [-3, -3], [1, 1], [-2, -1], [0, 0]], dtype=float)
    assert krippendorff_alpha(near, "ordinal") > krippendorff_alpha(far, "ordinal")


def test_cohen_kappa_on_the_textbook_example() -> None:
    # Wikipedia's example: 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15; kappa = 0.4.
    first = np.array([1] * 25 + [0] * 25, dtype=float)
    second = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15, dtype=float)
    assert cohen_kappa(first, second) == pytest.approx(0.4)


def test_cohen_kappa_skips_units_either_coder_missed() -> None:
    first = np.array([1, 0, 1, np.nan, 0])
    second = np.array([1, 0, 1, 0, np.nan])
    assert cohen_kappa(first, second) == pytest.approx(1.0)


# Wikipedia's worked example of Fleiss' kappa: 10 subjects, 14 raters, 5 categories; kappa = 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_on_the_textbook_example() -> None:
    assert fleiss_kappa_counts(FLEISS_TABLE) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_from_a_matrix_matches_the_counts() -> None:
    matrix = np.array([[c for c, n in enumerate(row) for _ in range(n)] for row in FLEISS_TABLE], dtype=float)
    assert fleiss_kappa(matrix) == pytest.approx(fleiss_kappa_counts(FLEISS_TABLE))


def test_fleiss_kappa_refuses_varying_rater_counts_and_modal_units_picks_the_usual_count() -> None:
    matrix = np.array([[1, 1, 1], [1, 0, np.nan], [0, 0, 0], [1, 1, 0], [1, np.nan, np.nan]])
    with pytest.raises(ValueError, match="same number of raters"):
        fleiss_kappa(matrix)
    assert len(modal_units(matrix)) == 3
    assert np.isfinite(fleiss_kappa(modal_units(matrix)))


def test_pairwise_agreement_pools_pairs() -> None:
    # Unit 1: 3 raters all agree (6 ordered pairs agree of 6); unit 2: 2 raters disagree (0 of 2).
    matrix = np.array([[1, 1, 1], [1, -1, np.nan], [1, np.nan, np.nan]])
    assert pairwise_agreement(matrix) == pytest.approx(6 / 8)


def test_mean_strength_discounts_by_weight_and_majority_sign_reports_ties() -> None:
    assert mean_strength([3, -1], [1.0, 1.0]) == pytest.approx(1.0)
    assert mean_strength([3, -1], [0.0, 1.0]) == pytest.approx(-1.0)
    assert mean_strength([2], [0.0]) is None
    assert majority_sign([2, 1, -3]) == 1
    assert majority_sign([2, -1]) is None


def test_helpsteer2_rule_takes_the_three_that_agree_most() -> None:
    assert rating_consensus([0, 3, 4, 4, 1], "helpsteer2") == 4.0  # 3, 4, 4
    assert rating_consensus([0, 3, 4, 4, 1], "mean") == pytest.approx(2.4)
    assert rating_consensus([1, 2], "helpsteer2") == 2.0  # 1.5 rounds half up
    consensus = ratings_consensus([{"a": {"h": 1}, "b": {"h": 4}}, {"a": {"h": 3}}])
    assert consensus == {"a": {"h": 2.0}, "b": {"h": 4.0}}


def test_spans_merge_keeps_characters_half_the_annotators_marked() -> None:
    spans = [
        [{"response": "a", "start": 0, "end": 10, "category": "irrelevant"}],
        [{"response": "a", "start": 5, "end": 12, "category": "irrelevant"}],
        [{"response": "a", "start": 6, "end": 8, "category": "irrelevant"}],
        [],
    ]
    [merged] = spans_merge(spans)
    assert merged.segments == [(5, 10)]
    assert merged.agreement == 0.0  # the fourth annotator marked nothing
    [both] = spans_merge(spans[:2])
    assert both.segments == [(0, 12)]
    assert both.agreement == pytest.approx(5 / 12)


def test_dawid_skene_down_weights_a_random_annotator() -> None:
    rng = np.random.default_rng(7)
    truth = rng.choice([-1, 1], size=400)
    matrix = np.tile(2 * truth[:, None], (1, 5)).astype(float)
    matrix[rng.random(matrix.shape) < 0.1] *= -1
    matrix[:, 4] = rng.choice([-2, 0, 2], size=400)  # says anything
    matrix[rng.random(matrix.shape) < 0.3] = np.nan
    rows, cols = np.nonzero(~np.isnan(matrix))
    result = sign_dawid_skene(rows, cols, matrix[rows, cols], units=400, coders=5)
    assert result.reliability[4] < 0.5 < result.reliability[:4].min()
    assert (result.labels - 1 == truth).mean() > 0.9


def test_dawid_skene_learns_that_a_contrarian_is_informative() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, size=300)
    labels = np.stack([truth, truth, 1 - truth], axis=1)
    labels[rng.random(labels.shape) < 0.15] ^= 1
    result = dawid_skene(labels, 2)
    assert (result.labels == truth).mean() > 0.9
    assert result.confusion[2, 0, 1] > 0.7  # it says 1 when the truth is 0
