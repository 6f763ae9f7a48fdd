"""Selective-annotation strategies on arrays alone: each picks what its idea says first (checked against brute
force where one exists), every strategy returns distinct indices reproducibly, and bad inputs are named."""

import math

import numpy as np
import pytest

from training.ml import selection
from training.ml.selection import (
    NEIGHBOURS_PER_ERROR,
    STRATEGIES,
    STRATEGY_LABELS,
    Labelled,
    Pool,
    SelectionProblem,
    bradley_terry_weights,
    fisher_greedy,
    fisher_prior,
    required_inputs,
    select,
)


def full_pool(n: int = 60, seed: int = 0) -> Pool:
    """A pool with every array any strategy reads."""
    rng = np.random.default_rng(seed)
    return Pool(
        size=n,
        margins=rng.normal(size=n),
        member_margins=rng.normal(size=(n, 3)),
        features=rng.normal(size=(n, 6)),
        embeddings=rng.normal(size=(n, 5)),
    )


def full_labelled(count: int = 12, seed: int = 1) -> Labelled:
    rng = np.random.default_rng(seed)
    return Labelled(
        features=rng.normal(size=(count, 6)),
        margins=rng.normal(size=count),
        embeddings=rng.normal(size=(count, 5)),
        signs=rng.choice([-1, 1], size=count),
    )


def pick(
    strategy: str,
    pool: Pool,
    k: int,
    seed: int = 0,
    *,
    labelled: Labelled | None = None,
    random_share: float = 0.0,
    max_candidates: int = 200_000,
) -> list[int]:
    rng = np.random.default_rng(seed)
    chosen = select(
        strategy, pool, k, rng=rng, labelled=labelled, random_share=random_share, max_candidates=max_candidates
    )
    return chosen.tolist()


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# Every strategy -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("k", [1, 17, 60, 75])
def test_every_strategy_returns_distinct_valid_indices_reproducibly(strategy: str, k: int) -> None:
    pool, labelled = full_pool(), full_labelled()
    first = select(strategy, pool, k, rng=np.random.default_rng(5), labelled=labelled, random_share=0.3)
    again = select(strategy, pool, k, rng=np.random.default_rng(5), labelled=labelled, random_share=0.3)
    assert first.dtype == np.int64
    assert len(first) == min(k, pool.size)
    assert len(set(first.tolist())) == len(first)
    assert ((first >= 0) & (first < pool.size)).all()
    assert first.tolist() == again.tolist()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_picks_nothing_for_k_zero_or_an_empty_pool(strategy: str) -> None:
    assert pick(strategy, full_pool(), 0) == []
    empty = Pool(
        size=0,
        margins=np.zeros(0),
        member_margins=np.zeros((0, 2)),
        features=np.zeros((0, 4)),
        embeddings=np.zeros((0, 3)),
    )
    assert pick(strategy, empty, 5) == []


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_chunked_passes_give_the_same_picks(strategy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pool, labelled = full_pool(n=50), full_labelled()
    whole = pick(strategy, pool, 20, labelled=labelled)
    monkeypatch.setattr(selection, "CHUNK_ROWS", 7)
    monkeypatch.setattr(selection, "CENTRE_BLOCK", 5)
    assert pick(strategy, pool, 20, labelled=labelled) == whole


def test_each_strategy_names_what_it_reads_and_has_a_label() -> None:
    assert required_inputs("random") == frozenset()
    assert required_inputs("disagreement") == {"member_margins"}
    assert required_inputs("uncertainty") == {"margins"}
    assert required_inputs("fisher") == {"features", "margins"}
    assert required_inputs("coverage") == {"embeddings"}
    assert required_inputs("errors") == {"embeddings", "margins"}
    assert set(STRATEGY_LABELS) == set(STRATEGIES)
    with pytest.raises(SelectionProblem, match="unknown selection strategy 'bald'"):
        required_inputs("bald")


def test_random_is_a_uniform_permutation_prefix() -> None:
    pool = Pool(size=30)
    assert pick("random", pool, 10, seed=3) == np.random.default_rng(3).permutation(30)[:10].tolist()


# Uncertainty and disagreement ---------------------------------------------------------------------------------------


def test_uncertainty_picks_the_smallest_margins_first() -> None:
    margins = np.array([3.0, -0.1, 0.5, -2.0, 0.05, 0.1, -0.5, 1.0])
    pool = Pool(size=8, margins=margins)
    # 0.1 and -0.1 tie, as do 0.5 and -0.5: the lower index goes first.
    assert pick("uncertainty", pool, 8) == [4, 1, 5, 2, 6, 7, 3, 0]


def test_ties_go_to_the_lower_index_in_a_large_pool() -> None:
    rng = np.random.default_rng(0)
    margins = rng.choice([-1.0, 1.0], size=1000) * rng.integers(1, 4, size=1000)  # only three distinct |margin|
    pool = Pool(size=1000, margins=margins)
    assert pick("uncertainty", pool, 25) == np.argsort(np.abs(margins), kind="stable")[:25].tolist()


def test_disagreement_picks_the_largest_member_spread_first() -> None:
    members = np.array([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0], [5.0, 5.1, 5.0], [3.0, -3.0, 0.0], [2.0, 0.0, 1.0]])
    pool = Pool(size=5, member_margins=members, margins=np.zeros(5))
    expected = np.argsort(-members.std(axis=1), kind="stable").tolist()
    assert expected[:2] == [3, 1]
    assert pick("disagreement", pool, 5) == expected


