"""Training in several processes on the CPU: one process against two under torchrun, data-parallel (DDP) and
sharded (FSDP), with the same global batch, the same HH-RLHF pairs and backbone, run in turns (1, DDP, FSDP, 1,
DDP, FSDP...) so that the machine's other load falls on each alike. Each run is the run a gpu worker starts
(training.ml.launch through torch.distributed.run); its throughput is rank 0's last report, real tokens (the
attention mask) of all ranks per second of training (after loading and tokenising). The runs' last losses are
compared too: the processes compute the loss of the same global batch. Writes a section of docs/benchmarks.md
and docs/img/train_distributed.svg.

    .venv/bin/python bench/train_distributed.py [--pairs 640] [--rounds 3] [--batch-size 16] [--max-length 128]

On a machine with GPUs the same runs go over them (NCCL); this script measures what it finds.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.common import machine, write_section
from bench.train_quality import HH_FILE, load_hh
from training.ml import launch
from training.ml.config import TrainConfig, default_backbone
from training.ml.trainer import resolve_precision

SECTION = "Training in several processes (torchrun: DDP and FSDP)"
ROOT = Path(__file__).resolve().parent.parent
SVG = ROOT / "docs" / "img" / "train_distributed.svg"
SETUPS = (("1 process", 1, "ddp"), ("2 processes, DDP", 2, "ddp"), ("2 processes, FSDP", 2, "fsdp"))


def one_run(config: TrainConfig, pairs: list[Any], *, processes: int, sharding: str, folder: Path) -> dict[str, Any]:
    """A run under torchrun; rank 0's last progress report and its result."""
    folder.mkdir(parents=True)
    spec = launch.spec_write(folder, config=config.to_dict(), train_examples=pairs, eval_examples=[], sharding=sharding)
    command = launch.torchrun_command(
        spec, processes=str(processes), nodes=1, endpoint="", run_id=folder.name, max_restarts=0
    )
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // processes))}  # as the gpu worker shares them
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    events = list(launch.EventReader(folder).new())
    progress = [e for e in events if e["kind"] == "progress"]
    return {
        "tokens_per_second": progress[-1]["tokens_per_second"],
        "loss": progress[-1]["loss"],
        "wall": time.monotonic() - started,
        "steps": progress[-1]["step"],
    }


def svg(medians: dict[str, float]) -> str:
    """Horizontal bars of the medians, labelled."""
    width, bar_left, bar_width, row = 560, 150, 330, 30
    top = max(medians.values()) or 1.0
    rows = []
    for n, (name, value) in enumerate(medians.items()):
        y = 30 + n * row
        length = bar_width * value / top
        rows.append(
            f'<text x="{bar_left - 8}" y="{y + 15}" text-anchor="end">{name}</text>'
            f'<rect x="{bar_left}" y="{y}" width="{length:.1f}" height="20" fill="#3b5bdb"/>'
            f'<text x="{bar_left + length + 6:.1f}" y="{y + 15}">{value:,.0f}</text>'
        )
    height = 30 + len(medians) * row + 10
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">'
        f'<text x="{bar_left}" y="18">Real tokens per second of training (median of the rounds), CPU</text>'
        + "".join(rows)
        + "</svg>\n"
    )


def precision_words(precision: str) -> str:
    """What the precision setting comes to on this machine (the ranks resolve it the same way)."""
    return f"{'bf16 autocast' if resolve_precision(precision) == torch.bfloat16 else 'fp32'} (precision `{precision}`)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--pairs", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    pairs = load_hh(args.data / HH_FILE)[: args.pairs]
    config = TrainConfig(
        backbone=str(default_backbone()),
        epochs=1,
        batch_size=args.batch_size,
        max_length=args.max_length,
        learning_rate=2e-5,
        logging_every=5,
        checkpoint_every=10_000,
        packing="off",
    )
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in SETUPS}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            for name, processes, sharding in SETUPS:
                folder = Path(scratch) / f"r{round_}-{processes}-{sharding}"
                results[name].append(one_run(config, pairs, processes=processes, sharding=sharding, folder=folder))
                print(name, results[name][-1], flush=True)
    medians = {name: statistics.median(r["tokens_per_second"] for r in runs) for name, runs in results.items()}
    base = medians[SETUPS[0][0]]
    lines = [
        f"{len(pairs)} HH-RLHF harmless-base pairs, all-MiniLM-L6-v2 (the packaged default backbone), the "
        f"trainer's defaults: {precision_words(config.precision)}, no dropout, "
        f"global batch {args.batch_size}, max length {args.max_length}, "
        f"one epoch ({results[SETUPS[0][0]][0]['steps']} steps), "
        f"{args.rounds} rounds in turns; {machine()}, torch {torch.__version__}, gloo on the CPU. Each process gets "
        "the machine's cores divided among the processes (OMP_NUM_THREADS), as the gpu worker gives them. Load "
        f"average at the end of the runs: {os.getloadavg()[0]:.1f} (other work on the machine slows a process with "
        "two threads on two cores more than two processes with one each, so a loaded machine favours the latter).",
        "",
        "| setup | real tokens/s (median) | min - max | vs 1 process | last loss (median) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, runs in results.items():
        rates = [r["tokens_per_second"] for r in runs]
        lines.append(
            f"| {name} | {medians[name]:,.0f} | {min(rates):,.0f} - {max(rates):,.0f} | "
            f"{medians[name] / base:.2f}x | {statistics.median(r['loss'] for r in runs):.4f} |"
        )
    lines += [
        "",
        "![Real tokens per second of one process and of two under torchrun](img/train_distributed.svg)",
        "",
        "The last losses agree: two processes train on the loss of the same global batch as one "
        "(tests/training/test_ml_distributed.py checks the whole curve and the weights to 1e-4 on a tiny model). "
        "On a CPU the ranks share the same cores, so two processes do the same arithmetic with more "
        "communication: the figure measures the cost of the machinery, not a speed-up, which needs a device "
        "per rank.",
        "",
        "GPUs (1 and 2 H200s, NCCL, the Qwen2-0.5B-shaped decoder): not measured: no GPU was lent to the session "
        "that built this. Run this script, or bench/train_throughput.py, on a GPU machine to measure them.",
        "",
        f"Command: `.venv/bin/python bench/train_distributed.py --pairs {args.pairs} --rounds {args.rounds} "
        f"--batch-size {args.batch_size} --max-length {args.max_length}`",
    ]
    SVG.write_text(svg(medians))
    write_section(SECTION, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
