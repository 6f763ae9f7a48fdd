"""Error-driven retrieval (training.ml.retrieval) at a big project's scale: embedding pairs with the default
backbone, and nearest neighbours among the allowed items in a million-pair index, against brute force in numpy.

1. The first N pairs of HH-RLHF harmless-base `test.jsonl.gz` as pair_text (prompt, chosen as A, rejected as B),
   embedded by PairEncoder with the packaged all-MiniLM-L6-v2 at max length 256 (the model loaded and warmed up
   first, timed apart). Their neighbours in a float16 index against a float32 one: what float16 storage changes
   on real embeddings.
2. A million random 384-wide unit vectors in a PairIndex (float16): time to add, memory, time to save and load;
   then the 8 nearest neighbours of 1,000 queries among 100,000 allowed ids (disjoint from the queries, as
   labelled queries and unlabelled candidates are), three ways on the same queries: neighbours() (the allowed
   vectors read back out of the index a slice at a time, each slice searched by faiss.knn), a search of the
   index restricted by faiss itself (SearchParameters with an IDSelectorBatch), and numpy brute force on the
   original float32 vectors (one matrix product, argpartition), against which the other two are checked. Then
   neighbours() with every item but the queries allowed, as when most of a project is unlabelled. Random vectors
   are the hard case for float16: their nearest neighbours are all about equally near.

    .venv/bin/python bench/retrieval.py [--pairs 2000] [--vectors 1000000] [--allowed 100000] [--queries 1000]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faiss
import numpy as np
import torch

from bench.common import machine, timed, write_section
from bench.train_quality import HH_FILE, load_hh
from training.ml.config import default_backbone
from training.ml.retrieval import GATHER_ROWS, PairEncoder, PairIndex, neighbours, pair_text

SECTION = "Retrieval"
K = 8
DIM = 384


def rss_bytes() -> int:
    """Resident memory of this process now (not its peak): what an index holds once built."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def same_lists(found: dict[int, np.ndarray], truth: dict[int, np.ndarray]) -> tuple[float, float]:
    """The share of queries whose neighbour lists are identical (same ids, same order), and the mean share of the
    true neighbours found (recall@k)."""
    identical = np.mean([np.array_equal(found[q], truth[q]) for q in truth])
    recall = np.mean([len(np.intersect1d(found[q], truth[q])) / max(1, len(truth[q])) for q in truth])
    return float(identical), float(recall)


def encoding(data: Path, pairs: int, max_length: int) -> dict[str, float]:
    examples = load_hh(data / HH_FILE)[:pairs]
    texts = [pair_text(e.prompt, "", e.chosen, e.rejected) for e in examples]
    start = time.perf_counter()
    encoder = PairEncoder(default_backbone(), max_length=max_length)
    load = time.perf_counter() - start
    encoder.encode(texts[:16])  # warm-up
    start = time.perf_counter()
    vectors = encoder.encode(texts)
    seconds = time.perf_counter() - start
    lengths = [len(ids) for ids in encoder.tokenizer(texts, truncation=False)["input_ids"]]
    # float16 against float32 storage on these real embeddings: each pair's 8 nearest among all the others.
    ids = np.arange(len(texts), dtype=np.int64)
    found = {}
    for fp16 in (True, False):
        index = PairIndex.new(encoder.dim, fp16=fp16)
        index.add(ids, vectors)
        found[fp16] = neighbours(index, ids, np.full(len(ids), K), ids)
    identical, recall = same_lists(found[True], found[False])
    return {
        "pairs": len(texts),
        "load_s": load,
        "encode_s": seconds,
        "cut": float(np.mean([n > max_length for n in lengths])),
        "median_tokens": float(np.median(lengths)),
        "fp16_identical": identical,
        "fp16_recall": recall,
    }


def brute_force(vectors: np.ndarray, queries: np.ndarray, allowed: np.ndarray, k: int) -> dict[int, np.ndarray]:
    """Exact float32 neighbours by numpy: the allowed vectors gathered, one product, the top k partitioned out and
    sorted. (The queries are not allowed, so none has to be left out of its own list.)"""
    candidates = vectors[allowed]
    scores = vectors[queries] @ candidates.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    rows = allowed[np.take_along_axis(top, order, axis=1)]
    return {int(q): row for q, row in zip(queries, rows, strict=True)}


def selector_search(index: PairIndex, queries: np.ndarray, allowed: np.ndarray, k: int) -> dict[int, np.ndarray]:
    """The other way to restrict a faiss search: the whole index searched, faiss skipping the ids that an
    IDSelectorBatch (a hash set) does not hold. (The queries are not allowed: nothing to leave out.)"""
    selector = faiss.IDSelectorBatch(allowed)
    params = faiss.SearchParameters()
    params.sel = selector
    _, rows = index.index.search(index.vectors(queries), k, params=params)
    return {int(q): row for q, row in zip(queries, rows, strict=True)}


