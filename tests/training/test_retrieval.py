"""Error-driven retrieval: pairs embedded as sentence-transformers would embed them, and exact nearest neighbours
among the allowed items only, checked against brute force."""

from pathlib import Path

import faiss
import numpy as np
import pytest

from tests.training.test_ml_model import with_own_code
from training.ml import retrieval
from training.ml.config import default_backbone
from training.ml.model import UnsafeCheckpointError, load_reward_model, save_reward_model
from training.ml.retrieval import PairEncoder, PairIndex, neighbours, pair_text, retrieve

TEXTS = [
    "user: what is the answer ?",
    "user: explain why python code is good",
    "the first response was helpful because it explain the code",
    "no",
    "sorry , I cannot",
    "thanks ! the second answer is bad",
]


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def random_units(count: int, dim: int, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((count, dim)))


def brute_force(
    vectors: np.ndarray, ids: np.ndarray, query: int, k: int, allowed: np.ndarray | None = None
) -> np.ndarray:
    """The k ids most similar to `query` among `allowed` (all if None), the query left out, by numpy."""
    candidates = np.isin(ids, allowed) if allowed is not None else np.ones(len(ids), dtype=bool)
    candidates &= ids != query
    scores = vectors[candidates] @ vectors[ids == query][0]
    return ids[candidates][np.argsort(-scores, kind="stable")][:k]


def index_of(vectors: np.ndarray, ids: np.ndarray, *, fp16: bool = False) -> PairIndex:
    index = PairIndex.new(vectors.shape[1], fp16=fp16)
    index.add(ids, vectors)
    return index


# pair_text


def test_pair_text_reads_the_context_the_prompt_and_both_labelled_responses() -> None:
    text = pair_text("How do I sort?", "Python docs", "Use sorted.", "I cannot help.")
    assert text == (
        "system: Python docs\nuser: How do I sort?\n\nResponse A: Use sorted.\n\nResponse B: I cannot help."
    )
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert pair_text(turns, "", "a", "b").startswith("user: hi\nassistant: hello\n\n")


def test_a_long_prompt_keeps_its_last_turn_and_leaves_room_for_the_responses() -> None:
    turns = [{"role": "user", "content": "old " * 1000}, {"role": "user", "content": "the real question"}]
    text = pair_text(turns, "x" * 5000, "A" * 1000, "B" * 1000, prompt_chars=100, response_chars=20)
    prompt, a, b = text.split("\n\n")
    assert prompt.startswith("…")
    assert prompt.endswith("user: the real question")
    assert len(prompt) == 101
    assert (a, b) == ("Response A: " + "A" * 20, "Response B: " + "B" * 20)


# PairEncoder


def test_the_encoder_gives_one_unit_vector_per_text(tiny_backbone: Path) -> None:
    vectors = PairEncoder(tiny_backbone).encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 32)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # Different texts, different vectors: the pooling reads the tokens.
    assert np.abs(vectors[0] - vectors[3]).max() > 1e-3
    assert PairEncoder(tiny_backbone).encode([]).shape == (0, 32)


def test_a_text_gets_the_same_vector_whatever_its_batch_and_position(tiny_backbone: Path) -> None:
    encoder = PairEncoder(tiny_backbone, batch_size=2)
    together = encoder.encode(TEXTS)
    order = [4, 1, 5, 0, 3, 2]
    shuffled = encoder.encode([TEXTS[i] for i in order])
    np.testing.assert_allclose(shuffled, together[order], atol=1e-5)
    # Alone, without the padding a longer neighbour in its batch gave it: the mean reads real tokens only.
    np.testing.assert_allclose(encoder.encode([TEXTS[3]])[0], together[3], atol=1e-5)
    np.testing.assert_allclose(encoder.encode([TEXTS[3], TEXTS[3]]), together[[3, 3]], atol=1e-5)


