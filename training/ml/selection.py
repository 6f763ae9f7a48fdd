"""Selective annotation: rank unlabelled candidate pairs so that human labels go where they teach the reward model
most. Pure numpy and faiss (no Django), so the strategies are tested on arrays alone.

Each strategy answers "which pairs next?" with its own idea:

- random: a uniform sample, the baseline every other strategy must beat.
- disagreement: where the ensemble's members disagree most about the margin (the acquisition of ActiveUltraFeedback,
  2026, and the routing of uncertain pairs to humans in Skywork-Reward-V2's curation).
- uncertainty: where the model's P(B preferred) is nearest 1/2 (classic margin sampling).
- fisher: the batch whose Fisher information on the reward head's last-layer features grows log det most, a greedy
  D-optimal design ("Reviving the Classics", 2025): it prefers pairs that are both uncertain and unlike what is
  labelled already, and a near-duplicate of a pick gains almost nothing.
- coverage: k-center greedy on pair embeddings (the coreset idea of PCoreSet): each pick is the pair farthest from
  everything labelled or picked, so the labels cover the pool.
- errors: the nearest unlabelled neighbours of the labelled pairs the model gets wrong (Skywork-Reward-V2's
  error-driven retrieval): a model that misjudges one pair likely misjudges pairs like it.

Any strategy can give a share of its picks to uniform random draws (random_share), so that the labelled data stays
representative of the pool whatever the strategy favours.

Pools of millions of pairs: every pass over a pool is chunked (CHUNK_ROWS rows at a time, float32), and the two
greedy strategies whose cost is O(n·k) (fisher, coverage) run on a shortlist of max_candidates when the pool is
larger. Their working copy is then max_candidates × d float32 (300 MB at 200,000 × 384), whatever the pool size.
"""

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import numpy as np

STRATEGIES: tuple[str, ...] = ("random", "disagreement", "uncertainty", "fisher", "coverage", "errors")
STRATEGY_LABELS: dict[str, str] = {
    "random": "Random",
    "disagreement": "Ensemble disagreement",
    "uncertainty": "Margin uncertainty",
    "fisher": "Fisher information (D-optimal)",
    "coverage": "Coverage (k-center)",
    "errors": "Neighbours of the model's errors",
}
# The prior information in M before any label, in units of features scaled to a mean norm of 1 (see _fisher): one
# pair at P = 1/2 adds 1/4 · x xᵀ, so the prior weighs as much as four such pairs along every direction.
RIDGE = 1.0
# How many of its nearest neighbours one error query may pull: beyond the first few, a pair's neighbours are hardly
# more alike than any pair, and uncertainty (the fill) is the better guess.
NEIGHBOURS_PER_ERROR = 10
CHUNK_ROWS = 65_536  # rows per chunk of a pass over the pool: 100 MB as float32 at 384 dimensions
CENTRE_BLOCK = 512  # labelled centres compared with a chunk at once (coverage)

_REQUIRED: dict[str, frozenset[str]] = {
    "random": frozenset(),
    "disagreement": frozenset({"member_margins"}),
    "uncertainty": frozenset({"margins"}),
    "fisher": frozenset({"features", "margins"}),
    "coverage": frozenset({"embeddings"}),
    "errors": frozenset({"embeddings", "margins"}),
}
_DESCRIPTIONS = {
    "margins": "the model's margins",
    "member_margins": "the ensemble members' margins",
    "features": "the reward head's last-layer pair features",
    "embeddings": "pair embeddings",
    "signs": "the human labels",
}
_NDIM = {"margins": 1, "member_margins": 2, "features": 2, "embeddings": 2, "signs": 1}


