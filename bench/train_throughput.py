"""Training throughput of Concord's trainer against TRL's RewardTrainer, interleaved step by step: each trainer runs
its own training loop, unchanged, in a greenlet of one thread, and hands control back after every optimizer step
(Concord through its progress callback, TRL through a TrainerCallback's on_step_end), so a scheduler runs one step
of each in turn, rotating the order every round, and every timed step of one trainer sits next to a timed step of
the other under the same load. Same backbone, the same HH-RLHF pairs tokenised the same way
(training.ml.data.encode, cut to --max-length), the same batch size and precision. Throughput counts real tokens:
the attention-mask sum over the chosen and rejected sequences of a step, divided by that step's time; each figure
is the median over the timed rounds, with its spread. Writes a section of docs/benchmarks.md and
docs/img/train_throughput.svg.

TRL comes from requirements-bench.txt, installed on top of the app's pins (it changes none of them):

    .venv/bin/pip install -r requirements-bench.txt
    .venv/bin/python bench/train_throughput.py [--rounds 20] [--warmup 2] [--max-length 256]

Each trainer runs at its defaults where they agree: no dropout (Concord's `dropout` setting, TRL's
`disable_dropout`), and the precision Concord's `auto` picks (bf16 autocast where the device computes bf16: a GPU,
a CPU with AMX or AVX512-BF16; TRL defaults to bf16), which TRL is given too. --dropout keeps the backbone's dropout
in every trainer; --precision fp32 (or bf16) sets both. A last Concord row runs the trainer with its defaults
before they changed (dropout on, fp32 on the CPU), for what the change gives. With CUDA the script also builds a
Qwen2-style 0.5B decoder from its config (random weights, no download), trains it in bf16 with both trainers and
reports model FLOPs utilisation against the GPU's dense bf16 peak.
"""

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import greenlet
import torch
from transformers import AutoTokenizer

from bench.common import ROOT, machine, write_section
from bench.train_quality import HH_FILE, load_hh
from training.ml.config import TrainConfig, default_backbone
from training.ml.data import EncodedPair, PairExample, encode_pairs, length_grouped_batches
from training.ml.model import load_reward_model
from training.ml.trainer import TrainProgress, resolve_precision, train

SECTION = "Training throughput: Concord's trainer and TRL's RewardTrainer"
SVG = ROOT / "docs" / "img" / "train_throughput.svg"
CONCORD = "Concord `training.ml.trainer.train`"
CONCORD_BEFORE = "Concord, dropout on, fp32 on the CPU (its defaults before)"
TRL_SAME = "TRL `RewardTrainer`, Concord's batches"
RANDOM = "TRL `RewardTrainer`, `random` sampler"
GROUPED = "TRL `RewardTrainer`, `group_by_length` sampler"
NO_MFU = (
    "Model FLOPs utilisation (a Qwen2-0.5B-shaped decoder built from its config, bf16) is measured only where CUDA "
    "is available; this run had no GPU, so there is no MFU figure here. It needs a GPU run of the same command."
)
GOAL = 1.5  # issue 15: Concord at least 1.5x TRL's group_by_length in real tokens per second
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

# Process-wide torch settings a trainer may change for itself: deterministic algorithms, their warn-only flag, and
# whether deterministic mode fills every new tensor with NaN. Saved and restored at each hand-over, so each trainer
# runs under its own.
TorchGlobals = tuple[bool, bool, bool]


def torch_globals() -> TorchGlobals:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,  # type: ignore[attr-defined]
    )


def set_torch_globals(state: TorchGlobals) -> None:
    torch.use_deterministic_algorithms(state[0], warn_only=state[1])
    torch.utils.deterministic.fill_uninitialized_memory = state[2]  # type: ignore[attr-defined]


@dataclass
class Arm:
    """One trainer: `body` runs its whole training loop, and its per-step hook calls step_done(). tokens[k] and
    padded[k] are step k's real and padded tokens, seconds[k] the time of the slice that ran step k."""

    name: str
    body: Callable[["Arm"], None]
    state: TorchGlobals
    tokens: list[int] = field(default_factory=list)
    padded: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    stopping: bool = False
    runner: Any = None
    seen: dict[str, Any] = field(default_factory=dict)  # what the trainer ran under, noted from inside it


def step_done() -> None:
    """A trainer's per-step hook: hand control back to the scheduler until the trainer's next turn."""
    greenlet.getcurrent().parent.switch()