# Fisher information -------------------------------------------------------------------------------------------------


def axis_rows(axis: int, count: int, dim: int, length: float, seed: int) -> np.ndarray:
    """`count` rows of the given length pointing along one axis, a little noise on the others."""
    rows = np.random.default_rng(seed).normal(scale=0.01, size=(count, dim))
    rows[:, axis] = length
    return rows


def test_fisher_first_explores_the_direction_the_labels_left_out() -> None:
    # Pool rows along axis 0 are a little longer, so that with nothing labelled they would come first.
    features = np.vstack([axis_rows(0, 10, 3, 1.1, seed=0), axis_rows(1, 10, 3, 1.0, seed=1)])
    pool = Pool(size=20, features=features, margins=np.zeros(20))
    assert pick("fisher", pool, 1)[0] < 10
    labelled = Labelled(features=axis_rows(0, 50, 3, 1.0, seed=2), margins=np.zeros(50))
    assert all(index >= 10 for index in pick("fisher", pool, 3, labelled=labelled))


def test_fisher_does_not_pick_a_near_duplicate_second() -> None:
    features = np.array([[2.0, 0, 0, 0], [2.0, 0.01, 0, 0], [0, 1.9, 0, 0], [0, 0, 1.9, 0], [0, 0, 0, 1.8]])
    pool = Pool(size=5, features=features, margins=np.zeros(5))
    # By single-pair gain alone the two near-duplicates lead.
    assert set(np.argsort(-(features**2).sum(axis=1))[:2].tolist()) == {0, 1}
    picks = pick("fisher", pool, 3)
    assert picks[0] in {0, 1}
    assert set(picks[1:]) == {2, 3}


def test_fisher_prefers_the_pairs_the_model_is_unsure_of() -> None:
    features = np.vstack([axis_rows(0, 5, 2, 1.0, seed=0), axis_rows(1, 5, 2, 1.0, seed=1)])
    margins = np.r_[np.full(5, 4.0), np.zeros(5)]
    assert pick("fisher", Pool(size=10, features=features, margins=margins), 1)[0] >= 5


def brute_force_fisher(
    features: np.ndarray, weights: np.ndarray, prior: np.ndarray, k: int
) -> tuple[list[int], list[float]]:
    """Greedy log-det increments by numpy's slogdet of every candidate's updated matrix."""
    matrix, picks, gains = prior.copy(), list[int](), list[float]()
    for _ in range(k):
        base = np.linalg.slogdet(matrix)[1]
        increments = np.array(
            [np.linalg.slogdet(matrix + w * np.outer(x, x))[1] - base for x, w in zip(features, weights, strict=True)]
        )
        increments[picks] = -np.inf
        best = int(np.argmax(increments))
        picks.append(best)
        gains.append(float(increments[best]))
        matrix += weights[best] * np.outer(features[best], features[best])
    return picks, gains