class SelectionProblem(ValueError):
    """A strategy cannot run on what it was given; the message names what is missing or wrong (e.g. 'the
    disagreement strategy needs the ensemble members' margins (member_margins); the active model is not an
    ensemble'). `field` names the argument at fault ('pool.margins', 'k', ...) for a form to show it beside."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Pool:
    """The unlabelled candidates; row i of every array is candidate i. Arrays a strategy does not read may be None."""

    size: int
    margins: np.ndarray | None = None  # (n,) the model's reward_b - reward_a: the logit of P(B preferred)
    member_margins: np.ndarray | None = None  # (n, m), m >= 2: each ensemble member's margin
    features: np.ndarray | None = None  # (n, d) last-layer pair features: the reward head's input for B minus for A
    embeddings: np.ndarray | None = None  # (n, e) pair embeddings for coverage and retrieval


@dataclass(frozen=True)
class Labelled:
    """What is labelled already (any field may be None or have 0 rows)."""

    features: np.ndarray | None = None  # (l, d): information already gathered (fisher)
    margins: np.ndarray | None = None  # (l,): the model's margins on them (fisher weights; errors)
    embeddings: np.ndarray | None = None  # (l, e): centres already covered (coverage); error queries (errors)
    signs: np.ndarray | None = None  # (l,): the human label, +1 B preferred, -1 A preferred


def required_inputs(strategy: str) -> frozenset[str]:
    """The Pool fields a strategy reads (random: none; disagreement: member_margins; uncertainty: margins;
    fisher: features and margins; coverage: embeddings; errors: embeddings and margins). Raises SelectionProblem
    for an unknown name."""
    if strategy not in _REQUIRED:
        raise SelectionProblem(
            f"unknown selection strategy {strategy!r}; the strategies are {', '.join(STRATEGIES)}", field="strategy"
        )
    return _REQUIRED[strategy]


def select(
    strategy: str,
    pool: Pool,
    k: int,
    *,
    rng: np.random.Generator,
    labelled: Labelled | None = None,
    random_share: float = 0.0,
    max_candidates: int = 200_000,
) -> np.ndarray:
    """Indices (int64) of min(k, pool.size) distinct candidates in pick order, the most wanted first.

    round(random_share · min(k, pool.size)) of them (halves rounded up) are uniform random draws from the candidates
    the strategy did not pick, at positions the rng chooses; the strategy's own picks keep their order in the rest.
    The same rng seed gives the same answer. Raises SelectionProblem when an input is missing or malformed."""
    _check_arguments(strategy, pool, k, random_share, max_candidates)
    pool = _pool_arrays(strategy, pool)
    known = _labelled_arrays(strategy, pool, labelled)
    count = min(k, pool.size)
    draws = math.floor(random_share * count + 0.5)
    picks = _STRATEGIES[strategy](pool, count - draws, rng, known, max(max_candidates, count))
    return _mix_random(picks, draws, pool.size, rng)


# Checks -------------------------------------------------------------------------------------------------------------


def _check_arguments(strategy: str, pool: Pool, k: int, random_share: float, max_candidates: int) -> None:
    required_inputs(strategy)
    if pool.size < 0:
        raise SelectionProblem(f"the pool size must be 0 or more, not {pool.size}", field="pool.size")
    if k < 0:
        raise SelectionProblem(f"k (how many to pick) must be 0 or more, not {k}", field="k")
    if not 0.0 <= random_share <= 1.0:  # NaN fails this too
        raise SelectionProblem(f"random_share must be between 0 and 1, not {random_share}", field="random_share")
    if max_candidates < 1:
        raise SelectionProblem(f"max_candidates must be 1 or more, not {max_candidates}", field="max_candidates")


def _pool_arrays(strategy: str, pool: Pool) -> Pool:
    """The pool with every array checked against pool.size (and the ones the strategy reads checked finite)."""
    arrays: dict[str, np.ndarray | None] = {}
    for name in ("margins", "member_margins", "features", "embeddings"):
        array, required = getattr(pool, name), name in _REQUIRED[strategy]
        if array is None and required:
            raise SelectionProblem(
                f"the {strategy} strategy needs {_DESCRIPTIONS[name]} ({name}), which the pool does not have",
                field=f"pool.{name}",
            )
        arrays[name] = None if array is None else _checked(f"pool.{name}", np.asarray(array), required)
        if array is not None and len(array) != pool.size:
            raise SelectionProblem(
                f"pool.{name} has {len(array)} rows but the pool has {pool.size} candidates", field=f"pool.{name}"
            )
    members = arrays["member_margins"]
    if members is not None and members.shape[1] < 2:
        raise SelectionProblem(
            f"pool.member_margins needs two members or more, not {members.shape[1]}", field="pool.member_margins"
        )
    return Pool(
        size=pool.size,
        margins=arrays["margins"],
        member_margins=members,
        features=arrays["features"],
        embeddings=arrays["embeddings"],
    )


def _checked(field: str, array: np.ndarray, finite: bool) -> np.ndarray:
    ndim = _NDIM[field.split(".")[1]]
    if array.ndim != ndim:
        raise SelectionProblem(f"{field} must have {ndim} dimension(s), not shape {array.shape}", field=field)
    if finite and not _all_finite(array):
        raise SelectionProblem(f"{field} has values that are NaN or infinite", field=field)
    return array


def _all_finite(array: np.ndarray) -> bool:
    return all(bool(np.isfinite(array[rows]).all()) for rows in _chunks(len(array)))


def _labelled_arrays(strategy: str, pool: Pool, labelled: Labelled | None) -> Labelled:
    """Labelled with empty arrays as None, every other array checked: one row count, the pool's widths."""
    given: dict[str, np.ndarray | None] = {}
    for spec in fields(Labelled):
        array = None if labelled is None else getattr(labelled, spec.name)
        present = array is not None and len(array) > 0
        given[spec.name] = _checked(f"labelled.{spec.name}", np.asarray(array), True) if present else None
    rows = {name: len(array) for name, array in given.items() if array is not None}
    if len(set(rows.values())) > 1:
        counts = ", ".join(f"labelled.{name} has {count}" for name, count in rows.items())
        first = next(iter(rows.values()))  # the first array given sets the count; the first to differ is named
        odd = next(name for name, count in rows.items() if count != first)
        raise SelectionProblem(f"the labelled arrays disagree on the row count: {counts}", field=f"labelled.{odd}")
    for name in ("features", "embeddings"):
        _check_width(name, getattr(pool, name), given[name])
    signs = given["signs"]
    if signs is not None and not np.isin(signs, (-1, 0, 1)).all():
        raise SelectionProblem("labelled.signs must be +1 (B preferred), -1 (A preferred) or 0", field="labelled.signs")
    known = Labelled(**given)
    _check_labelled_needs(strategy, known)
    return known