def interleave(arms: list[Arm], rounds: int, sync: Callable[[], None]) -> None:
    """Run `rounds` steps of every trainer, one step each in turn, starting each round with the next trainer, then
    let each finish (untimed): Concord stops when asked, TRL has reached max_steps."""
    base = torch_globals()
    for arm in arms:
        arm.runner = greenlet.greenlet(lambda arm=arm: arm.body(arm))
    for r in range(rounds):
        for arm in arms[r % len(arms) :] + arms[: r % len(arms)]:
            arm.seconds.append(_resume(arm, base, sync))
            if arm.runner.dead:
                raise RuntimeError(f"{arm.name} stopped after {len(arm.seconds)} of {rounds} steps")
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{a.seconds[-1]:.1f} s" for a in arms), flush=True)
    for arm in arms:
        arm.stopping = True
        _resume(arm, base, sync)
        if not arm.runner.dead:
            raise RuntimeError(f"{arm.name} went on after its last step")


def _resume(arm: Arm, base: TorchGlobals, sync: Callable[[], None]) -> float:
    """Seconds from handing control to the trainer until it hands it back: one iteration of its loop."""
    set_torch_globals(arm.state)
    sync()
    start = time.perf_counter()
    arm.runner.switch()
    sync()
    seconds = time.perf_counter() - start
    arm.state = torch_globals()
    set_torch_globals(base)
    return seconds


def concord_arm(
    name: str,
    *,
    backbone: str,
    examples: Sequence[PairExample],
    encoded: list[EncodedPair],
    args: argparse.Namespace,
    folder: Path,
    precision: str,
    dropout: bool,
) -> Arm:
    """training.ml.trainer.train as a training job runs it. Its batches (first epoch) are computed the trainer's
    way to count each step's real tokens and the padded ones (PairCollator pads to the batch's longest sequence)."""
    config = TrainConfig(
        backbone=backbone,
        objective="bt",
        epochs=1,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        seed=args.seed,
        precision=precision,
        dropout=dropout,
        logging_every=1,  # progress after every step: the hand-back
        checkpoint_every=1_000_000,
    )

    def body(arm: Arm) -> None:
        def progress(_: TrainProgress) -> None:
            step_done()

        train(config, examples, [], output_dir=folder, progress=progress, should_stop=lambda: arm.stopping)

    arm = Arm(name, body, state=torch_globals())
    for batch in concord_batches(encoded, args):
        pairs = [encoded[i] for i in batch]
        arm.tokens.append(sum(len(p.chosen["input_ids"]) + len(p.rejected["input_ids"]) for p in pairs))
        arm.padded.append(2 * len(pairs) * max(p.length for p in pairs))
    return arm


def concord_batches(encoded: list[EncodedPair], args: argparse.Namespace) -> list[list[int]]:
    """The first epoch's batches of member 0, with the trainer's seed (seed * 1_000_003 + epoch)."""
    return length_grouped_batches([p.length for p in encoded], batch_size=args.batch_size, seed=args.seed * 1_000_003)


