"""Training throughput of Concord's trainer against TRL's RewardTrainer: the same backbone, the same HH-RLHF
pairs tokenised the same way (training.ml.data.encode, cut to --max-length), the same batch size and precision,
the same number of timed optimizer steps after the same warm-up, in one process. Throughput counts real tokens:
the sum of the attention mask over the chosen and rejected sequences of each timed step. Writes a section of
docs/benchmarks.md.

TRL comes from requirements-bench.txt, installed on top of the app's pins (it changes none of them):

    .venv/bin/pip install -r requirements-bench.txt
    .venv/bin/python bench/train_throughput.py [--steps 20] [--warmup 3] [--max-length 256]

With CUDA the script also builds a Qwen2-style 0.5B decoder from its config (random weights, no download), trains
it in bf16 with both trainers and reports model FLOPs utilisation against the GPU's dense bf16 peak.
"""

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.common import machine, write_section
from bench.train_quality import HH_FILE, load_hh
from training.ml.config import TrainConfig, default_backbone
from training.ml.data import EncodedPair, PairExample, encode_pairs, length_grouped_batches
from training.ml.model import load_reward_model
from training.ml.trainer import TrainProgress, train

SECTION = "Training throughput: Concord's trainer and TRL's RewardTrainer"
CONCORD = "Concord `training.ml.trainer.train`"
# Dense bf16 peak without sparsity, TFLOP/s, by a word in torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}
QWEN2_05B = {  # Qwen2-0.5B's shape
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
}


def timed_window(times: Sequence[float], tokens: Sequence[int], warmup: int, steps: int) -> dict[str, float]:
    """Throughput over steps warmup+1 .. warmup+steps; times[k] is when step k+1 ended, tokens[k] its tokens."""
    if len(times) < warmup + steps or len(tokens) < warmup + steps:
        raise RuntimeError(f"only {len(times)} steps were timed, {warmup + steps} needed")
    window = times[warmup - 1 : warmup + steps]  # the end of the last warm-up step, then each timed step's end
    seconds = window[-1] - window[0]
    real = sum(tokens[warmup : warmup + steps])
    step_times = [b - a for a, b in itertools.pairwise(window)]
    return {
        "seconds": seconds,
        "tokens": real,
        "tokens_per_s": real / seconds,
        "step_s_median": statistics.median(step_times),
    }


def run_concord(
    backbone: str, examples: Sequence[PairExample], args: argparse.Namespace, precision: str, folder: Path
) -> dict[str, float]:
    config = TrainConfig(
        backbone=backbone,
        objective="bt",
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        seed=args.seed,
        precision=precision,
        logging_every=1,
        checkpoint_every=1_000_000,
    )
    # The trainer's own batch order (first epoch), to count each step's real tokens.
    _, tokenizer = load_reward_model(backbone)
    encoded = encode_pairs(examples, tokenizer, max_length=args.max_length)
    batches = length_grouped_batches(
        [p.length for p in encoded], batch_size=args.batch_size, seed=args.seed * 1_000_003
    )
    tokens = [sum(_pair_tokens(encoded[i]) for i in batch) for batch in batches]
    times: list[float] = []
    wanted = args.warmup + args.steps

    def progress(p: TrainProgress) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter())

    train(config, examples, [], output_dir=folder, progress=progress, should_stop=lambda: len(times) >= wanted)
    return timed_window(times, tokens, args.warmup, args.steps)


def _pair_tokens(pair: EncodedPair) -> int:
    return len(pair.chosen["input_ids"]) + len(pair.rejected["input_ids"])


def run_trl(
    backbone: str, examples: Sequence[PairExample], args: argparse.Namespace, bf16: bool, folder: Path, sampling: str
) -> dict[str, float]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import RewardConfig, RewardTrainer

    torch.manual_seed(args.seed)
    model, tokenizer = load_reward_model(backbone)
    encoded = encode_pairs(examples, tokenizer, max_length=args.max_length)
    # Pre-tokenised (chosen_ids / rejected_ids): TRL then skips its own tokenisation, and since every sequence is
    # already cut to max_length its length filter drops nothing.
    dataset = Dataset.from_dict(
        {
            "chosen_ids": [p.chosen["input_ids"] for p in encoded],
            "rejected_ids": [p.rejected["input_ids"] for p in encoded],
            # What transformers' LengthGroupedSampler sorts by under `group_by_length` (its length_column_name);
            # kept by remove_unused_columns=False below, and ignored by TRL's collator.
            "length": [p.length for p in encoded],
        }
    )
    times: list[float] = []
    tokens: list[int] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter())

    class CountingRewardTrainer(RewardTrainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], *rest: Any, **kwargs: Any) -> Any:
            if model.training:
                tokens.append(int(inputs["attention_mask"].sum()))
            return super().compute_loss(model, inputs, *rest, **kwargs)

    config = RewardConfig(
        output_dir=str(folder),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        max_steps=args.warmup + args.steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.01,
        max_grad_norm=1.0,
        max_length=args.max_length,
        center_rewards_coefficient=None,
        disable_dropout=False,  # Concord trains with dropout
        gradient_checkpointing=False,  # TRL's default is on; Concord's is off
        bf16=bf16,
        fp16=False,
        use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy=sampling,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        report_to="none",
        save_strategy="no",
        logging_steps=1_000_000,
        seed=args.seed,
        data_seed=args.seed,
        disable_tqdm=True,
    )
    trainer = CountingRewardTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[Clock()]
    )
    trainer.train()
    return timed_window(times, tokens, args.warmup, args.steps)


