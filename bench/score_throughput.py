"""Scoring throughput of training.ml.scoring.RewardScorer (the model loaded once, both responses of every pair
tokenised up front, run longest first in batches of similar length) against a naive loop that tokenises and runs
one pair at a time, on the same HH-RLHF pairs with the same model, in one process, at each max length given.
Writes a section of docs/benchmarks.md.

    .venv/bin/python bench/score_throughput.py [--pairs 512] [--max-lengths 32,128]
"""

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from bench.common import machine, write_section
from bench.train_quality import HH_FILE, load_hh
from training.ml.config import default_backbone
from training.ml.data import Prompt, encode
from training.ml.model import load_for_inference, load_reward_model, reward_outputs, save_reward_model
from training.ml.scoring import RewardScorer

SECTION = "Scoring throughput: batched RewardScorer against one pair at a time"


@torch.inference_mode()
def naive_margins(model_dir: Path, pairs: Sequence[tuple[Prompt, str, str]], max_length: int) -> np.ndarray:
    """reward_a - reward_b of each pair, tokenising and running the pair's two sequences as one batch of 2."""
    model, tokenizer, device = load_for_inference(model_dir)
    tokenizer.padding_side = "right"
    margins = []
    for prompt, a, b in pairs:
        batch = tokenizer.pad(
            [encode(tokenizer, prompt, a, max_length), encode(tokenizer, prompt, b, max_length)],
            padding="longest",
            return_tensors="pt",
        )
        rewards = reward_outputs(model, {k: v.to(device) for k, v in batch.items()})[:, 0]
        margins.append(float(rewards[0] - rewards[1]))
    return np.array(margins)


def time_both(
    model_dir: Path, pairs: Sequence[tuple[Prompt, str, str]], batch_size: int, max_length: int, repeats: int
) -> dict[str, float]:
    """Median seconds of RewardScorer (loaded once, as a scoring job does; the load timed apart) and of the naive
    loop over the same pairs, the two taking turns `repeats` times so that a noisy neighbour hits both alike, and
    the largest difference between their margins."""
    RewardScorer(model_dir, batch_size=batch_size, max_length=max_length).score_pairs(pairs[:8])  # warm-up
    naive_margins(model_dir, pairs[:8], max_length)
    loads, batched_times, naive_times = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        scorer = RewardScorer(model_dir, batch_size=batch_size, max_length=max_length)
        loaded = time.perf_counter()
        scores = scorer.score_pairs(pairs)
        batched_end = time.perf_counter()
        naive = naive_margins(model_dir, pairs, max_length)
        naive_times.append(time.perf_counter() - batched_end)
        loads.append(loaded - start)
        batched_times.append(batched_end - loaded)
    batched = np.array([s.margin for s in scores])
    return {
        "load_s": statistics.median(loads),
        "batched_s": statistics.median(batched_times),
        "naive_s": statistics.median(naive_times),
        "difference": float(np.abs(batched - naive).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared/data")
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-lengths", default="32,128", help="comma-separated; each is timed both ways")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    max_lengths = [int(n) for n in args.max_lengths.split(",")]

    examples = load_hh(args.data / HH_FILE)[: args.pairs]
    pairs = [(e.prompt, e.chosen, e.rejected) for e in examples]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        # One reward model both ways: the default backbone with its new head, seeded, saved as scoring reads it.
        model_dir = Path(folder) / "model"
        torch.manual_seed(0)
        model, tokenizer = load_reward_model(default_backbone())
        save_reward_model(model, tokenizer, model_dir, metadata={"objective": "bt"})
        del model
        for max_length in max_lengths:
            results[max_length] = time_both(model_dir, pairs, args.batch_size, max_length, args.repeats)
            print(max_length, results[max_length], flush=True)
    threads = torch.get_num_threads()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU only, {threads} torch threads"
    lines = [
        f"The first {len(pairs)} pairs of HH-RLHF harmless-base `test.jsonl.gz` (prompt + chosen, prompt + "
        f"rejected: {2 * len(pairs)} sequences, cut to the max length) scored by the default backbone "
        f"(all-MiniLM-L6-v2 with a seeded one-output head, saved once and loaded by both), on {machine()} "
        f"({device}), fp32, in one process, after a warm-up of 8 pairs each; the two take turns {args.repeats} "
        "times and each figure is the median. `RewardScorer` is what a scoring job "
        "uses: the model loaded once per job (its load is timed apart), every sequence tokenised up front and run "
        f"longest first in batches of {args.batch_size}. The naive loop tokenises one pair and runs its two "
        "sequences as one forward pass. On a small CPU the figures move with whatever else the machine runs: "
        "compare the rows of one run, not across runs.",
        "",
        "| max length | RewardScorer pairs/s | one pair at a time, pairs/s | ratio | model load "
        "| largest margin difference |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for max_length, r in results.items():
        lines.append(
            f"| {max_length} | {len(pairs) / r['batched_s']:.1f} | {len(pairs) / r['naive_s']:.1f} "
            f"| **{r['naive_s'] / r['batched_s']:.2f}x** | {r['load_s']:.2f} s | {r['difference']:.1e} |"
        )
    lines += [
        "",
        "Both give the same margins: padding changes float rounding only. On a CPU both spend most of their time "
        "in the same matrix multiplications (a two-core machine is busy even with 2 sequences at a time), so "
        "batching saves only per-call overhead; a GPU, which one pair at a time leaves mostly idle, is where "
        "batching pays most.",
        "",
        f"    .venv/bin/python bench/score_throughput.py --pairs {args.pairs} --batch-size {args.batch_size} "
        f"--max-lengths {args.max_lengths} --repeats {args.repeats}",
    ]
    body = "\n".join(lines)
    if not args.no_write:
        write_section(SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