def big_index(count: int, allowed_count: int, query_count: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(count, dtype=np.int64)
    before = rss_bytes()
    index = PairIndex.new(DIM)
    add = timed(lambda: index.add(ids, vectors))
    memory = rss_bytes() - before
    codes = len(index) * index.index.sa_code_size()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pairs.faiss"
        save = timed(lambda: index.save(path))
        size = path.stat().st_size
        load = timed(lambda: PairIndex.load(path))
    shuffled = rng.permutation(ids)
    allowed, queries = np.sort(shuffled[:allowed_count]), shuffled[allowed_count : allowed_count + query_count]
    ks = np.full(len(queries), K)
    results: dict[str, dict[int, np.ndarray]] = {}
    times = {}
    for name, run in (
        ("numpy", lambda: brute_force(vectors, queries, allowed, K)),
        ("neighbours", lambda: neighbours(index, queries, ks, allowed)),
        ("selector", lambda: selector_search(index, queries, allowed, K)),
        ("everything", lambda: neighbours(index, queries, ks, np.sort(shuffled[: count - query_count]))),
    ):
        start = time.perf_counter()
        results[name] = run()
        times[name] = time.perf_counter() - start
        print(f"  {name}: {times[name]:.1f} s", flush=True)
    selector_identical, selector_recall = same_lists(results["selector"], results["numpy"])
    identical, recall = same_lists(results["neighbours"], results["numpy"])
    return {
        "add_s": add,
        "memory": memory,
        "codes": codes,
        "save_s": save,
        "load_s": load,
        "file": size,
        **{f"{name}_s": seconds for name, seconds in times.items()},
        "selector_identical": selector_identical,
        "selector_recall": selector_recall,
        "identical": identical,
        "recall": recall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared/data")
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--allowed", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()

    # The index first, in a fresh heap: memory the encoder freed and the allocator kept would hide its growth.
    b = big_index(args.vectors, args.allowed, args.queries, args.seed)
    print(b, flush=True)
    e = encoding(args.data, args.pairs, args.max_length)
    print(e, flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU only, {torch.get_num_threads()} "
    device += "torch threads" if not torch.cuda.is_available() else ""
    mb = 1024 * 1024
    lines = [
        f"On {machine()} ({device}; faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads), shared with "
        "other work: compare the rows of one run, not across runs.",
        "",
        f"**Embedding pairs.** The first {e['pairs']:,} pairs of HH-RLHF harmless-base `test.jsonl.gz` as "
        f"`pair_text` (prompt, then the chosen and rejected responses as A and B), embedded by `PairEncoder` with "
        f"the packaged all-MiniLM-L6-v2 at max length {args.max_length}, batches of 64 longest first, fp32: "
        f"**{e['encode_s']:.1f} s, {e['pairs'] / e['encode_s']:.1f} pairs/s** (model load {e['load_s']:.2f} s, "
        f"timed apart, after a warm-up of 16). Median {e['median_tokens']:.0f} tokens a pair; "
        f"{100 * e['cut']:.0f}% are cut at {args.max_length}. Each pair's {K} nearest among the others in a "
        f"float16 index against a float32 one: {100 * e['fp16_identical']:.1f}% of the lists identical, "
        f"recall@{K} {100 * e['fp16_recall']:.2f}%.",
        "",
        f"**A {args.vectors:,} x {DIM} index** of random unit vectors (`PairIndex`, float16, exhaustive):",
        "",
        "| | |",
        "| --- | --- |",
        f"| add | {b['add_s']:.1f} s |",
        f"| memory (resident, after adding) | {b['memory'] / mb:,.0f} MiB: {b['codes'] / mb:,.0f} MiB of float16 "
        f"vectors (float32 would take {args.vectors * DIM * 4 / mb:,.0f} MiB), the rest faiss's id maps |",
        f"| save / load ({b['file'] / mb:,.0f} MiB file) | {b['save_s']:.1f} s / {b['load_s']:.1f} s |",
        "",
        f"{K} nearest neighbours of {args.queries:,} queries among {args.allowed:,} allowed ids (the queries not "
        "among them), the same queries three ways:",
        "",
        f"| search | time | lists identical to numpy's | recall@{K} |",
        "| --- | --- | --- | --- |",
        f"| `neighbours()`: the allowed vectors read back out of the index, {GATHER_ROWS:,} at a time, each "
        f"slice searched by `faiss.knn` | **{b['neighbours_s']:.1f} s** | {100 * b['identical']:.1f}% | "
        f"{100 * b['recall']:.2f}% |",
        f"| the index searched by faiss restricted by an IDSelectorBatch (`SearchParameters.sel`) | "
        f"{b['selector_s']:.1f} s | {100 * b['selector_identical']:.1f}% | {100 * b['selector_recall']:.2f}% |",
        f"| numpy brute force, float32 (gather, one product, argpartition) | {b['numpy_s']:.1f} s | (reference) | |",
        "",
        f"With every item but the queries allowed ({args.vectors - args.queries:,}), as when most of a project is "
        f"unlabelled, `neighbours()` takes {b['everything_s']:.1f} s.",
        "",
        "Lists that differ from numpy's differ by the order of near-ties: float16 storage moves similarities by "
        "about 1e-4, and random vectors' nearest neighbours are about equally near. A selector makes faiss test "
        "each of the million stored ids for every query and decode each allowed float16 vector again for every "
        "query; read back out of the index, the allowed vectors are decoded once. numpy is faster still: one "
        "blocked matrix product, where `faiss.knn` compares the vectors pair by pair below 128,000 queries (its "
        "BLAS path, forced, was no faster here).",
        "",
        f"    .venv/bin/python bench/retrieval.py --pairs {args.pairs} --vectors {args.vectors} "
        f"--allowed {args.allowed} --queries {args.queries}",
    ]
    body = "\n".join(lines)
    if not args.no_write:
        write_section(SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