def test_fisher_greedy_matches_brute_force_log_det_increments() -> None:
    rng = np.random.default_rng(4)
    raw = rng.normal(size=(30, 5)) * 3.0
    margins = rng.normal(scale=2.0, size=30)
    known_features, known_margins = rng.normal(size=(10, 5)) * 3.0, rng.normal(size=10)
    labelled = Labelled(features=known_features, margins=known_margins)
    # Features are measured in units of the pool's mean norm (see selection._fisher).
    scale = float(np.linalg.norm(raw, axis=1).mean())
    prior = np.eye(5) * selection.RIDGE
    for x, m in zip(known_features / scale, known_margins, strict=True):
        prior += bradley_terry_weights(m) * np.outer(x, x)
    assert np.allclose(fisher_prior(labelled, scale, 5), prior)

    weights = bradley_terry_weights(margins)
    expected_picks, expected_gains = brute_force_fisher(raw / scale, weights, prior, 8)
    picks, gains = fisher_greedy(raw / scale, weights, 8, prior)
    assert picks.tolist() == expected_picks
    assert np.allclose(gains, expected_gains, rtol=1e-4)
    assert pick("fisher", Pool(size=30, features=raw, margins=margins), 8, labelled=labelled) == expected_picks


def test_fisher_picks_do_not_depend_on_the_features_scale() -> None:
    rng = np.random.default_rng(6)
    features, margins = rng.normal(size=(40, 6)), rng.normal(size=40)
    known_features, known_margins = rng.normal(size=(12, 6)), rng.normal(size=12)
    pool = Pool(size=40, features=features, margins=margins)
    picks = pick("fisher", pool, 10, labelled=Labelled(features=known_features, margins=known_margins))
    scaled_pool = Pool(size=40, features=features * 1000.0, margins=margins)
    scaled_labelled = Labelled(features=known_features * 1000.0, margins=known_margins)
    assert pick("fisher", scaled_pool, 10, labelled=scaled_labelled) == picks


def test_bradley_terry_weights_are_p_times_one_minus_p_without_overflow() -> None:
    margins = np.array([0.0, 1.5, -3.0, 800.0, -800.0])
    p = 1 / (1 + np.exp(-margins[:3]))
    weights = bradley_terry_weights(margins)
    assert np.allclose(weights[:3], p * (1 - p))
    assert weights[3] == weights[4] == 0.0


# Coverage -----------------------------------------------------------------------------------------------------------