def test_the_encoder_truncates_to_max_length(tiny_backbone: Path) -> None:
    long = "good " * 100
    encoder = PairEncoder(tiny_backbone, max_length=16)
    # Past the 16th token the words are all "good": a longer text of them reads as the same 16 tokens.
    np.testing.assert_allclose(encoder.encode([long])[0], encoder.encode([long + "bad"])[0], atol=1e-6)


def test_a_reward_model_and_an_ensemble_encode_with_their_backbone(tiny_backbone: Path, tmp_path: Path) -> None:
    model, tokenizer = load_reward_model(tiny_backbone)
    save_reward_model(model, tokenizer, tmp_path / "single")
    save_reward_model(model, tokenizer, tmp_path / "ensemble" / "member-0")
    expected = PairEncoder(tiny_backbone).encode(TEXTS)
    # The reward model's head is left off; its backbone is the tiny BERT's, unchanged by the head.
    np.testing.assert_allclose(PairEncoder(tmp_path / "single").encode(TEXTS), expected, atol=1e-5)
    np.testing.assert_allclose(PairEncoder(tmp_path / "ensemble").encode(TEXTS), expected, atol=1e-5)


def test_the_encoder_refuses_pickle_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UnsafeCheckpointError):
        PairEncoder(tmp_path)


def test_the_encoder_refuses_a_checkpoint_that_names_code_of_its_own(tiny_backbone: Path, tmp_path: Path) -> None:
    planted = with_own_code(tiny_backbone, tmp_path / "planted", "config.json")
    with pytest.raises(UnsafeCheckpointError, match="auto_map"):
        PairEncoder(planted)
    assert not (planted / "ran").exists()