def build_qwen2_05b(folder: Path) -> str:
    """A Qwen2-0.5B-shaped sequence classifier with random weights, saved with MiniLM's tokenizer (its ids fit in
    Qwen2's vocabulary): enough to time training, nothing to evaluate."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(default_backbone())
    config = Qwen2Config(**QWEN2_05B, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def train_flops_per_token(backbone: str, mean_length: float) -> float:
    """6 N (non-embedding parameters, forward and backward) + 12 L d T for attention scores (PaLM, appendix B)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(backbone)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embed" in n)
    params = sum(p.numel() for p in model.parameters()) - embedding
    return 6 * params + 12 * config.num_hidden_layers * config.hidden_size * mean_length


def mfu_fraction(backbone: str, run: dict[str, float], args: argparse.Namespace, peak: float) -> float:
    """Model FLOPs per second over real tokens only, as a fraction of the peak."""
    mean_length = run["tokens"] / (args.steps * 2 * args.batch_size)
    return train_flops_per_token(backbone, mean_length) * run["tokens_per_s"] / (peak * 1e12)


def peak_tflops(override: float | None) -> float | None:
    if override:
        return override
    name = torch.cuda.get_device_name()
    return next((peak for word, peak in PEAK_BF16_TFLOPS.items() if word in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared/data")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--trl-sampling",
        default="random,group_by_length",
        help="TRL train samplers to time, comma-separated: random (TRL's default) and/or group_by_length",
    )
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the table")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.warmup < 1:
        parser.error("--warmup must be at least 1: the timed window starts when a warm-up step ends")

    import trl

    examples = load_hh(args.data / HH_FILE)
    cuda = torch.cuda.is_available()
    threads = torch.get_num_threads()
    samplers = [name.strip() for name in args.trl_sampling.split(",") if name.strip()]
    backbones = [("all-MiniLM-L6-v2", default_backbone())]
    results: list[tuple[str, str, dict[str, dict[str, float]]]] = []  # (label, backbone, {trainer: figures})
    with tempfile.TemporaryDirectory() as folder:
        if cuda:
            backbones.append(("Qwen2-0.5B shape (random weights)", build_qwen2_05b(Path(folder) / "qwen2")))
        for n, (label, backbone) in enumerate(backbones):
            runs = {CONCORD: run_concord(backbone, examples, args, "bf16" if cuda else "fp32", Path(folder) / f"c{n}")}
            print(f"{label} {CONCORD}: {runs[CONCORD]}", flush=True)
            for sampling in samplers:
                name = f"TRL `RewardTrainer`, `{sampling}` sampler"
                runs[name] = run_trl(backbone, examples, args, cuda, Path(folder) / f"trl-{n}-{sampling}", sampling)
                print(f"{label} {name}: {runs[name]}", flush=True)
            results.append((label, backbone, runs))

    device = torch.cuda.get_device_name() if cuda else f"CPU only, {threads} torch threads"
    lines = [
        f"One process on {machine()} ({device}), torch {torch.__version__}, transformers "
        f"{__import__('transformers').__version__}, trl {trl.__version__}. Every trainer gets the same {len(examples)} "
        "HH-RLHF harmless-base test pairs, tokenised once by `training.ml.data.encode` (prompt turns flattened, "
        f"the pair cut to {args.max_length} tokens from the left), batch {args.batch_size} pairs (2 x "
        f"{args.batch_size} sequences per forward pass), Bradley-Terry loss, AdamW at {args.learning_rate:g}, "
        "gradient clipping at 1.0, no gradient checkpointing, dropout on, "
        f"{'bf16 autocast' if cuda else 'fp32'}; {args.warmup} warm-up steps, then {args.steps} timed optimizer "
        "steps each. Real tokens are the attention-mask sum over each step's chosen and rejected sequences "
        "(padding not counted). Concord batches pairs of similar length (its default). TRL's RewardTrainer runs "
        "with its default `random` sampler, whose batches pad to their longest sequence, and with "
        "`group_by_length`, which batches like Concord. On a small CPU the figures move with whatever else the "
        "machine runs: compare the rows of one run, not across runs.",
        "",
        "| backbone | trainer | real tokens/s | median step | timed tokens |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, _, runs in results:
        for name, run in runs.items():
            lines.append(
                f"| {label} | {name} | {run['tokens_per_s']:,.0f} | {run['step_s_median']:.2f} s | {run['tokens']:,} |"
            )
    lines.append("")
    for label, _, runs in results:
        for name, run in runs.items():
            if name != CONCORD:
                ratio = runs[CONCORD]["tokens_per_s"] / run["tokens_per_s"]
                lines.append(f"{label}: Concord / {name}, real tokens per second: **{ratio:.2f}x**.")
        lines.append("")
    if cuda:
        peak = peak_tflops(args.peak_tflops)
        for label, backbone, runs in results:
            if peak:
                mfu = ", ".join(
                    f"{name} {100 * mfu_fraction(backbone, run, args, peak):.1f}%" for name, run in runs.items()
                )
                lines.append(f"MFU of {label} against {peak:g} TFLOP/s dense bf16: {mfu}.")
    else:
        lines.append(
            "Model FLOPs utilisation (a Qwen2-0.5B-shaped decoder built from its config, bf16) is measured only "
            "where CUDA is available; this run had no GPU, so there is no MFU figure here. It needs a GPU run of "
            "the same command."
        )
    lines += [
        "",
        "    .venv/bin/pip install -r requirements-bench.txt",
        f"    .venv/bin/python bench/train_throughput.py --steps {args.steps} --warmup {args.warmup} "
        f"--batch-size {args.batch_size} --max-length {args.max_length} --trl-sampling {args.trl_sampling}",
    ]
    if not args.no_write:
        write_section(SECTION, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