def clusters(per_cluster: int = 30, count: int = 5, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings around `count` orthogonal directions (far apart as unit vectors go), and each row's cluster."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:count] * 10.0
    members = np.repeat(np.arange(count), per_cluster)
    return centres[members] + rng.normal(size=(len(members), dim)), members


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coverage_first_picks_hit_every_cluster(seed: int) -> None:
    embeddings, members = clusters(seed=seed)
    picks = pick("coverage", Pool(size=len(members), embeddings=embeddings), 5, seed=seed)
    assert sorted(members[picks].tolist()) == [0, 1, 2, 3, 4]


def test_coverage_leaves_the_labelled_clusters_for_last() -> None:
    embeddings, members = clusters()
    pool = Pool(size=len(members), embeddings=embeddings)
    labelled = Labelled(embeddings=embeddings[members <= 1][::10] + 0.1)
    picks = pick("coverage", pool, 3, labelled=labelled)
    assert sorted(members[picks].tolist()) == [2, 3, 4]


# Errors -------------------------------------------------------------------------------------------------------------


def along(axis: int, side: int, cosines: list[float], dim: int = 8) -> np.ndarray:
    """Unit rows at the given cosines to one axis, leaning towards another (`side`) for the rest."""
    rows = np.zeros((len(cosines), dim))
    rows[:, axis] = cosines
    rows[:, side] = np.sqrt(1 - np.square(cosines))
    return rows


def errors_setting() -> tuple[Pool, Labelled]:
    """Two wrong labelled pairs (along axis 0, margin +3 against -1; along axis 1, margin -1 against +1) and a
    right one along axis 2; pool rows near each of them and unrelated rows elsewhere."""
    near_worst = along(0, 5, [0.99, 0.97, 0.95])  # rows 0-2
    near_second = along(1, 6, [0.98, 0.96, 0.94])  # rows 3-5
    near_right = along(2, 7, [0.999, 0.998])  # rows 6-7
    elsewhere = unit(np.random.default_rng(0).normal(size=(12, 8)) * np.r_[0, 0, 0, 1, 1, 1, 1, 1])  # rows 8-19
    embeddings = np.vstack([near_worst, near_second, near_right, elsewhere])
    margins = np.linspace(-2, 2, 20)
    labelled = Labelled(
        embeddings=np.eye(8)[[1, 2, 0]] * 5.0,
        margins=np.array([-1.0, 2.0, 3.0]),
        signs=np.array([1, 1, -1]),
    )
    return Pool(size=20, margins=margins, embeddings=embeddings), labelled


def test_errors_take_the_neighbours_of_wrong_pairs_round_robin_worst_first() -> None:
    pool, labelled = errors_setting()
    assert pick("errors", pool, 6, labelled=labelled) == [0, 3, 1, 4, 2, 5]


def test_errors_fill_by_uncertainty_beyond_each_errors_neighbours() -> None:
    pool, _ = errors_setting()
    query = np.random.default_rng(3).normal(size=8)  # a direction at distinct cosines to every pool row
    one_error = Labelled(embeddings=query[None, :], margins=np.array([3.0]), signs=np.array([-1]))
    embeddings, margins = np.asarray(pool.embeddings), np.asarray(pool.margins)
    nearest = np.argsort(-(unit(embeddings) @ query))[:NEIGHBOURS_PER_ERROR].tolist()
    uncertain = np.argsort(np.abs(margins), kind="stable")
    rest = [int(i) for i in uncertain if i not in nearest][:4]
    assert pick("errors", pool, NEIGHBOURS_PER_ERROR + 4, labelled=one_error) == nearest + rest


def test_errors_count_a_neighbour_shared_by_two_errors_once() -> None:
    pool, _ = errors_setting()
    twice = Labelled(embeddings=np.eye(8)[[0, 0]], margins=np.array([3.0, 2.0]), signs=np.array([-1, -1]))
    assert pick("errors", pool, 3, labelled=twice) == [0, 1, 2]


@pytest.mark.parametrize("case", ["nothing labelled", "empty labelled", "no errors"])
def test_errors_fall_back_to_uncertainty_without_errors(case: str) -> None:
    pool, wrong = errors_setting()
    right = Labelled(embeddings=wrong.embeddings, margins=wrong.margins, signs=np.sign(np.asarray(wrong.margins)))
    labelled = {"nothing labelled": None, "empty labelled": Labelled(), "no errors": right}[case]
    assert pick("errors", pool, 7, labelled=labelled) == pick("uncertainty", pool, 7)


# Random share -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("share", "draws"), [(0.5, 5), (0.25, 3), (1.0, 10)])
def test_random_share_puts_exactly_that_many_draws_among_the_strategys_picks(
    strategy: str, share: float, draws: int
) -> None:
    pool, labelled = full_pool(), full_labelled()
    # The strategy's own picks are the ones it makes for k - draws with the same seed (round half up: 2.5 -> 3).
    own = pick(strategy, pool, 10 - draws, seed=9, labelled=labelled)
    mixed = pick(strategy, pool, 10, seed=9, labelled=labelled, random_share=share)
    assert [index for index in mixed if index in own] == own
    assert len(set(mixed) - set(own)) == draws


def test_random_share_rounds_half_up() -> None:
    pool = Pool(size=1000, margins=np.arange(1000.0))  # uncertainty's picks: 0, 1, 2, ...
    mixed = pick("uncertainty", pool, 10, random_share=0.25)
    # 2.5 draws round to 3 (Python's round would give 2 and an eighth own pick, 7).
    assert [index for index in mixed if index < 10] == list(range(7))
    assert len(mixed) == 10


def test_random_draws_are_spread_through_the_order() -> None:
    pool = Pool(size=1000, margins=np.arange(1000.0))
    positions = set()
    for seed in range(20):
        mixed = pick("uncertainty", pool, 10, seed=seed, random_share=0.3)
        positions |= {position for position, index in enumerate(mixed) if index >= 7}
    assert positions == set(range(10))


@pytest.mark.parametrize("share", [-0.1, 1.5, math.nan])
def test_it_refuses_a_random_share_outside_zero_to_one(share: float) -> None:
    with pytest.raises(SelectionProblem, match="random_share") as raised:
        pick("uncertainty", full_pool(), 5, random_share=share)
    assert raised.value.field == "random_share"


# Bad inputs ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("strategy", "field"), [(s, f) for s in STRATEGIES for f in sorted(required_inputs(s))])
def test_it_names_a_missing_array_and_the_strategy_that_needs_it(strategy: str, field: str) -> None:
    pool = full_pool()
    arrays = {name: getattr(pool, name) for name in ("margins", "member_margins", "features", "embeddings")}
    arrays[field] = None
    with pytest.raises(SelectionProblem, match=rf"the {strategy} strategy needs .*\({field}\)") as raised:
        pick(strategy, Pool(size=pool.size, **arrays), 5)
    assert raised.value.field == f"pool.{field}"


@pytest.mark.parametrize(
    ("strategy", "pool", "field"),
    [
        ("uncertainty", Pool(size=5, margins=np.zeros(4)), "pool.margins"),
        ("random", Pool(size=5, margins=np.zeros(6)), "pool.margins"),
        ("uncertainty", Pool(size=2, margins=np.array([0.0, np.nan])), "pool.margins"),
        ("disagreement", Pool(size=5, member_margins=np.zeros((5, 1))), "pool.member_margins"),
        ("fisher", Pool(size=5, features=np.zeros(5), margins=np.zeros(5)), "pool.features"),
        ("coverage", Pool(size=5, embeddings=np.zeros((4, 3))), "pool.embeddings"),
    ],
)
def test_it_names_a_pool_array_of_the_wrong_shape(strategy: str, pool: Pool, field: str) -> None:
    with pytest.raises(SelectionProblem, match=field.replace(".", r"\.")) as raised:
        pick(strategy, pool, 2)
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("strategy", "labelled", "field"),
    [
        ("coverage", Labelled(embeddings=np.zeros((3, 4))), "labelled.embeddings"),
        ("fisher", Labelled(features=np.zeros((3, 6)), margins=np.zeros(2)), "labelled.margins"),
        ("fisher", Labelled(features=np.zeros((3, 6))), "labelled.margins"),
        ("errors", Labelled(embeddings=np.zeros((2, 5)), margins=np.zeros(2)), "labelled.signs"),
        ("errors", Labelled(embeddings=np.zeros((1, 5)), margins=np.zeros(1), signs=np.array([2])), "labelled.signs"),
    ],
)
def test_it_names_a_labelled_array_that_is_wrong_or_missing(strategy: str, labelled: Labelled, field: str) -> None:
    with pytest.raises(SelectionProblem, match=field.replace(".", r"\.")) as raised:
        pick(strategy, full_pool(), 2, labelled=labelled)
    assert raised.value.field == field


