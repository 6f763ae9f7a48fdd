"""Scoring throughput of training.ml.scoring.score_pairs (both responses of every pair tokenised up front, run
longest first in batches of 64 of similar length) against a naive loop that tokenises and runs one pair at a
time, on the same HH-RLHF pairs with the same model, in one process. Writes a section of docs/benchmarks.md.

    .venv/bin/python bench/score_throughput.py [--pairs 512] [--max-length 256]
"""

import argparse
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
from training.ml.scoring import score_pairs

SECTION = "Scoring throughput: batched score_pairs against one pair at a time"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared/data")
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    examples = load_hh(args.data / HH_FILE)[: args.pairs]
    pairs = [(e.prompt, e.chosen, e.rejected) for e in examples]
    with tempfile.TemporaryDirectory() as folder:
        # One reward model both ways: the default backbone with its new head, seeded, saved as score_pairs reads it.
        model_dir = Path(folder) / "model"
        torch.manual_seed(0)
        model, tokenizer = load_reward_model(default_backbone())
        save_reward_model(model, tokenizer, model_dir, metadata={"objective": "bt"})
        del model
        score_pairs(model_dir, pairs[:8], batch_size=args.batch_size, max_length=args.max_length)  # warm-up
        naive_margins(model_dir, pairs[:8], args.max_length)

        start = time.perf_counter()
        scores = score_pairs(model_dir, pairs, batch_size=args.batch_size, max_length=args.max_length)
        batched_s = time.perf_counter() - start
        start = time.perf_counter()
        naive = naive_margins(model_dir, pairs, args.max_length)
        naive_s = time.perf_counter() - start
    batched = np.array([s.margin for s in scores])
    difference = float(np.abs(batched - naive).max())
    print(f"batched {batched_s:.2f} s, naive {naive_s:.2f} s, max |margin difference| {difference:.2e}")
    threads = torch.get_num_threads()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU only, {threads} torch threads"
    body = "\n".join(
        [
            f"The first {len(pairs)} pairs of HH-RLHF harmless-base `test.jsonl.gz` (prompt + chosen, prompt + "
            f"rejected: {2 * len(pairs)} sequences, cut to {args.max_length} tokens) scored by the default backbone "
            f"(all-MiniLM-L6-v2 with a seeded one-output head, saved once and loaded by both), on {machine()} "
            f"({device}), fp32, in one process, after a warm-up of 8 pairs each. The batched time includes "
            "`score_pairs` loading the model; the naive loop's does not. On a small CPU the figures move with "
            "whatever else the machine runs: compare the rows of one run, not across runs.",
            "",
            "| scorer | seconds | pairs/s |",
            "| --- | --- | --- |",
            f"| `training.ml.scoring.score_pairs` (tokenise all, longest first, batches of {args.batch_size}) "
            f"| {batched_s:.1f} | {len(pairs) / batched_s:.1f} |",
            f"| one pair at a time (tokenise the pair, one forward pass of 2 sequences) "
            f"| {naive_s:.1f} | {len(pairs) / naive_s:.1f} |",
            "",
            f"Batched / naive pairs per second: {naive_s / batched_s:.2f}x. Both give the same margins "
            f"(largest difference {difference:.1e}: padding changes float rounding only).",
            "",
            f"    .venv/bin/python bench/score_throughput.py --pairs {args.pairs} --batch-size {args.batch_size} "
            f"--max-length {args.max_length}",
        ]
    )
    if not args.no_write:
        write_section(SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