def trl_length_grouped_batches(encoded: list[EncodedPair], args: argparse.Namespace) -> list[list[int]]:
    """TRL's `group_by_length` batches (transformers' LengthGroupedSampler over the pairs' lengths, seeded), every
    k-th of the epoch so that the timed steps span its lengths: in its own order each mega-batch runs from its
    longest batch to its shortest, and the epoch starts with the longest of all, so its first steps alone would be
    its longest batches."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    lengths = [p.length for p in encoded]
    order = list(
        LengthGroupedSampler(args.batch_size, lengths=lengths, generator=torch.Generator().manual_seed(args.seed))
    )
    batches = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    steps = args.warmup + args.rounds
    return batches[:: len(batches) // steps][:steps]


def trl_arm(
    name: str,
    backbone: str,
    encoded: list[EncodedPair],
    args: argparse.Namespace,
    folder: Path,
    sampling: str,
    batches: list[list[int]] | None = None,
) -> Arm:
    """TRL's RewardTrainer.train with the given train sampler, or with the given batches (a batch sampler that
    yields them), on the pairs pre-tokenised (chosen_ids / rejected_ids: TRL skips its own tokenisation, and
    since every sequence is already cut to max_length its length filter drops nothing)."""

    def body(arm: Arm) -> None:
        from datasets import Dataset
        from torch.utils.data import DataLoader
        from transformers import TrainerCallback
        from trl import RewardConfig, RewardTrainer

        tokenizer = AutoTokenizer.from_pretrained(backbone)
        dataset = Dataset.from_dict(
            {
                "chosen_ids": [p.chosen["input_ids"] for p in encoded],
                "rejected_ids": [p.rejected["input_ids"] for p in encoded],
                # What transformers' LengthGroupedSampler sorts by under `group_by_length` (its
                # length_column_name); kept by remove_unused_columns=False below, ignored by TRL's collator.
                "length": [p.length for p in encoded],
            }
        )

        class HandBack(TrainerCallback):
            def on_step_end(self, *_: Any, **__: Any) -> None:
                step_done()

        class BenchRewardTrainer(RewardTrainer):
            def compute_loss(self, model: Any, inputs: dict[str, Any], *rest: Any, **kwargs: Any) -> Any:
                if model.training:
                    arm.tokens.append(int(inputs["attention_mask"].sum()))
                    arm.padded.append(inputs["attention_mask"].numel())
                return super().compute_loss(model, inputs, *rest, **kwargs)

            def get_train_dataloader(self) -> Any:
                if batches is None:
                    return super().get_train_dataloader()
                loader = DataLoader(
                    self.train_dataset, batch_sampler=FixedBatches(batches), collate_fn=self.data_collator
                )
                return self.accelerator.prepare(loader)

        config = RewardConfig(
            output_dir=str(folder),
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1,
            max_steps=args.warmup + args.rounds,
            learning_rate=args.learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.01,
            max_grad_norm=1.0,
            max_length=args.max_length,
            center_rewards_coefficient=None,
            disable_dropout=not args.dropout,  # TRL's default, as Concord's: off
            gradient_checkpointing=False,  # TRL's default is on; Concord's is off
            bf16=resolve_precision(args.precision) == torch.bfloat16,  # as Concord
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
        # The model as TRL loads a path (its seed set first: AutoModelForSequenceClassification, fp32 weights,
        # transformers' default attention), where Concord's trainer loads it with training.ml.model.
        trainer = BenchRewardTrainer(
            model=backbone, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[HandBack()]
        )
        arm.seen["attention"] = trainer.model.config._attn_implementation
        trainer.train()

    return Arm(name, body, state=(False, False, True))


class FixedBatches(torch.utils.data.Sampler[list[int]]):
    """A batch sampler that yields the given batches in order."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches
        self.batch_size = len(batches[0])

    def __iter__(self) -> Any:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def figures(arm: Arm, warmup: int) -> dict[str, Any]:
    """Per-step real tokens per second over the timed steps: median, quartiles, min, max; and the step's median
    time, its median real tokens, the share of real tokens among the padded ones."""
    steps = len(arm.seconds) - warmup
    tokens, padded = arm.tokens[warmup : warmup + steps], arm.padded[warmup : warmup + steps]
    rates = [t / s for t, s in zip(tokens, arm.seconds[warmup:], strict=True)]
    q1, median, q3 = statistics.quantiles(rates, n=4, method="inclusive")
    return {
        "rates": rates,
        "median": median,
        "q1": q1,
        "q3": q3,
        "min": min(rates),
        "max": max(rates),
        "step_s": statistics.median(arm.seconds[warmup:]),
        "step_tokens": statistics.median(tokens),
        "real_share": sum(tokens) / sum(padded),
        "tokens": sum(tokens),
        "overall": sum(tokens) / sum(arm.seconds[warmup:]),
        **arm.seen,
    }


def paired(numerator: dict[str, Any], denominator: dict[str, Any]) -> tuple[float, float, float]:
    """Quartiles (q1, median, q3) of the ratio of two trainers' throughputs within each round."""
    ratios = [a / b for a, b in zip(numerator["rates"], denominator["rates"], strict=True)]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return q1, median, q3


def build_qwen2_05b(folder: Path) -> str:
    """A Qwen2-0.5B-shaped sequence classifier with random weights, saved with MiniLM's tokenizer (its ids fit in
    Qwen2's vocabulary): enough to time training, nothing to evaluate."""
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

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