def _check_width(name: str, pooled: np.ndarray | None, known: np.ndarray | None) -> None:
    if pooled is not None and known is not None and pooled.shape[1] != known.shape[1]:
        raise SelectionProblem(
            f"labelled.{name} has {known.shape[1]} columns but pool.{name} has {pooled.shape[1]}",
            field=f"labelled.{name}",
        )


def _check_labelled_needs(strategy: str, known: Labelled) -> None:
    """Labelled arrays that only make sense together: fisher weighs labelled features by the model's margins on
    them; errors needs a labelled pair's margin, label and embedding to use it as a query."""
    needs = {"fisher": ("features", "margins"), "errors": ("margins", "signs", "embeddings")}.get(strategy, ())
    given = [name for name in needs if getattr(known, name) is not None]
    if strategy == "fisher" and given == ["margins"]:
        return  # margins without features add no information; they are simply not used
    for name in needs:
        if given and getattr(known, name) is None:
            raise SelectionProblem(
                f"the {strategy} strategy reads labelled.{given[0]} together with {_DESCRIPTIONS[name]} "
                f"(labelled.{name}), which is missing",
                field=f"labelled.{name}",
            )


# Shared pieces ------------------------------------------------------------------------------------------------------


def _chunks(n: int) -> Iterator[slice]:
    for start in range(0, n, CHUNK_ROWS):
        yield slice(start, min(start + CHUNK_ROWS, n))


def _top(scores: np.ndarray, count: int) -> np.ndarray:
    """The indices of the `count` largest scores, largest first, ties in index order; O(n) with argpartition."""
    count = min(count, len(scores))
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    threshold = np.partition(scores, len(scores) - count)[len(scores) - count]
    # Every candidate at the threshold stays in, so that ties are broken by index and not by argpartition's whim.
    contenders = np.flatnonzero(scores >= threshold)
    return contenders[np.argsort(-scores[contenders], kind="stable")][:count].astype(np.int64)


