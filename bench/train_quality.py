"""Train the default reward model (all-MiniLM-L6-v2, Bradley-Terry) on half of Anthropic HH-RLHF harmless-base
test pairs and evaluate it on the other half, whose prompts it never saw; read against a coin flip and "the
longer response wins". No Django: the pairs are read with annotate.formats, which is pure. Writes a section of
docs/benchmarks.md.

    .venv/bin/python bench/train_quality.py [--data ../shared/data] [--max-length 256] [--epochs 2]

The model trains with Concord's defaults: no dropout, precision `auto` (bf16 autocast where the device computes
bf16, else fp32). --with-dropout trains a second model from the same seed with the backbone's dropout on (the
trainer's former default), to read the two side by side.
"""

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from annotate.formats import LineReader, PreferenceRecord, parse_records
from bench.common import machine, write_section
from training.ml.config import TrainConfig
from training.ml.data import PairExample, split_by_prompt
from training.ml.trainer import TrainProgress, TrainResult, resolve_precision, train

HH_FILE = "hh-rlhf/harmless-base/test.jsonl.gz"
SECTION = "Reward model quality on HH-RLHF harmless-base"


def load_hh(path: Path) -> list[PairExample]:
    """Every pair of an HH-RLHF file as a training example, in file order."""
    with path.open("rb") as raw:
        records = list(parse_records(LineReader(raw), format="hh-rlhf"))
    return [
        PairExample(prompt=list(r.prompt), chosen=r.chosen, rejected=r.rejected, source="hh-rlhf harmless-base")
        for r in records
        if isinstance(r, PreferenceRecord)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared/data")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--with-dropout", action="store_true", help="also train with the backbone's dropout on")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    examples = load_hh(args.data / HH_FILE)
    train_set, held_out = split_by_prompt(examples, validation_fraction=0.5, seed=args.seed)
    config = TrainConfig(
        objective="bt",
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        seed=args.seed,
        precision=args.precision,
        logging_every=10,
        checkpoint_every=10_000,  # no mid-run checkpoints: they would be timed with the training
    )

    def progress(p: TrainProgress) -> None:
        print(f"step {p.step}/{p.total_steps} loss {p.loss:.4f} {p.tokens_per_second:.0f} tok/s", flush=True)

    def run(run_config: TrainConfig) -> tuple[TrainResult, float]:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            result = train(run_config, train_set, held_out, output_dir=Path(folder), progress=progress)
            seconds = time.perf_counter() - start
        m = result.eval
        print(
            f"dropout {run_config.dropout}: steps {result.steps}, train loss {result.train_loss:.4f}, {seconds:.0f} s; "
            f"held-out accuracy {m['accuracy']:.4f}, ECE {m['ece']:.4f}, length baseline "
            f"{m['length_baseline_accuracy']:.4f}, ties {m['tie_rate']:.4f}",
            flush=True,
        )
        return result, seconds

    print(f"{len(examples)} pairs: {len(train_set)} train, {len(held_out)} held out; {torch.get_num_threads()} threads")
    result, seconds = run(config)
    with_dropout = run(dataclasses.replace(config, dropout=True)) if args.with_dropout else None
    metrics = result.eval
    if args.no_write:
        return
    precision = "bf16 autocast" if resolve_precision(config.precision) == torch.bfloat16 else "fp32"
    accuracy = metrics["accuracy"]
    standard_error = math.sqrt(accuracy * (1 - accuracy) / len(held_out))
    rows = [
        (
            f"Concord reward model (MiniLM-L6, Bradley-Terry, {_epochs(config.epochs)})",
            f"{100 * metrics['accuracy']:.1f}%",
        ),
        *(
            [
                (
                    "The same, trained with the backbone's dropout on (the former default)",
                    f"{100 * with_dropout[0].eval['accuracy']:.1f}%",
                )
            ]
            if with_dropout
            else []
        ),
        ("Constant (coin flip)", f"{100 * metrics['constant_baseline_accuracy']:.1f}%"),
        ("Longer response wins (tie = half)", f"{100 * metrics['length_baseline_accuracy']:.1f}%"),
    ]
    body = "\n".join(
        [
            f"The {len(examples)} pairs of Anthropic HH-RLHF harmless-base `test.jsonl.gz`, read with "
            "`annotate.formats` (format `hh-rlhf`) and split by prompt 50/50 with seed "
            f"{args.seed} (`training.ml.data.split_by_prompt`: no prompt is in both halves): {len(train_set)} "
            f"pairs to train on, {len(held_out)} held out. The default backbone (all-MiniLM-L6-v2 from "
            "`default_backbone()`, a new one-output head) trained with `training.ml.trainer.train`: objective "
            f"`bt`, {_epochs(config.epochs)} ({result.steps} steps), batch {config.batch_size} pairs, peak "
            "learning rate "
            f"{config.learning_rate:g} (AdamW, 10% warmup, linear decay), max length {config.max_length} tokens "
            "(longer pairs cut longest part first, from the left: the median pair is about 120 tokens, and 16% of "
            f"pairs are cut at 256), no dropout, {precision} (precision `{config.precision}`), seed "
            f"{config.seed}; {seconds:.0f} s including the held-out evaluation, on {machine()}, "
            f"{torch.get_num_threads()} torch threads, CPU only. Mean training loss {result.train_loss:.4f}."
            + (f" With dropout: mean training loss {with_dropout[0].train_loss:.4f}." if with_dropout else ""),
            "",
            "| held-out pairs | accuracy (chosen scored higher) |",
            "| --- | --- |",
            *(f"| {name} | {value} |" for name, value in rows),
            "",
            f"Standard error of the model's accuracy over {len(held_out)} pairs: {100 * standard_error:.1f} points. "
            f"Expected calibration error of sigmoid(r_chosen - r_rejected), 10 confidence bins: "
            f"{metrics['ece']:.3f}. Ties (|gap| < 1e-6): {100 * metrics['tie_rate']:.1f}%.",
            "",
            f"One run, one seed, a 22M-parameter encoder trained on about 1,150 pairs for {_epochs(config.epochs)}: a "
            "small-scale "
            "check that the pipeline learns the preference signal, not a claim about the best accuracy on this "
            "data. On these pairs the longer response is more often the rejected one, so the length baseline is "
            "below a coin flip.",
            "",
            f"    .venv/bin/python bench/train_quality.py --max-length {config.max_length} --epochs {config.epochs} "
            f"--batch-size {config.batch_size} --learning-rate {config.learning_rate:g} --seed {args.seed}"
            + (f" --precision {args.precision}" if args.precision != "auto" else "")
            + (" --with-dropout" if args.with_dropout else ""),
        ]
    )
    write_section(SECTION, body)


def _epochs(count: int) -> str:
    return "1 epoch" if count == 1 else f"{count} epochs"


if __name__ == "__main__":
    main()
