"""Data parallelism with torch.distributed (DDP), for a run started by torchrun (training.ml.launch).

Every rank builds the same length-grouped global batches from the same seed and takes its shard of each: the
pairs of a batch are sorted by length, so dealing them out in turn (rank r takes pairs r, r + W, r + 2W...) gives
every rank the same number of pairs and about the same tokens. A rank whose shard would be empty (a global batch
smaller than the world) takes a pair with weight 0, which adds nothing to the loss, so that every rank runs the
same forward and backward passes and DDP's gradient all-reduce never waits for a rank that has none.

The loss of a global batch is each objective term's weighted mean over the whole batch (training.ml.losses): each
rank divides its pairs' weighted sum by the weight total summed over the ranks, and scales by the world size,
since DDP averages the ranks' gradients. The gradient is then one process's on the same global batch, up to the
order of float additions: a run in W processes follows the loss curve of a run in one (tests/training).

Checkpoints, the saved model, evaluations and progress reports are rank 0's; a checkpoint names the position in
global batches, so a run resumes into any world size. The same code runs with the gloo backend on CPUs."""

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    sharded: bool = False  # FSDP: the weights sharded over the ranks; else DDP: a whole copy on each

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()
# How long a rank waits for the others at a collective: rank 0 evaluates and writes checkpoints (gigabytes for a
# large model) while the other ranks wait at the next one, for longer than torch's default of 10 minutes (NCCL).
COLLECTIVE_TIMEOUT = timedelta(hours=2)


def world_from_env(*, sharded: bool = False) -> World:
    """The world torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK); one process without it."""
    if "WORLD_SIZE" not in os.environ:
        return SINGLE
    size = int(os.environ["WORLD_SIZE"])
    return World(
        rank=int(os.environ["RANK"]),
        size=size,
        local_rank=int(os.environ["LOCAL_RANK"]),
        sharded=sharded and size > 1,
    )


def start(world: World) -> torch.device:
    """Join the process group (NCCL on GPUs, gloo on CPUs) and return this rank's device."""
    if torch.cuda.is_available():
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        store = _attempt_store(world)
        if store is None:
            dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
        else:
            dist.init_process_group(
                backend, store=store, rank=world.rank, world_size=world.size, timeout=COLLECTIVE_TIMEOUT
            )
    return device


def _attempt_store(world: World) -> dist.Store | None:
    """The rendezvous store of torchrun's agent, under a prefix of its own for each restart of the ranks: the
    agent keeps its store across restarts, and a restarted rank reading the address a dead rank published there
    would connect to nothing. None where the ranks do not use the agent's store (torch's default then)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    client = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world.size,
        is_master=False,
        timeout=timedelta(minutes=30),
    )
    return dist.PrefixStore(f"concord/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", client)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(batch: list[int], world: World) -> tuple[list[int], bool]:
    """This rank's pairs of a global batch (sorted by length), and whether it is a stand-in with weight 0."""
    mine = batch[world.rank :: world.size]
    return (mine, False) if mine else (batch[:1], True)


def all_sum(values: list[float], world: World) -> list[float]:
    """The values summed over the ranks (as float64)."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_sum_tensor(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """A detached copy of `tensor` summed over the ranks."""
    total = tensor.detach().clone()
    if world.distributed:
        dist.all_reduce(total)
    return total


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


# Sharded data parallelism (FSDP2, torch.distributed.fsdp.fully_shard): each rank holds 1/W of the weights,
# gradients and optimizer state, for models whose training state does not fit one device. Saving and evaluating
# are then collective: every rank takes part in gathering the full weights (to rank 0, on the CPU) and in every
# forward pass.


def shard_model(model: torch.nn.Module) -> None:
    """Shard `model` in place: each transformer block (the classes transformers keeps whole, _no_split_modules),
    then the backbone and the reward head (so that the packed forward, which calls them directly, gathers their
    weights too), then the rest."""
    from torch.distributed.fsdp import fully_shard

    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module)
    base = getattr(model, "base_model", None)
    if isinstance(base, torch.nn.Module) and base is not model:
        fully_shard(base)
    for name in ("score", "classifier"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            fully_shard(head)
    fully_shard(model)


def set_gradient_sync(model: torch.nn.Module, sync: bool) -> None:
    """Whether the next backward reduces the gradients over the ranks (a step's last micro-batch) or keeps them."""
    model.set_requires_gradient_sync(sync)  # type: ignore[operator]  # FSDPModule's method, added by fully_shard


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full weights, on rank 0's CPU (empty elsewhere); every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state: Any = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state


def _trainable_names(model: torch.nn.Module) -> list[str]:
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's full state on rank 0 (empty elsewhere), keyed as one process's optimizer keys it (by the
    index of each trainable parameter), so a checkpoint of any world size loads into any other; every rank must
    call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state: Any = get_optimizer_state_dict(model, optimizer, options=options)
    if not state:
        return {}
    index = {name: n for n, name in enumerate(_trainable_names(model))}
    return {
        "state": {index[name]: values for name, values in state["state"].items()},
        "param_groups": [
            {**group, "params": [index[name] for name in group["params"]]} for group in state["param_groups"]
        ],
    }


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """A full optimizer state keyed by parameter index (as full_optimizer_state writes it) into the sharded
    optimizer; every rank must call it, each with the full state."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _trainable_names(model)
    by_name: Any = {
        "state": {names[int(n)]: values for n, values in state["state"].items()},
        "param_groups": [{**group, "params": [names[n] for n in group["params"]]} for group in state["param_groups"]],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))