def mfu_fraction(backbone: str, run: dict[str, Any], args: argparse.Namespace, peak: float) -> float:
    """Model FLOPs per second over real tokens only (median step), as a fraction of the peak."""
    mean_length = run["tokens"] / (len(run["rates"]) * 2 * args.batch_size)
    return train_flops_per_token(backbone, mean_length) * run["median"] / (peak * 1e12)


def peak_tflops(override: float | None) -> float | None:
    if override:
        return override
    name = torch.cuda.get_device_name()
    return next((peak for word, peak in PEAK_BF16_TFLOPS.items() if word in name), None)


def arms_for(backbone: str, examples: Sequence[PairExample], args: argparse.Namespace, folder: Path) -> list[Arm]:
    cuda = torch.cuda.is_available()
    encoded = encode_pairs(examples, AutoTokenizer.from_pretrained(backbone), max_length=args.max_length)
    batches = concord_batches(encoded, args)
    if args.warmup + args.rounds > len(batches):
        raise SystemExit(f"--warmup + --rounds must fit in one epoch of {len(batches)} batches")
    concord = functools.partial(concord_arm, backbone=backbone, examples=examples, encoded=encoded, args=args)
    arms = [concord(CONCORD, folder=folder / "c", precision=args.precision, dropout=args.dropout)]
    # The kernel Concord's trainer gets: the trainer loads its model with load_reward_model, as here.
    arms[0].seen["attention"] = load_reward_model(backbone)[0].config._attn_implementation
    for sampling in args.trl_sampling.split(","):
        name = f"TRL `RewardTrainer`, `{sampling}` sampler"
        grouped = trl_length_grouped_batches(encoded, args) if sampling == "group_by_length" else None
        arms.append(trl_arm(name, backbone, encoded, args, folder / f"trl-{sampling}", sampling, grouped))
    arms.append(trl_arm(TRL_SAME, backbone, encoded, args, folder / "trl-same", "random", batches))
    if not args.no_before:
        before = "bf16" if cuda else "fp32"  # `auto` was bf16 on CUDA already
        arms.append(concord(CONCORD_BEFORE, folder=folder / "b", precision=before, dropout=True))
    return arms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared/data")
    parser.add_argument("--rounds", type=int, default=20, help="timed steps of each trainer, interleaved")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (the first loads and tokenises)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dropout", action="store_true", help="every trainer keeps the backbone's dropout")
    parser.add_argument(
        "--precision", default="auto", choices=("auto", "fp32", "bf16"), help="Concord's setting, and TRL's to match"
    )
    parser.add_argument("--no-before", action="store_true", help="leave out the row of Concord's former defaults")
    parser.add_argument(
        "--trl-sampling",
        default="random,group_by_length",
        help="TRL train samplers to time, comma-separated: random (TRL's default) and/or group_by_length",
    )
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the table")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.warmup < 1 or args.rounds < 4:
        parser.error("--warmup must be at least 1 (the first round loads and tokenises) and --rounds at least 4")

    import transformers
    import trl

    examples = load_hh(args.data / HH_FILE)
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else lambda: None
    results: list[tuple[str, str, dict[str, dict[str, Any]]]] = []  # (label, backbone, {trainer: figures})
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        backbones = [("all-MiniLM-L6-v2", default_backbone())]
        if cuda:
            backbones.append(("Qwen2-0.5B shape (random weights)", build_qwen2_05b(folder / "qwen2")))
        for n, (label, backbone) in enumerate(backbones):
            arms = arms_for(backbone, examples, args, folder / str(n))
            interleave(arms, args.warmup + args.rounds, sync)
            runs = {arm.name: figures(arm, args.warmup) for arm in arms}
            for name, run in runs.items():
                print(label, name, {k: v for k, v in run.items() if k != "rates"}, flush=True)
            results.append((label, backbone, runs))
    load_after = os.getloadavg()[0]

    threads = torch.get_num_threads()
    device = torch.cuda.get_device_name() if cuda else f"CPU only, {threads} torch threads"
    setting = dict(
        where=f"{machine()} ({device}), torch {torch.__version__}, transformers {transformers.__version__}, trl "
        f"{trl.__version__}; 1-minute load average {load_before:.1f} before, {load_after:.1f} after",
        examples=len(examples),
        precision="bf16 autocast" if resolve_precision(args.precision) == torch.bfloat16 else "fp32",
        load=(load_before, load_after),
    )
    lines = section_lines(results, args, setting)
    lines += mfu_lines(results, args) if cuda else ["", NO_MFU]
    lines += [
        "",
        "    .venv/bin/pip install -r requirements-bench.txt",
        f"    .venv/bin/python bench/train_throughput.py --rounds {args.rounds} --warmup {args.warmup} "
        f"--batch-size {args.batch_size} --max-length {args.max_length} --trl-sampling {args.trl_sampling}"
        + (f" --precision {args.precision}" if args.precision != "auto" else "")
        + (" --dropout" if args.dropout else "")
        + (" --no-before" if args.no_before else ""),
    ]
    if not args.no_write:
        SVG.parent.mkdir(parents=True, exist_ok=True)
        SVG.write_text(plot(results, args))
        write_section(SECTION, "\n".join(lines))
    print("\n".join(lines))