def test_it_refuses_a_negative_k() -> None:
    with pytest.raises(SelectionProblem, match="k") as raised:
        pick("random", Pool(size=3), -1)
    assert raised.value.field == "k"


def test_empty_labelled_arrays_count_as_nothing_labelled() -> None:
    pool = full_pool()
    empty = Labelled(features=np.zeros((0, 6)), margins=np.zeros(0), embeddings=np.zeros((0, 5)), signs=np.zeros(0))
    for strategy in STRATEGIES:
        assert pick(strategy, pool, 9, labelled=empty) == pick(strategy, pool, 9)


# Shortlists for large pools -----------------------------------------------------------------------------------------


def test_fisher_on_a_shortlist_picks_only_among_the_highest_single_gains() -> None:
    # The 50 longest rows all point one way; the other 250 are shorter and point every way.
    features = np.vstack([axis_rows(0, 50, 8, 3.0, seed=0), 1.5 * unit(np.random.default_rng(1).normal(size=(250, 8)))])
    margins = np.random.default_rng(2).normal(scale=0.3, size=300)
    pool = Pool(size=300, features=features, margins=margins)
    single_gains = bradley_terry_weights(margins) * (features**2).sum(axis=1)
    shortlist = set(np.argsort(-single_gains)[:50].tolist())
    assert shortlist == set(range(50))
    # Without the shortlist the greedy soon leaves the one direction, so the shortlist is what keeps the picks in.
    assert not set(pick("fisher", pool, 10)) <= shortlist
    picks = pick("fisher", pool, 10, max_candidates=50)
    assert len(set(picks)) == 10
    assert set(picks) <= shortlist


@pytest.mark.parametrize("strategy", ["fisher", "coverage"])
def test_a_shortlist_smaller_than_k_still_gives_k_picks(strategy: str) -> None:
    picks = pick(strategy, full_pool(n=200), 40, max_candidates=10)
    assert len(set(picks)) == 40
    assert all(0 <= index < 200 for index in picks)


def test_coverage_on_a_shortlist_is_valid_and_reproducible() -> None:
    embeddings, members = clusters(per_cluster=200)
    pool = Pool(size=len(members), embeddings=embeddings)
    picks = pick("coverage", pool, 5, seed=4, max_candidates=100)
    assert picks == pick("coverage", pool, 5, seed=4, max_candidates=100)
    assert sorted(members[picks].tolist()) == [0, 1, 2, 3, 4]
