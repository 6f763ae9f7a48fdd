"""Resumable checkpoints without pickle: weights and optimizer tensors as safetensors, the rest as JSON.

output_dir/checkpoint/ holds model/ (save_pretrained), optimizer.safetensors (AdamW's moments and step counts),
rng.safetensors (the torch generators, so dropout continues where it stopped) and state.json (step, position in
the epoch, optimizer hyperparameters, scheduler and loss-scaler state, and the fingerprint of the run it
belongs to). It is written to a sibling directory and renamed into place, so a kill mid-save leaves the last one.

A member trained with select_best keeps the model of its best evaluation so far in output_dir/best-<member>/
step-<step>/; the checkpoint names that step (Position.extra["best"]), so a resumed run still has it. A better
model found after the last checkpoint is kept beside it until the next checkpoint names it: a run killed before
then resumes with the one its checkpoint names.
"""

import json
import os
import shutil
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.ml.model import METADATA_FILE, save_reward_model

CHECKPOINT_DIR = "checkpoint"


@dataclass
class Position:
    fingerprint: str
    member: int
    step: int = 0
    epoch: int = 0
    next_batch: int = 0  # batches of `epoch` already trained on
    loss_sum: float = 0.0
    loss_count: int = 0
    tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # optimizer groups, scheduler, scaler, best model


def optimizer_tensors(
    optimizer: torch.optim.Optimizer, state: dict[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """AdamW's state (its own, or `state` gathered from a sharded one) split into named tensors and JSON (its
    param groups and any scalar state)."""
    state = state or optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state(tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in extra["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": extra["param_groups"]}


def rng_tensors() -> dict[str, torch.Tensor]:
    """The CPU's generator and the current CUDA device's (the one the process trains on): a checkpoint then
    resumes on a machine with any number of GPUs."""
    tensors = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    return tensors


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["cpu"])
    # "cuda.0", "cuda.1"...: every device's, as checkpoints written before kept them.
    cuda = tensors.get(
        "cuda", tensors.get(f"cuda.{torch.cuda.current_device()}") if torch.cuda.is_available() else None
    )
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda)


def save_checkpoint(
    output_dir: Path,
    position: Position,
    *,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    model_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> None:
    """The model, optimizer and random state at `position`; a sharded model's and optimizer's come gathered
    (model_state, optimizer_state: training.ml.distributed), keyed as one process's are."""
    final = output_dir / CHECKPOINT_DIR
    partial = output_dir / f"{CHECKPOINT_DIR}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    save_reward_model(model, tokenizer, partial / "model", state_dict=model_state)
    tensors, groups = optimizer_tensors(optimizer, optimizer_state)
    save_file(tensors, str(partial / "optimizer.safetensors"))
    save_file(rng_tensors(), str(partial / "rng.safetensors"))
    data = asdict(position)
    data["extra"] = {**position.extra, "optimizer": groups}
    (partial / "state.json").write_text(json.dumps(data), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)


def read_position(output_dir: Path, fingerprint: str, member: int) -> Position | None:
    """The saved position if output_dir has a checkpoint of this run and member; None to start afresh."""
    file = output_dir / CHECKPOINT_DIR / "state.json"
    if not file.exists():
        return None
    position = Position(**json.loads(file.read_text(encoding="utf-8")))
    if position.fingerprint != fingerprint or position.member != member:
        return None
    return position


def restore_optimizer(
    output_dir: Path,
    optimizer: torch.optim.Optimizer,
    position: Position,
    *,
    load: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """The checkpoint's optimizer state into `optimizer` (or through `load`, for a sharded one), and the random
    state."""
    tensors = load_file(str(output_dir / CHECKPOINT_DIR / "optimizer.safetensors"))
    (load or optimizer.load_state_dict)(optimizer_state(tensors, position.extra["optimizer"]))
    restore_rng(load_file(str(output_dir / CHECKPOINT_DIR / "rng.safetensors")))


def remove_checkpoint(output_dir: Path) -> None:
    shutil.rmtree(output_dir / CHECKPOINT_DIR, ignore_errors=True)


def best_dir(output_dir: Path, member: int) -> Path:
    return output_dir / f"best-{member}"


def best_model_dir(output_dir: Path, member: int, step: int) -> Path:
    return best_dir(output_dir, member) / f"step-{step}"


def save_best(
    output_dir: Path,
    member: int,
    step: int,
    *,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    accuracy: float,
    model_state: dict[str, torch.Tensor] | None = None,
) -> None:
    """The model of a step whose evaluation is the best so far, written to a sibling directory and renamed into
    place as a checkpoint is."""
    final = best_model_dir(output_dir, member, step)
    partial = final.with_name(f"{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    metadata = {"selected_step": step, "selected_eval_accuracy": accuracy}
    save_reward_model(model, tokenizer, partial, metadata=metadata, state_dict=model_state)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)


def prune_best(output_dir: Path, member: int, *, keep: Collection[int | None] = ()) -> None:
    """Remove the member's best models but those of the steps in `keep` (and half-written ones); all of them,
    the directory too, when there is none to keep."""
    root = best_dir(output_dir, member)
    names = {f"step-{step}" for step in keep if step is not None}
    if not names:
        shutil.rmtree(root, ignore_errors=True)
        return
    for path in root.glob("*"):
        if path.name not in names:
            shutil.rmtree(path, ignore_errors=True)


def install_best(output_dir: Path, member: int, step: int, target: Path, *, metadata: dict[str, Any]) -> None:
    """Make the best model of `step` the member's model at `target`, with the member's metadata: linked (or
    copied) into a hidden sibling of target (not a member-* name, which model.member_dirs would read), which is
    renamed over it. The best model stays where it was, so a kill at any point leaves either the finished member
    or the checkpoint and the best model it names."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(best_model_dir(output_dir, member, step), partial, copy_function=_link_or_copy)
    file = partial / METADATA_FILE
    file.unlink(missing_ok=True)  # a link to the best model's file: write a new one rather than through it
    file.write_text(json.dumps(metadata, indent=2, sort_keys=True), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where the file system allows one (a model of many gigabytes then costs no copy), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
