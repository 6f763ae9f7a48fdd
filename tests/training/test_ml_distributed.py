"""Data-parallel training under torchrun on CPUs (gloo): two processes follow the loss curve of one process with
the same global batch and end with the same weights; a checkpoint of a two-process run resumes in one process;
a rank that cannot have a pair of a small batch stands in with weight 0; rank 0 alone writes."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.ml import launch
from training.ml.config import TrainConfig
from training.ml.distributed import World, shard
from training.ml.tiny import toy_pairs

TRAIN = toy_pairs(40, seed=1)
EVAL = toy_pairs(8, seed=2)
# Minutes: a hang guard for two processes starting torch on a loaded machine, not a timing.
RUN_TIMEOUT_S = 600


def config_for(backbone: Path, **changes: object) -> TrainConfig:
    settings: dict = {
        "backbone": str(backbone),
        "epochs": 2,
        "batch_size": 8,
        "gradient_accumulation": 2,
        "learning_rate": 1e-2,
        "max_length": 32,
        "logging_every": 1,
        "checkpoint_every": 2,
        "objective": "combined",
        "attributes": ("helpful", "correct"),
        # fp32: the ranks' sums and the one process's meet within float tolerance, where bf16 autocast (the CPU's
        # `auto` with AMX) would round each rank's partial sums apart.
        "precision": "fp32",
    }
    return replace(TrainConfig(**settings), **changes)


def torchrun(output_dir: Path, config: TrainConfig, *, processes: int, sharding: str = "ddp") -> list[dict]:
    """Run the config under torchrun in `processes` ranks; rank 0's events."""
    output_dir.mkdir(parents=True, exist_ok=True)
    spec = launch.spec_write(
        output_dir, config=config.to_dict(), train_examples=TRAIN, eval_examples=EVAL, sharding=sharding
    )
    command = launch.torchrun_command(
        spec, processes=str(processes), nodes=1, endpoint="", run_id="test", max_restarts=0
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return list(launch.EventReader(output_dir).new())


def losses(events: list[dict]) -> list[tuple[int, float]]:
    """Each step's loss (an epoch's end reports its last step again)."""
    by_step: dict[int, float] = {}
    for event in events:
        if event["kind"] == "progress":
            by_step.setdefault(event["step"], event["loss"])
    return sorted(by_step.items())


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def llama(backbones: dict[str, Path]) -> Path:
    """A decoder without dropout (Llama's attention dropout is 0): the ranks' randomness cannot differ."""
    return backbones["llama"]


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_follow_the_loss_curve_of_one(sharding: str, llama: Path, tmp_path: Path) -> None:
    config = config_for(llama)
    one = torchrun(tmp_path / "one", config, processes=1)
    two = torchrun(tmp_path / "two", config, processes=2, sharding=sharding)
    assert [(e["world"], e["sharded"]) for e in two if e["kind"] == "start"] == [(2, sharding == "fsdp")]
    curve_one, curve_two = losses(one), losses(two)
    assert [step for step, _ in curve_one] == [step for step, _ in curve_two] == list(range(1, 7))
    for (_, a), (_, b) in zip(curve_one, curve_two, strict=True):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5)
    assert curve_one[-1][1] < curve_one[0][1]  # it learns
    first, second = weights(tmp_path / "one" / "model"), weights(tmp_path / "two" / "model")
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(second[name], first[name], rtol=1e-4, atol=1e-5, msg=name)
    result = next(e for e in two if e["kind"] == "result")
    assert result["steps"] == 6
    assert not result["stopped"]
    # Only rank 0 reports and writes: one start, one result, one model.
    assert sorted(p.name for p in (tmp_path / "two" / launch.RANKS).iterdir()) == ["rank-0.pid", "rank-1.pid"]


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_a_two_process_checkpoint_resumes_in_one_process(sharding: str, llama: Path, tmp_path: Path) -> None:
    config = config_for(llama, select_best=True, eval_every=2)
    whole = torchrun(tmp_path / "whole", config, processes=1)
    # Two processes asked to stop after their first step, checkpointed, then the rest in one.
    out = tmp_path / "split"
    out.mkdir()
    stopped = torchrun_with_stop(out, config, sharding=sharding)
    assert next(e for e in stopped if e["kind"] == "result")["stopped"]
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 1
    resumed = torchrun(out, config, processes=1)
    assert next(e["step"] for e in resumed if e["kind"] == "progress") == 2
    first, second = weights(tmp_path / "whole" / "model"), weights(out / "model")
    for name in first:
        torch.testing.assert_close(second[name], first[name], rtol=1e-4, atol=1e-5, msg=name)
    assert losses(whole)[-1][1] == pytest.approx(losses(resumed)[-1][1], rel=1e-4)


def torchrun_with_stop(output_dir: Path, config: TrainConfig, *, sharding: str) -> list[dict]:
    """A two-process run whose stop flag is up from the start: it stops after its first step, checkpointed."""
    spec = launch.spec_write(
        output_dir, config=config.to_dict(), train_examples=TRAIN, eval_examples=EVAL, sharding=sharding
    )
    (output_dir / launch.STOP).touch()  # spec_write clears it: raised again before the ranks start
    command = launch.torchrun_command(spec, processes="2", nodes=1, endpoint="", run_id="test", max_restarts=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return list(launch.EventReader(output_dir).new())


def test_shards_are_even_and_a_rank_without_pairs_stands_in_with_weight_zero() -> None:
    batch = [7, 3, 9, 1, 4]
    assert [shard(batch, World(rank=r, size=2))[0] for r in range(2)] == [[7, 9, 4], [3, 1]]
    assert shard([5], World(rank=1, size=2)) == ([5], True)
    assert shard([5], World(rank=0, size=2)) == ([5], False)


def test_the_torchrun_command_is_standalone_on_one_node_and_meets_at_the_endpoint_on_many() -> None:
    spec = Path("/runs/run-1/launch.json")
    single = launch.torchrun_command(spec, processes="gpu", nodes=1, endpoint="", run_id="run-1", max_restarts=3)
    assert single[1:4] == ["-m", "torch.distributed.run", "--nproc-per-node=gpu"]
    assert "--standalone" in single
    assert single[-3:] == ["-m", "training.ml.launch", str(spec)]
    many = launch.torchrun_command(spec, processes="8", nodes=2, endpoint="h:29400", run_id="run-1", max_restarts=3)
    assert {"--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=h:29400", "--rdzv-id=run-1"} <= set(many)
    assert "--standalone" not in many
    assert sys.executable == many[0]


def test_a_run_sent_again_after_its_model_was_saved_ends_on_every_rank(llama: Path, tmp_path: Path) -> None:
    """The worker died after the model was saved (during the final evaluation, say): the run sent again finds
    every member trained, and all its ranks end, rank 0 with the evaluation."""
    config = config_for(llama, epochs=1)
    first = torchrun(tmp_path, config, processes=2)
    again = torchrun(tmp_path, config, processes=2)  # spec_write starts a new events file
    assert losses(again) == []  # nothing trained again
    assert (
        next(e for e in again if e["kind"] == "result")["eval"]
        == next(e for e in first if e["kind"] == "result")["eval"]
    )