def section_lines(
    results: list[tuple[str, str, dict[str, dict[str, Any]]]], args: argparse.Namespace, setting: dict[str, Any]
) -> list[str]:
    dropout = (
        "dropout on (the backbone's 0.1: `--dropout`)"
        if args.dropout
        else "no dropout (Concord's `dropout` setting and TRL's `disable_dropout` at their defaults)"
    )
    lines = [
        f"One process on {setting['where']}. Every trainer gets the same {setting['examples']} HH-RLHF "
        "harmless-base test pairs, tokenised once by `training.ml.data.encode` (prompt turns flattened, the pair "
        f"cut to {args.max_length} tokens from the left), batch {args.batch_size} pairs (2 x {args.batch_size} "
        f"sequences per forward pass, padded to the batch's longest), Bradley-Terry loss, fused AdamW at "
        f"{args.learning_rate:g} with weight decay 0.01, gradient clipping at 1.0, a linear schedule, no gradient "
        f"checkpointing, {dropout}, {setting['precision']}. Each trainer loads the model its own way: Concord with "
        "`training.ml.model.load_reward_model`, which asks for FlashAttention 2 on a GPU where it is installed and, "
        "on the CPU, for sdpa computed in fp32 under bf16 autocast (`training.ml.attention`: torch's CPU "
        "flash-attention kernel is 3-4x slower in bf16), TRL from the path (`AutoModelForSequenceClassification`, "
        "fp32 weights, transformers' default attention, sdpa); the kernels are named under each table.",
        "",
        "**Interleaved.** Each trainer runs its own, unchanged training loop in a greenlet of the one thread and "
        "hands control back after every optimizer step: Concord's `train` through its progress callback "
        "(`logging_every=1`), TRL's `RewardTrainer.train` through a `TrainerCallback.on_step_end`. A scheduler "
        "resumes each in turn for one step, starting every round with the next trainer, and times the slice from "
        "hand-over to hand-back: one iteration of that trainer's loop, collation and bookkeeping included, next to "
        "one of every other trainer under the same load. The process-wide torch settings a trainer changes for "
        "itself (deterministic algorithms) are saved and restored at each hand-over, so each runs under its own. "
        f"{args.warmup} untimed rounds first (the first loads the model and tokenises), then {args.rounds} timed "
        "rounds. Real tokens are the attention-mask sum over a step's chosen and rejected sequences; each step's "
        "throughput is its real tokens over its time, and the table gives the median over the timed steps with "
        "the quartiles and the extremes; all timed steps is their real tokens over their time. Real / padded is "
        "the share of real tokens in the padded batches.",
        "",
        "**What each side does per step.** Concord (`training.ml.trainer.train`, as a training job runs it): "
        "`PairCollator` pads the step's pre-encoded pairs with `tokenizer.pad` (with token type ids), one forward "
        "pass over the 2B sequences, `objective_loss`, backward, clipping, fused AdamW (decay on every weight), "
        "the schedule, a progress report. On the CPU the trainer runs under deterministic algorithms, without "
        "torch's NaN fill of new tensors. Its batches are `length_grouped_batches`: "
        "shuffle, sort mega-batches of 50 batches by the pair's longer sequence, cut, shuffle the batches. "
        "TRL (`RewardTrainer`, trl's defaults except: gradient checkpointing off, the schedule, decay and "
        f"precision above{', dropout kept' if args.dropout else ''}): `DataCollatorForPreference` pads with "
        "`torch` ops (no token type ids), one forward pass, its loss and four reward statistics (`.item()`), "
        "backward, clipping, `adamw_torch_fused` (transformers' default; no decay on biases and LayerNorm), "
        "no deterministic mode. Its `random` sampler (its default) shuffles pairs and pads each batch to its "
        "longest. Its `group_by_length` batches are those of transformers' `LengthGroupedSampler` over the same "
        "lengths (seeded): mega-batches of min(50, pairs / 4B) batches, each sorted longest first; Concord's "
        "`length_grouped_batches` is that algorithm with mega-batches of 50 and the batches shuffled afterwards. "
        "In TRL's own order each mega-batch runs from its longest batch to its shortest, so its first steps "
        "alone would be its longest (the slowest per token here): the bench gives TRL every k-th batch of that "
        "epoch through a batch sampler, so that its timed steps span its lengths as Concord's shuffled ones do. "
        "The last TRL row runs TRL on exactly Concord's batches, the same work step for step.",
    ]
    for label, _, runs in results:
        trl_attention = runs[TRL_SAME].get("attention", "?") if TRL_SAME in runs else "?"
        attention = f"Concord: {runs[CONCORD].get('attention', '?')} attention, TRL: {trl_attention}"
        lines += ["", f"**{label}** ({attention}).", ""]
        lines += [
            "| trainer | real tokens/s, median step | quartiles | min - max | all timed steps | median step "
            "| real tokens / step | real / padded |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, r in runs.items():
            lines.append(
                f"| {name} | {r['median']:,.0f} | {r['q1']:,.0f} - {r['q3']:,.0f} | {r['min']:,.0f} - "
                f"{r['max']:,.0f} | {r['overall']:,.0f} | {r['step_s']:.2f} s | {r['step_tokens']:,.0f} "
                f"| {100 * r['real_share']:.0f}% |"
            )
        lines.append("")
        lines += ratio_lines(runs)
        lines += ["", *reading_lines(runs, args)]
    lines += ["", "![Per-step real tokens per second of each trainer, interleaved](img/train_throughput.svg)"]
    return lines


def ratio_lines(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Concord over each other row: the median of the per-round ratios with its quartiles, and the ratio of the
    medians; then issue 15's goal against TRL's group_by_length."""
    lines = []
    for name, run in runs.items():
        if name == CONCORD:
            continue
        q1, median, q3 = paired(runs[CONCORD], run)
        ratio = runs[CONCORD]["median"] / run["median"]
        lines.append(
            f"- {CONCORD} / {name}: **{median:.2f}x** per round (quartiles {q1:.2f} - {q3:.2f}), "
            f"{ratio:.2f}x of the medians."
        )
    if GROUPED in runs:
        _, ratio, _ = paired(runs[CONCORD], runs[GROUPED])
        verdict = (
            f"met, {ratio:.2f}x"
            if ratio >= GOAL
            else f"not met: {ratio:.2f}x per round, {GOAL - ratio:.2f} short ({GOAL / ratio:.2f}x more needed)"
        )
        lines += ["", f"Issue 15's goal, Concord >= {GOAL}x TRL `group_by_length` in real tokens/s: {verdict}."]
    return lines


def reading_lines(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """What the rows say, in words, with this run's figures."""
    if TRL_SAME not in runs:
        return []
    _, same, _ = paired(runs[CONCORD], runs[TRL_SAME])
    text = (
        "Reading: on the same batches (TRL on Concord's batches) both trainers do the same work in the same "
        f"precision, and Concord runs at {same:.2f}x TRL's speed. The loops' own costs (collation, loss, optimizer, "
        "reports) are small beside the model's forward and backward, so what differs is the attention kernel each "
        "loads (named above the table). Against TRL's own samplers the batches count too: "
    )
    if RANDOM in runs:
        text += (
            f"TRL's `random` batches are {100 * runs[RANDOM]['real_share']:.0f}% real tokens, Concord's "
            f"{100 * runs[CONCORD]['real_share']:.0f}%; "
        )
    if GROUPED in runs:
        text += (
            "`group_by_length` batches the way Concord does, so there the gap is the kernel's and that of two random "
            f"draws of {args.rounds} batches (longer batches run fewer tokens per second)."
        )
    if CONCORD_BEFORE in runs:
        _, gain, _ = paired(runs[CONCORD], runs[CONCORD_BEFORE])
        text += (
            f" Concord against its former defaults (the last row: dropout on, fp32 on the CPU, plain sdpa) on the "
            f"same batches: {gain:.2f}x. Dropout off lets torch's CPU sdpa use its fused kernel (with dropout every "
            "layer falls back to the math path: scores materialised, a Bernoulli mask drawn over B x heads x L x L); "
            "bf16 autocast runs the matmuls on the CPU's bf16 units, with attention kept in fp32."
        )
    return [text]


def mfu_lines(results: list[tuple[str, str, dict[str, dict[str, Any]]]], args: argparse.Namespace) -> list[str]:
    peak = peak_tflops(args.peak_tflops)
    if not peak:
        return []
    lines = [""]
    for label, backbone, runs in results:
        mfu = ", ".join(f"{name} {100 * mfu_fraction(backbone, r, args, peak):.1f}%" for name, r in runs.items())
        lines.append(f"MFU of {label} (median step) against {peak:g} TFLOP/s dense bf16: {mfu}.")
    return lines


# ---------------------------------------------------------------- plot

COLOURS = ["#1f77b4", "#6baed6", "#7f7f7f", "#ff7f0e", "#2ca02c", "#9467bd"]
LABEL_W, PLOT_W, ROW_H, TITLE_H, AXIS_H = 300, 420, 30, 26, 34


def plot(results: list[tuple[str, str, dict[str, dict[str, Any]]]], args: argparse.Namespace) -> str:
    """A hand-written SVG (matplotlib is not in the environment): a panel per backbone, a row per trainer, each
    timed step's real tokens per second as a dot, the quartiles as a box and the median as a bar."""
    parts: list[str] = []
    y = 0
    for label, _, runs in results:
        top = max(r["max"] for r in runs.values()) * 1.05
        parts.append(
            f'<text x="{(LABEL_W + PLOT_W) / 2}" y="{y + 17}" text-anchor="middle" font-weight="bold">{label}: real '
            f"tokens/s per step, {args.rounds} interleaved rounds</text>"
        )
        y += TITLE_H
        parts += _panel(runs, y, top)
        y += ROW_H * len(runs) + AXIS_H
    parts.append(
        f'<text x="{LABEL_W}" y="{y + 8}" font-size="10">dots: timed steps; box: quartiles; bar: median</text>'
    )
    y += 14
    width = LABEL_W + PLOT_W + 16
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + 6}" '
        'font-family="sans-serif" font-size="11">\n<rect width="100%" height="100%" fill="white"/>\n'
        + "\n".join(parts)
        + "\n</svg>\n"
    )