def _unit_rows(array: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """The rows (all when None) as float32 unit vectors, built a chunk at a time (no float64 copy of the whole);
    a zero row stays zero, similar to nothing."""
    count = len(array) if rows is None else len(rows)
    units = np.empty((count, array.shape[1]), dtype=np.float32)
    for part in _chunks(count):
        chunk = np.asarray(array[part] if rows is None else array[rows[part]], dtype=np.float32)
        norms = np.linalg.norm(chunk, axis=1, keepdims=True)
        np.divide(chunk, norms, out=units[part], where=norms > 0)
        units[part][norms[:, 0] == 0] = 0.0
    return units


def _mix_random(picks: np.ndarray, draws: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The strategy's picks with `draws` uniform draws from the rest of the pool put in at random positions."""
    picks = picks.astype(np.int64)
    if draws == 0:
        return picks
    rest = np.setdiff1d(np.arange(size, dtype=np.int64), picks, assume_unique=True)
    drawn = rng.choice(rest, size=draws, replace=False)
    total = len(picks) + draws
    at_random = np.zeros(total, dtype=bool)
    at_random[rng.choice(total, size=draws, replace=False)] = True
    mixed = np.empty(total, dtype=np.int64)
    mixed[at_random], mixed[~at_random] = drawn, picks
    return mixed


# Strategies: each takes (pool, count, rng, labelled, max_candidates) and returns `count` distinct indices --------


def _random(pool: Pool, count: int, rng: np.random.Generator, labelled: Labelled, max_candidates: int) -> np.ndarray:
    # A permutation's prefix, not choice(size, count): one seed then gives nested picks for every count.
    return rng.permutation(pool.size)[:count].astype(np.int64)


def _disagreement(
    pool: Pool, count: int, rng: np.random.Generator, labelled: Labelled, max_candidates: int
) -> np.ndarray:
    assert pool.member_margins is not None
    return _top(np.asarray(pool.member_margins, dtype=np.float64).std(axis=1), count)


def _uncertainty(
    pool: Pool, count: int, rng: np.random.Generator, labelled: Labelled, max_candidates: int
) -> np.ndarray:
    assert pool.margins is not None
    return _top(-np.abs(np.asarray(pool.margins, dtype=np.float64)), count)


# Fisher information (greedy D-optimal design) ------------------------------------------------------------------


def bradley_terry_weights(margins: np.ndarray) -> np.ndarray:
    """p(1 - p) for p = sigmoid(margin): the Fisher information one Bradley-Terry label carries along its pair's
    features. Written as e^-|m| / (1 + e^-|m|)², which neither overflows nor loses the tails."""
    tail = np.exp(-np.abs(np.asarray(margins, dtype=np.float64)))
    return tail / (1.0 + tail) ** 2


def _fisher(pool: Pool, count: int, rng: np.random.Generator, labelled: Labelled, max_candidates: int) -> np.ndarray:
    """Greedy D-optimal picks. Features are divided by the pool's mean row norm first, so that RIDGE means the same
    whatever the backbone's scale (and the picks do not change when every feature is multiplied by a constant).
    A pool larger than max_candidates is shortlisted to the max_candidates pairs of largest single-pair gain
    w·xᵀM₀⁻¹x (M₀ the prior with the labelled pairs): the greedy's own first choices, and an upper bound on
    what each pair can ever gain, since later picks only shrink it."""
    assert pool.features is not None
    assert pool.margins is not None
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    scale = _mean_norm(pool.features)
    weights = bradley_terry_weights(pool.margins)
    prior = fisher_prior(labelled, scale, pool.features.shape[1])
    rows = None
    if pool.size > max_candidates:
        gains = weights * _quadratic(pool.features, np.linalg.inv(prior), scale)
        rows = np.sort(_top(gains, max_candidates))
        weights = weights[rows]
    x = _scaled_rows(pool.features, rows, scale)
    picks, _ = fisher_greedy(x, weights, count, prior)
    return picks if rows is None else rows[picks]


def _mean_norm(features: np.ndarray) -> float:
    total = sum(
        float(np.linalg.norm(np.asarray(features[rows], np.float32), axis=1).sum()) for rows in _chunks(len(features))
    )
    mean = total / max(len(features), 1)
    return mean if mean > 0 else 1.0


def fisher_prior(labelled: Labelled, scale: float, dim: int) -> np.ndarray:
    """M₀ = RIDGE·I + Σ w_j x_j x_jᵀ over the labelled pairs (features divided by `scale`), float64."""
    prior = RIDGE * np.eye(dim)
    if labelled.features is None or labelled.margins is None:
        return prior
    for rows in _chunks(len(labelled.features)):
        x = np.asarray(labelled.features[rows], dtype=np.float64) / scale
        prior += (x * bradley_terry_weights(labelled.margins[rows])[:, None]).T @ x
    return prior


def _quadratic(features: np.ndarray, inverse: np.ndarray, scale: float) -> np.ndarray:
    """xᵢᵀ A xᵢ for every row divided by `scale`, a chunk at a time in float32 (one (chunk, d) product at most)."""
    matrix = inverse.astype(np.float32)
    values = np.empty(len(features), dtype=np.float64)
    for rows in _chunks(len(features)):
        x = np.asarray(features[rows], dtype=np.float32) / np.float32(scale)
        values[rows] = np.einsum("ij,ij->i", x @ matrix, x)
    return values


def _scaled_rows(features: np.ndarray, rows: np.ndarray | None, scale: float) -> np.ndarray:
    count = len(features) if rows is None else len(rows)
    scaled = np.empty((count, features.shape[1]), dtype=np.float32)
    for part in _chunks(count):
        chunk = features[part] if rows is None else features[rows[part]]
        scaled[part] = np.asarray(chunk, dtype=np.float32) / np.float32(scale)
    return scaled


def fisher_greedy(x: np.ndarray, weights: np.ndarray, count: int, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy D-optimal batch: `count` rows of x, each maximising log det(M + w x xᵀ) − log det M =
    log(1 + w·xᵀM⁻¹x), M then growing by the pick's w x xᵀ. Returns the picks and each one's gain.

    s_i = w_i·x_iᵀM⁻¹x_i is kept for every row and updated by Sherman–Morrison after a pick x* (u = M⁻¹x*,
    s_i −= w_i w* (x_iᵀu)² / (1 + w* x*ᵀu), the pick's own weight w* included): one (n, d) product per pick and
    no inverse per candidate. The pick's gain is computed afresh from the current M⁻¹, so float32 drift in s can
    reorder near-ties but never misreport a gain."""
    x = np.asarray(x, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float64)
    inverse = np.linalg.inv(prior)
    s = weights * _quadratic(x, inverse, 1.0)
    picks, gains = np.empty(count, dtype=np.int64), np.empty(count, dtype=np.float64)
    for step in range(count):
        best = int(np.argmax(s))
        u = inverse @ x[best].astype(np.float64)
        denominator = 1.0 + weights[best] * float(x[best].astype(np.float64) @ u)
        picks[step], gains[step] = best, math.log(denominator)
        projections = (x @ u.astype(np.float32)).astype(np.float64)
        s -= weights * (weights[best] / denominator) * projections**2
        inverse -= (weights[best] / denominator) * np.outer(u, u)
        s[best] = -np.inf  # stays -inf through later updates: never picked twice
    return picks, gains


# Coverage (k-center greedy) ---------------------------------------------------------------------------------------


def _coverage(pool: Pool, count: int, rng: np.random.Generator, labelled: Labelled, max_candidates: int) -> np.ndarray:
    """k-center greedy on unit embeddings. A pool larger than max_candidates is first cut to a uniform random
    sample of max_candidates (by rng): a sample covers the pool's dense regions as the whole would, and k-center
    needs every distance anew at each pick."""
    assert pool.embeddings is not None
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    rows = None
    if pool.size > max_candidates:
        rows = np.sort(rng.choice(pool.size, size=max_candidates, replace=False))
    units = _unit_rows(pool.embeddings, rows)
    centres = None if labelled.embeddings is None else _unit_rows(labelled.embeddings)
    picks = k_center_greedy(units, count, rng, centres)
    return picks if rows is None else rows[picks]


def k_center_greedy(
    units: np.ndarray, count: int, rng: np.random.Generator, centres: np.ndarray | None = None
) -> np.ndarray:
    """Each pick is the row farthest from its nearest centre (the given centres and the picks so far); with no
    centres the first pick is a random row. On unit vectors the farthest is the one of least greatest cosine,
    so each row's cosine to its nearest centre is kept and raised after each pick: O(n·e) per pick."""
    nearest = np.full(len(units), -np.inf, dtype=np.float32)
    if centres is not None:
        _raise_to_nearest(nearest, units, centres)
    picks = np.empty(count, dtype=np.int64)
    for step in range(count):
        first_at_random = step == 0 and centres is None
        best = int(rng.integers(len(units))) if first_at_random else int(np.argmin(nearest))
        picks[step] = best
        np.maximum(nearest, units @ units[best], out=nearest)
        nearest[best] = np.inf  # a pick is never the farthest again, even among exact duplicates
    return picks


def _raise_to_nearest(nearest: np.ndarray, units: np.ndarray, centres: np.ndarray) -> None:
    """Raises each row's entry in `nearest` to its greatest cosine to any of the centres, one (CHUNK_ROWS,
    CENTRE_BLOCK) product at a time (128 MiB). Plain BLAS and a max, not faiss.knn at k = 1, which took 4x as long
    for 200,000 rows against 5,000 centres on two cores."""
    for rows in _chunks(len(units)):
        for start in range(0, len(centres), CENTRE_BLOCK):
            similarities = units[rows] @ centres[start : start + CENTRE_BLOCK].T
            np.maximum(nearest[rows], similarities.max(axis=1), out=nearest[rows])


# Errors (retrieval around the model's mistakes) -------------------------------------------------------------------


def _errors(pool: Pool, count: int, rng: np.random.Generator, labelled: Labelled, max_candidates: int) -> np.ndarray:
    """The labelled pairs the model gets wrong are queries, most confidently wrong first; their nearest
    unlabelled neighbours by cosine are taken round-robin (every query's nearest, then every query's second, ...,
    up to its NEIGHBOURS_PER_ERROR-th), each candidate once. Only the worst `count` errors are queries (more could
    not each give a pick, and each query costs a pass over the pool). When the errors' neighbours do not fill the
    batch (fewer than count / NEIGHBOURS_PER_ERROR errors, shared neighbours, no errors or no labelled pairs at
    all), the rest is filled by uncertainty on pool.margins: the smallest |margin| among the candidates not taken."""
    assert pool.embeddings is not None
    assert pool.margins is not None
    queries = error_queries(labelled)[:count]
    found = np.zeros(0, dtype=np.int64)
    if len(queries) and count:
        assert labelled.embeddings is not None
        found = _round_robin(pool.embeddings, _unit_rows(labelled.embeddings, queries), count)
    return np.concatenate([found, _uncertain_except(pool.margins, count - len(found), found)])


def error_queries(labelled: Labelled) -> np.ndarray:
    """Indices of the labelled pairs whose margin's sign is not the human label's, largest |margin| first (ties in
    index order). A tie label (0) is never an error; neither is a margin of exactly 0 against a tie."""
    if labelled.margins is None or labelled.signs is None:
        return np.zeros(0, dtype=np.int64)
    margins = np.asarray(labelled.margins, dtype=np.float64)
    wrong = np.flatnonzero((labelled.signs != 0) & (np.sign(margins) != labelled.signs))
    return wrong[np.argsort(-np.abs(margins[wrong]), kind="stable")].astype(np.int64)


def _round_robin(embeddings: np.ndarray, queries: np.ndarray, count: int) -> np.ndarray:
    """Up to `count` distinct candidates in round-robin order over the queries' NEIGHBOURS_PER_ERROR nearest."""
    found = _neighbours(embeddings, queries, min(len(embeddings), NEIGHBOURS_PER_ERROR))
    ordered = found.T.ravel()  # column j holds every query's (j+1)-th neighbour: round-robin order
    ordered = ordered[ordered >= 0]
    _, first = np.unique(ordered, return_index=True)  # a neighbour shared by two queries counts at its first
    return ordered[np.sort(first)][:count].astype(np.int64)


def _neighbours(embeddings: np.ndarray, queries: np.ndarray, depth: int) -> np.ndarray:
    """Each query's `depth` nearest pool rows by cosine, nearest first (-1 where the pool has fewer): exact, by
    faiss.knn over a chunk of unit rows at a time, merged by faiss's ResultHeap, as retrieval.neighbours does."""
    import faiss  # here, not at the top: the web process reads this module's names and never searches

    heap = faiss.ResultHeap(len(queries), depth, keep_max=True)
    for rows in _chunks(len(embeddings)):
        units = _unit_rows(embeddings[rows])
        scores, positions = faiss.knn(queries, units, min(depth, len(units)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(scores, np.where(positions >= 0, positions + rows.start, -1))
    heap.finalize()
    return heap.I.astype(np.int64)


def _uncertain_except(margins: np.ndarray, count: int, taken: np.ndarray) -> np.ndarray:
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    order = _top(-np.abs(np.asarray(margins, dtype=np.float64)), count + len(taken))
    return order[~np.isin(order, taken)][:count]


_STRATEGIES: dict[str, Callable[[Pool, int, np.random.Generator, Labelled, int], np.ndarray]] = {
    "random": _random,
    "disagreement": _disagreement,
    "uncertainty": _uncertainty,
    "fisher": _fisher,
    "coverage": _coverage,
    "errors": _errors,
}
