"""A training run in several processes: the torchrun entry point, and what its launcher needs around it.

The gpu worker's task (training.services.runs) writes the run's spec (settings, the train and validation pairs)
into the run's folder and starts

    python -m torch.distributed.run --nproc-per-node N [--nnodes M --rdzv-endpoint HOST:PORT ...] \\
        -m training.ml.launch RUN_DIR/launch.json

torchrun starts the ranks, and restarts them all from the last checkpoint when one dies (--max-restarts): each
rank runs training.ml.trainer.train with its World. Rank 0 tells the launcher what happens by appending JSON lines
to RUN_DIR/events.jsonl (start, phase, progress, result); the launcher asks it to stop by creating RUN_DIR/stop.
A rank whose launcher is gone (torchrun killed with the worker) exits at once: nothing trains unwatched.

This module imports torch only in the ranks (main), so the launcher's side (spec, events) is cheap to import.
"""

import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.ml.data import PairExample

SPEC = "launch.json"
EVENTS = "events.jsonl"
STOP = "stop"
RANKS = "ranks"  # each rank's pid, as rank-<n>.pid: for an operator, and for tests that kill one


def spec_write(
    output_dir: Path,
    *,
    config: dict[str, Any],
    train_examples: Sequence["PairExample"],
    eval_examples: Sequence["PairExample"],
    sharding: str = "ddp",
) -> Path:
    """The run's spec and its pairs, written into output_dir; the stop flag and old events removed. `sharding`:
    "ddp", a whole model on each rank, or "fsdp", the model sharded over them (training.ml.distributed)."""
    for name, examples in (("train.jsonl", train_examples), ("validation.jsonl", eval_examples)):
        with (output_dir / name).open("w", encoding="utf-8") as out:
            for example in examples:
                out.write(json.dumps(dataclasses.asdict(example)) + "\n")
    (output_dir / STOP).unlink(missing_ok=True)
    (output_dir / EVENTS).unlink(missing_ok=True)
    path = output_dir / SPEC
    spec = {"config": config, "train": "train.jsonl", "validation": "validation.jsonl", "sharding": sharding}
    path.write_text(json.dumps(spec))
    return path


class EventReader:
    """The events rank 0 has appended since the last read (whole lines only)."""

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / EVENTS
        self.offset = 0

    def new(self) -> Iterator[dict[str, Any]]:
        try:
            with self.path.open("rb") as events:
                events.seek(self.offset)
                data = events.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            if line.strip():
                yield json.loads(line)


def torchrun_command(
    spec: Path, *, processes: str, nodes: int, endpoint: str, run_id: str, max_restarts: int
) -> list[str]:
    """torchrun's command line: one node on its own (--standalone), or one of `nodes` meeting at `endpoint`."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}"]
    if nodes > 1 or endpoint:
        command += [f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}"]
    else:
        command += ["--standalone"]
    return [*command, f"--max-restarts={max_restarts}", "-m", "training.ml.launch", str(spec)]


# The ranks' side.


def die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent dies (Linux's parent-death signal; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _exit_with_launcher() -> None:
    """Exit when the process that started this one (torchrun's agent) is gone: a rank is then an orphan. The
    kernel kills it (die_with_parent); elsewhere, a thread watching the parent does."""
    launcher = os.getppid()
    die_with_parent()
    if os.getppid() != launcher:  # gone before the signal was asked for
        os._exit(1)

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def _example(row: dict[str, Any]) -> "PairExample":
    from training.ml.data import PairExample

    return PairExample(**row)


def _examples(path: Path) -> list["PairExample"]:
    with path.open(encoding="utf-8") as lines:
        return [_example(json.loads(line)) for line in lines if line.strip()]


class _Events:
    """Rank 0's reports to the launcher, a JSON line each, flushed at once."""

    def __init__(self, output_dir: Path) -> None:
        self.file = (output_dir / EVENTS).open("a", encoding="utf-8")

    def send(self, kind: str, **fields: Any) -> None:
        self.file.write(json.dumps({"kind": kind, **fields}, default=str) + "\n")
        self.file.flush()


def main(argv: Sequence[str]) -> int:
    _exit_with_launcher()  # first: importing torch takes seconds, and an orphan must not live through them
    from training.ml import distributed
    from training.ml.config import TrainConfig
    from training.ml.trainer import train

    spec_path = Path(argv[0])
    output_dir = spec_path.parent
    spec = json.loads(spec_path.read_text())
    world = distributed.world_from_env(sharded=spec.get("sharding") == "fsdp")
    (output_dir / RANKS).mkdir(exist_ok=True)
    (output_dir / RANKS / f"rank-{world.rank}.pid").write_text(str(os.getpid()))
    distributed.start(world)
    events = _Events(output_dir) if world.main else None
    if events is not None:
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        events.send("start", world=world.size, restart=restart, sharded=world.sharded)
    try:
        result = train(
            TrainConfig.from_dict(spec["config"]),
            _examples(output_dir / spec["train"]),
            _examples(output_dir / spec["validation"]),
            output_dir=output_dir,
            progress=(lambda update: events.send("progress", **dataclasses.asdict(update))) if events else None,
            should_stop=(lambda: (output_dir / STOP).exists()) if events else None,
            phase=(lambda message: events.send("phase", message=message)) if events else None,
            world=world,
        )
        if events is not None:
            events.send("result", **dataclasses.asdict(result))
    finally:
        distributed.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