def _panel(runs: dict[str, dict[str, Any]], y0: int, top: float) -> list[str]:
    left, right, bottom = LABEL_W, LABEL_W + PLOT_W, y0 + ROW_H * len(runs)

    def px(v: float) -> float:
        return left + (right - left) * v / top

    parts = [f'<rect x="{left}" y="{y0}" width="{right - left}" height="{bottom - y0}" fill="none" stroke="#bbb"/>']
    step = next(s for s in (50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 10**9) if top / s <= 8)
    for k in range(int(top // step) + 1):
        x = px(k * step)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" y2="{bottom}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{bottom + 13}" text-anchor="middle" font-size="10">{k * step:,}</text>')
    parts.append(f'<text x="{(left + right) / 2}" y="{bottom + 27}" text-anchor="middle">real tokens per second</text>')
    for i, (name, r) in enumerate(runs.items()):
        mid, colour = y0 + ROW_H * i + ROW_H / 2, COLOURS[i % len(COLOURS)]
        text = name.replace("`", "").replace("training.ml.trainer.", "")
        parts.append(f'<text x="{left - 6}" y="{mid + 4}" text-anchor="end">{text}</text>')
        parts.append(
            f'<rect x="{px(r["q1"]):.1f}" y="{mid - 8}" width="{px(r["q3"]) - px(r["q1"]):.1f}" height="16" '
            f'fill="{colour}" fill-opacity="0.2" stroke="{colour}"/>'
        )
        parts.append(
            f'<line x1="{px(r["median"]):.1f}" x2="{px(r["median"]):.1f}" y1="{mid - 11}" y2="{mid + 11}" '
            f'stroke="{colour}" stroke-width="3"/>'
        )
        parts += [
            f'<circle cx="{px(v):.1f}" cy="{mid:.1f}" r="2.2" fill="{colour}" fill-opacity="0.7"/>' for v in r["rates"]
        ]
    return parts


if __name__ == "__main__":
    main()