def test_the_default_backbone_embeds_as_sentence_transformers_does() -> None:
    from sentence_transformers import SentenceTransformer

    texts = [pair_text("How do I sort a list in Python?", "", "Use sorted(xs).", "I cannot help."), "hello"]
    ours = PairEncoder(default_backbone()).encode(texts)
    reference = SentenceTransformer(default_backbone(), device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.shape == (2, 384)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


# PairIndex


def test_neighbours_are_the_brute_force_ones_among_the_allowed_ids() -> None:
    vectors, ids = random_units(600, 16), np.arange(1000, 1600, dtype=np.int64)
    index = index_of(vectors, ids)
    rng = np.random.default_rng(1)
    allowed = rng.choice(ids, 200, replace=False)
    # Some queries are themselves allowed (and must not find themselves), some are not.
    queries = np.concatenate([allowed[:5], ids[~np.isin(ids, allowed)][:5]])
    ks = np.array([1, 3, 8, 0, 20, 5, 8, 2, 0, 13])
    found = neighbours(index, queries, ks, allowed)
    assert set(found) == set(queries.tolist())
    for query, k in zip(queries.tolist(), ks.tolist(), strict=True):
        assert found[query].dtype == np.int64
        np.testing.assert_array_equal(found[query], brute_force(vectors, ids, query, k, allowed))
        assert query not in found[query]
        assert np.isin(found[query], allowed).all()
    assert len(found[int(queries[4])]) == 20  # k=20 found 20, none of them the query


def test_unrestricted_neighbours_match_brute_force_and_k_past_the_allowed_gives_them_all() -> None:
    vectors, ids = random_units(300, 8, seed=2), np.arange(300, dtype=np.int64) * 7
    index = index_of(vectors, ids)
    found = neighbours(index, ids[:50], np.full(50, 10), ids)
    for query in ids[:50].tolist():
        np.testing.assert_array_equal(found[query], brute_force(vectors, ids, query, 10))
    # Three allowed, one of them the query: two come back, nearest first, however large k is.
    few = neighbours(index, ids[:1], np.array([50]), ids[:3])[int(ids[0])]
    np.testing.assert_array_equal(few, brute_force(vectors, ids, int(ids[0]), 50, ids[:3]))
    assert len(few) == 2
    # Allowed ids the index does not hold are never found; nothing allowed, nothing found.
    assert neighbours(index, ids[:1], np.array([5]), np.array([-5, 10**9]))[0].size == 0
    assert neighbours(index, ids[:1], np.array([5]), np.array([], dtype=np.int64))[0].size == 0


def test_neighbours_merged_across_slices_of_the_allowed_ids_are_the_brute_force_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The allowed vectors are searched a slice at a time: slices of 7, some of them shorter than k + 1."""
    monkeypatch.setattr(retrieval, "GATHER_ROWS", 7)
    vectors, ids = random_units(300, 8, seed=9), np.arange(300, dtype=np.int64) + 50
    index = index_of(vectors, ids)
    allowed = np.concatenate([ids[::3], ids[:9]])  # unsorted, some ids twice
    queries = ids[:12]
    found = neighbours(index, queries, np.full(12, 10), allowed)
    for query in queries.tolist():
        np.testing.assert_array_equal(found[query], brute_force(vectors, ids, query, 10, allowed))


def test_neighbours_refuse_unknown_queries_and_mismatched_ks() -> None:
    index = index_of(random_units(10, 4), np.arange(10))
    with pytest.raises(KeyError):
        neighbours(index, np.array([99]), np.array([1]), np.arange(10))
    with pytest.raises(ValueError, match="values of k"):
        neighbours(index, np.array([1, 2]), np.array([1]), np.arange(10))


def test_adding_an_id_again_replaces_its_vector() -> None:
    vectors = random_units(4, 8, seed=3)
    index = index_of(vectors[:3], np.array([10, 20, 30]))
    index.add(np.array([20, 40]), vectors[[3, 0]])
    assert len(index) == 4
    assert sorted(index.ids().tolist()) == [10, 20, 30, 40]
    np.testing.assert_allclose(index.vectors(np.array([20, 40, 10])), vectors[[3, 0, 0]], atol=1e-6)
    # 40 is now the vector of 10: each other's nearest neighbour.
    assert neighbours(index, np.array([10]), np.array([1]), index.ids())[10].tolist() == [40]
    # An id given twice in one call: the last vector wins, stored once.
    index.add(np.array([50, 50]), vectors[[1, 2]])
    assert len(index) == 5
    np.testing.assert_allclose(index.vectors(np.array([50])), vectors[[2]], atol=1e-6)


def test_add_checks_the_shape_of_the_vectors() -> None:
    index = PairIndex.new(8)
    with pytest.raises(ValueError, match="shape"):
        index.add(np.array([1, 2]), random_units(2, 4))


def test_missing_lists_the_ids_still_to_embed_in_their_order() -> None:
    index = index_of(random_units(3, 4), np.array([5, 6, 7]))
    assert index.missing(np.array([9, 6, 1, 5, 8])).tolist() == [9, 1, 8]
    assert index.missing(np.array([5, 7])).size == 0
    with pytest.raises(KeyError, match="9"):
        index.vectors(np.array([5, 9]))


def test_an_index_saved_and_loaded_is_the_same(tmp_path: Path) -> None:
    vectors, ids = random_units(200, 16, seed=4), np.arange(200, dtype=np.int64) + 10**12
    index = index_of(vectors, ids, fp16=True)
    path = tmp_path / "indexes" / "pairs.faiss"
    index.save(path)
    index.save(path)  # over an existing file
    assert [p.name for p in path.parent.iterdir()] == ["pairs.faiss"]  # no temporary file left behind
    loaded = PairIndex.load(path)
    assert (len(loaded), loaded.dim) == (200, 16)
    np.testing.assert_array_equal(loaded.ids(), ids)
    np.testing.assert_array_equal(loaded.vectors(ids[:20]), index.vectors(ids[:20]))
    queries, ks = ids[:10], np.full(10, 5)
    before, after = neighbours(index, queries, ks, ids[::2]), neighbours(loaded, queries, ks, ids[::2])
    assert all(np.array_equal(before[q], after[q]) for q in before)
    # Still a PairIndex after loading: it takes new ids and replaces old ones.
    loaded.add(ids[:1], vectors[1:2])
    assert len(loaded) == 200


def test_loading_refuses_an_index_without_ids(tmp_path: Path) -> None:
    faiss.write_index(faiss.IndexFlatIP(4), str(tmp_path / "plain.faiss"))
    with pytest.raises(ValueError, match="IndexIDMap2"):
        PairIndex.load(tmp_path / "plain.faiss")


def test_float16_storage_halves_the_index_and_keeps_well_separated_neighbours(tmp_path: Path) -> None:
    """20 queries, each with 8 planted neighbours at cosine 0.95, 0.9, .. 0.6 among 2,000 random vectors (whose
    cosines with a query stay under about 0.5 at 64 dimensions): both indexes find them, in order."""
    rng = np.random.default_rng(5)
    dim, queries = 64, random_units(20, 64, seed=6)
    planted = []
    for query in queries:
        for cosine in np.linspace(0.95, 0.6, 8):
            other = rng.standard_normal(dim)
            other -= (other @ query) * query
            planted.append(cosine * query + np.sqrt(1 - cosine**2) * other / np.linalg.norm(other))
    vectors = np.concatenate([queries, unit(np.array(planted)), random_units(2000, dim, seed=7)])
    ids = np.arange(len(vectors), dtype=np.int64)
    exact, half = index_of(vectors, ids), index_of(vectors, ids, fp16=True)
    query_ids, ks = ids[:20], np.full(20, 8)
    found_exact, found_half = neighbours(exact, query_ids, ks, ids), neighbours(half, query_ids, ks, ids)
    for q in range(20):
        expected = 20 + 8 * q + np.arange(8)
        np.testing.assert_array_equal(found_exact[q], expected)
        np.testing.assert_array_equal(found_half[q], expected)
    # Stored similarities are within 1e-3 of float32's.
    assert np.abs(half.vectors(ids) @ queries[0] - vectors @ queries[0]).max() < 1e-3
    exact.save(tmp_path / "fp32.faiss")
    half.save(tmp_path / "fp16.faiss")
    assert (tmp_path / "fp16.faiss").stat().st_size < 0.6 * (tmp_path / "fp32.faiss").stat().st_size


# retrieve


def test_retrieve_pulls_the_worst_queries_neighbours_first_each_once_within_the_budget() -> None:
    vectors, ids = random_units(400, 8, seed=8), np.arange(400, dtype=np.int64)
    index = index_of(vectors, ids)
    queries, allowed = ids[:6], ids[100:]
    ks = np.array([5, 5, 5, 5, 5, 5])
    found = neighbours(index, queries, ks, allowed)
    expected: list[tuple[int, int]] = []
    for query in queries.tolist():
        expected += [(item, query) for item in found[query].tolist() if item not in {i for i, _ in expected}]
    everything = retrieve(index, queries, ks, allowed, budget=1000)
    assert everything == expected
    assert len({item for item, _ in everything}) == len(everything)
    assert retrieve(index, queries, ks, allowed, budget=7) == expected[:7]
    assert retrieve(index, queries, ks, allowed, budget=0) == []


def test_a_neighbour_shared_by_two_queries_is_pulled_once_for_the_worse() -> None:
    # Two queries side by side and three candidates: the worse query (first) takes the shared nearest ones.
    vectors = unit(np.array([[1.0, 0.0], [1.0, 0.05], [1.0, 0.02], [1.0, 0.03], [0.0, 1.0]]))
    index = index_of(vectors, np.array([1, 2, 10, 11, 12]))
    pulled = retrieve(index, np.array([2, 1]), np.array([2, 2]), np.array([10, 11, 12]), budget=10)
    assert pulled == [(11, 2), (10, 2)]
    pulled = retrieve(index, np.array([2, 1]), np.array([2, 3]), np.array([10, 11, 12]), budget=10)
    assert pulled == [(11, 2), (10, 2), (12, 1)]
