"""The training loop: AdamW with linear warmup and decay, gradient accumulation, bf16 autocast where the device has
it (CUDA, a CPU with AMX; evaluation stays fp32, as scoring), no dropout unless asked for, padding-free packing for
decoders (training.ml.packing), resumable checkpoints, progress reports and a stop flag, in one process
or data-parallel over the ranks torchrun starts (training.ml.distributed, training.ml.launch). An ensemble's
members train one after another, each with seed config.seed + member (and, for a bootstrap ensemble, on its own
resample of the examples); a finished member is skipped when a stopped run resumes. With select_best, a member's
saved model is the one of its best evaluation, which a resumed run remembers (training.ml.checkpoint)."""

import contextlib
import functools
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.ml import distributed, losses
from training.ml.checkpoint import (
    CHECKPOINT_DIR,
    Position,
    best_model_dir,
    install_best,
    prune_best,
    read_position,
    remove_checkpoint,
    restore_optimizer,
    save_best,
    save_checkpoint,
)
from training.ml.config import ATTRIBUTE_OBJECTIVES, TrainConfig
from training.ml.data import (
    EncodedPair,
    PairCollator,
    PairExample,
    batch_tokens,
    encode_pairs,
    length_grouped_batches,
)
from training.ml.distributed import SINGLE, World
from training.ml.evaluate import TIE, evaluate
from training.ml.model import disable_dropout, load_reward_model, model_metadata, reward_outputs, save_reward_model
from training.ml.packing import PackedPairCollator, packed_reward_outputs, use_packing
from training.ml.scoring import model_outputs

logger = logging.getLogger(__name__)

WARMUP_FRACTION = 0.1
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0

Collator = Callable[[Sequence[EncodedPair]], dict[str, torch.Tensor]]


@dataclass
class TrainProgress:
    step: int
    total_steps: int
    epoch: int
    member: int
    loss: float
    eval_accuracy: float | None
    tokens_per_second: float
    examples_per_second: float


@dataclass
class TrainResult:
    steps: int
    train_loss: float
    eval: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    tokens_per_second: float = 0.0
    stopped: bool = False
    model_dir: Path | None = None  # output_dir/model, or output_dir holding member-0.. for an ensemble


def model_dir_for(output_dir: Path, config: TrainConfig) -> Path:
    return output_dir / "model" if config.ensemble_size == 1 else output_dir


def member_dir(output_dir: Path, config: TrainConfig, member: int) -> Path:
    return output_dir / "model" if config.ensemble_size == 1 else output_dir / f"member-{member}"


def run_fingerprint(
    config: TrainConfig, examples: Sequence[PairExample], eval_examples: Sequence[PairExample] = ()
) -> str:
    """The settings and the training data: a checkpoint resumes only the run that wrote it. With select_best
    the evaluation pairs too, which choose the model: a best accuracy on other pairs compares with nothing."""
    digest = hashlib.sha256(config.fingerprint().encode())
    for e in examples:
        digest.update(json.dumps([e.prompt, e.chosen, e.rejected, e.margin, e.weight], sort_keys=True).encode())
    if config.select_best and eval_examples:
        digest.update(b"eval")
        for e in eval_examples:
            digest.update(json.dumps([e.prompt, e.chosen, e.rejected], sort_keys=True).encode())
    return digest.hexdigest()


def member_examples(config: TrainConfig, examples: Sequence[PairExample], member: int) -> Sequence[PairExample]:
    """The examples a member trains on: all of them, or for a bootstrap ensemble as many drawn with replacement
    (bagging: each member misses about a third of them and sees some more than once, so members disagree where the
    data is thin, beyond what seeds alone give). The draw's generator is seeded by config.seed + member, so a
    resumed member draws the same resample, and the run's fingerprint, which hashes the full set, holds."""
    if config.ensemble_kind != "bootstrap" or config.ensemble_size == 1:
        return examples
    rng = random.Random(config.seed + member)
    return [examples[i] for i in rng.choices(range(len(examples)), k=len(examples))]


def train(
    config: TrainConfig,
    train_examples: Sequence[PairExample],
    eval_examples: Sequence[PairExample],
    *,
    output_dir: Path,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    phase: Callable[[str], None] | None = None,
    world: World = SINGLE,
) -> TrainResult:
    """Train (or resume training) the configured model and evaluate it on eval_examples. `phase` is told, in
    words, what comes next while no step is being counted: loading the model, tokenising, training, evaluating.
    In a data-parallel run every rank calls this with its `world`; rank 0 alone reports, saves and evaluates, and
    the others' result has no evaluation."""
    config.validate()
    if not train_examples:
        raise ValueError("train_examples: there is nothing to train on")
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    fingerprint = run_fingerprint(config, train_examples, eval_examples)
    runs = []
    for member in range(config.ensemble_size):
        if model_metadata(member_dir(output_dir, config, member)).get("fingerprint") == fingerprint:
            prune_best(output_dir, member)  # left behind if the run was killed as the member finished
            continue  # trained before this run was stopped
        examples = member_examples(config, train_examples, member)
        run = _MemberRun(config, member, fingerprint, output_dir, examples, eval_examples, progress, should_stop, world)
        run.phase = phase
        with _deterministic():
            run.train()
        distributed.barrier(world)  # rank 0 has saved the member (or its checkpoint) before any rank goes on
        runs.append(run)
        if run.stopped:
            return _result(runs, started, stopped=True)
    if not world.main:  # its runs (none, when every member was trained before a restart) are not reported
        return TrainResult(steps=runs[-1].position.step if runs else 0, train_loss=math.nan)
    if phase is not None:
        phase(f"evaluating on {len(eval_examples)} validation pairs")
    metrics = evaluate(model_dir_for(output_dir, config), eval_examples, max_length=config.max_length)
    if not runs:  # every member was already trained: report the last one's numbers
        saved = model_metadata(member_dir(output_dir, config, config.ensemble_size - 1))
        return TrainResult(
            steps=saved["steps"],
            train_loss=saved["train_loss"],
            eval=metrics,
            model_dir=model_dir_for(output_dir, config),
        )
    return _result(runs, started, stopped=False, eval=metrics, model_dir=model_dir_for(output_dir, config))


def _result(runs: list["_MemberRun"], started: float, **kwargs: Any) -> TrainResult:
    seconds = time.monotonic() - started
    return TrainResult(
        steps=runs[-1].position.step,
        train_loss=runs[-1].mean_loss,
        seconds=seconds,
        tokens_per_second=sum(r.tokens_seen for r in runs) / max(seconds, 1e-9),
        **kwargs,
    )


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic kernels on the CPU (the same seed gives the same weights); CUDA keeps its fast ones. Not the
    NaN fill of new tensors that deterministic mode adds by default: a debugging aid that costs 3-8% of a CPU step
    (bench/train_throughput.py) and changes no result."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
    if not torch.cuda.is_available():
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.utils.deterministic.fill_uninitialized_memory = fill  # type: ignore[attr-defined]


def linear_schedule(optimizer: torch.optim.Optimizer, *, warmup: int, total: int) -> LambdaLR:
    """Linear warmup to the peak rate over `warmup` steps, then linear decay to zero at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return LambdaLR(optimizer, factor)


def objective_terms(
    config: TrainConfig, outputs: torch.Tensor, batch: dict[str, torch.Tensor]
) -> list[losses.LossTerm]:
    """The configured objective's terms on one batch; outputs are (2B, outputs), the B chosen sequences first."""
    pairs = batch["margin"].shape[0]
    r_c, r_r = outputs[:pairs, 0], outputs[pairs:, 0]
    weight = batch["weight"]
    if config.objective == "bt":
        return [losses.bradley_terry_terms(r_c, r_r, weight)]
    if config.objective == "bt_margin":
        return [losses.bradley_terry_margin_terms(r_c, r_r, batch["margin"], config.margin_scale, weight)]
    if config.objective == "bt_soft":
        return [losses.bradley_terry_soft_terms(r_c, r_r, config.label_smoothing, weight)]
    targets, mask = batch["targets"], batch["target_mask"]
    if config.objective == "regression":
        # Output 0 learns the mean rating, outputs 1..n each attribute.
        return [losses.attribute_regression_terms(outputs, targets, mask, torch.cat([weight, weight]))]
    return losses.combined_terms(
        r_c, r_r, outputs[:, 1:], targets[:, 1:], mask[:, 1:], config.regression_weight, weight
    )


def objective_loss(config: TrainConfig, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The configured loss of one batch."""
    return losses.reduce_terms(objective_terms(config, outputs, batch))


class _RewardForward(torch.nn.Module):
    """The rewards of a batch as one module's forward, padded or packed: what DDP wraps, since it syncs the
    gradients of what runs through its own forward."""

    def __init__(self, model: PreTrainedModel, *, packed: bool) -> None:
        super().__init__()
        self.model, self.packed = model, packed

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return packed_reward_outputs(self.model, batch) if self.packed else reward_outputs(self.model, batch)


def freeze_shift_invariant(model: PreTrainedModel, config: TrainConfig) -> list[str]:
    """Freeze the bias of a single-output head under a pairwise loss, and return its name: Bradley-Terry sees
    only r_chosen - r_rejected, so a constant added to every reward gets no gradient and would never train."""
    if config.num_outputs != 1 or config.objective in ATTRIBUTE_OBJECTIVES:
        return []
    frozen = [name for name, p in model.named_parameters() if name.endswith("bias") and p.shape == (1,)]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name not in frozen and parameter.requires_grad)
    return frozen


def resolve_precision(precision: str) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. `auto` is bf16 where the device has bf16 arithmetic: with it (and
    attention kept in fp32, training.ml.attention) a CPU step takes 0.4-0.46x the time of fp32 (MiniLM on AMX, 32
    sequences of 64-256 tokens); TRL defaults to bf16 too. fp16 wants a loss scaler, which Concord runs on CUDA
    only: fp32 on the CPU."""
    if precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if native_bf16() else None
    if precision == "bf16":
        return torch.bfloat16
    return torch.float16 if torch.cuda.is_available() else None


def native_bf16() -> bool:
    """Whether the device training runs on computes bf16 natively: a CUDA GPU that supports it; without CUDA, a
    CPU with AMX tiles or AVX512-BF16 (oneDNN's bf16 matmuls). Elsewhere bf16 autocast is emulated and slower."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    # torch's own probes (private, so looked up: a torch without them counts as no native bf16).
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def _fused_adamw(device: torch.device) -> bool | None:
    """Fused AdamW where torch has the kernel for the device, else torch's default (foreach)."""
    return True if device.type in ("cpu", "cuda") else None


class _MemberRun:
    """One member's training from its first (or checkpointed) step to its saved model."""

    def __init__(
        self,
        config: TrainConfig,
        member: int,
        fingerprint: str,
        output_dir: Path,
        train_examples: Sequence[PairExample],
        eval_examples: Sequence[PairExample],
        progress: Callable[[TrainProgress], None] | None,
        should_stop: Callable[[], bool] | None,
        world: World = SINGLE,
    ) -> None:
        self.config, self.member, self.output_dir, self.world = config, member, output_dir, world
        self.seed = config.seed + member
        self.train_examples, self.eval_examples = train_examples, eval_examples
        self.progress, self.should_stop = progress, should_stop
        self.position = read_position(output_dir, fingerprint, member) or Position(fingerprint, member)
        self.resumed = self.position.step > 0
        self.stopped = False
        self.tokens_seen = 0
        self.packed = False  # decided once the model is loaded (use_packing)
        self.examples_seen = 0
        self.step_tokens = self.step_examples = 0  # this rank's, in the optimizer step under way
        self.window: list[float] = []  # step losses since the last report
        self.last_loss = math.nan
        self.device = torch.device("cuda", world.local_rank) if torch.cuda.is_available() else torch.device("cpu")
        self.dtype = resolve_precision(config.precision)
        if world.sharded and self.dtype == torch.float16:
            # GradScaler would judge each rank's shard of the gradients on its own, and the ranks part ways.
            raise ValueError("precision: fp16 does not train sharded (FSDP); use bf16")
        self.total_steps = config.epochs * self._steps_per_epoch(len(train_examples))
        self.selecting = config.select_best and bool(eval_examples)
        self.best: dict[str, Any] | None = None  # {"step", "accuracy"} of the best evaluation so far
        self.checkpointed_best: int | None = None  # the best step the checkpoint on disk names
        self.evaluated: tuple[int, float] | None = None  # (step, accuracy) of the latest evaluation
        self.phase: Callable[[str], None] | None = None

    def train(self) -> None:
        self._restore_best()
        source = f"the checkpoint of step {self.position.step}" if self.resumed else Path(self.config.backbone).name
        self._say(f"loading the model ({source})")
        model, tokenizer, optimizer, scheduler, scaler = self._setup()
        self._say(f"tokenising {len(self.train_examples)} pairs")
        encoded = encode_pairs(
            self.train_examples, tokenizer, max_length=self.config.max_length, attributes=self.config.attributes
        )
        sharing = "sharded (FSDP)" if self.world.sharded else "data-parallel (DDP)"
        self._say("training" + (f" on {self.world.size} processes, {sharing}" if self.world.distributed else ""))
        self.started = time.monotonic()
        collator = PackedPairCollator(tokenizer) if self.packed else PairCollator(tokenizer)
        while self.position.epoch < self.config.epochs and not self.stopped:
            self._epoch(model, tokenizer, optimizer, scheduler, scaler, encoded, collator)
        if self.stopped or not (self.world.main or self.world.sharded):
            return
        target = member_dir(self.output_dir, self.config, self.member)
        if self.best is not None and self.best["step"] < self.position.step:
            if self.world.main:
                install_best(self.output_dir, self.member, self.best["step"], target, metadata=self._metadata())
        else:  # the last model is the best (or nothing was evaluated)
            state = self._gathered_weights(model)
            if self.world.main:
                save_reward_model(model, tokenizer, target, metadata=self._metadata(), state_dict=state)
        if self.world.main:
            prune_best(self.output_dir, self.member)
            remove_checkpoint(self.output_dir)

    def _gathered_weights(self, model: PreTrainedModel) -> dict[str, torch.Tensor] | None:
        """A sharded model's full weights, gathered on rank 0 with every rank taking part; None when the model
        is whole on each rank (it saves itself)."""
        return distributed.full_model_state(model) if self.world.sharded else None

    def _say(self, message: str) -> None:
        """Tell the phase callback what comes next, naming the member in an ensemble."""
        if self.phase is not None:
            prefix = (
                f"member {self.member + 1} of {self.config.ensemble_size}: " if self.config.ensemble_size > 1 else ""
            )
            self.phase(prefix + message)

    def _restore_best(self) -> None:
        """The best evaluation the checkpoint names, and its model; the best models of a previous run, or of
        steps after the checkpoint (which this run trains again), are removed."""
        saved = self.position.extra.get("best") if self.resumed else None
        if saved is not None and not best_model_dir(self.output_dir, self.member, saved["step"]).is_dir():
            logger.warning("The best model of step %s is missing: member %s selects anew", saved["step"], self.member)
            saved = None
        self.best = saved
        self.checkpointed_best = saved["step"] if saved else None
        if self.world.main:
            prune_best(self.output_dir, self.member, keep=[self.checkpointed_best])

    def _metadata(self) -> dict[str, Any]:
        best = self.best or {"step": self.position.step, "accuracy": None}
        return {
            "objective": self.config.objective,
            "attributes": list(self.config.attributes),
            "fingerprint": self.position.fingerprint,
            "member": self.member,
            "seed": self.seed,
            "steps": self.position.step,
            "train_loss": self.mean_loss,
            "selected_step": best["step"],
            "selected_eval_accuracy": best["accuracy"],
            "config": self.config.to_dict(),
        }

    @property
    def mean_loss(self) -> float:
        return self.position.loss_sum / max(1, self.position.loss_count)

    def _steps_per_epoch(self, examples: int) -> int:
        return math.ceil(math.ceil(examples / self.config.batch_size) / self.config.gradient_accumulation)

    def _setup(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Any, LambdaLR, Any]:
        torch.manual_seed(self.seed)  # the new head's initialisation, then dropout
        source = self.output_dir / CHECKPOINT_DIR / "model" if self.resumed else Path(self.config.backbone)
        model, tokenizer = load_reward_model(source, num_outputs=self.config.num_outputs)
        if not self.world.sharded:  # a sharded model goes to the device shard by shard
            model.to(self.device)  # type: ignore[arg-type]  # transformers' stub types .to's argument as a model
        freeze_shift_invariant(model, self.config)
        if self.config.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        if not self.config.dropout:
            disable_dropout(model)
        self.packed = use_packing(self.config.packing, model, self.device)
        self.forward = self._parallel(model)
        parameters = [p for p in model.parameters() if p.requires_grad]
        # The fused kernel updates every tensor in one pass (CPU and CUDA): on a small model the optimizer step
        # is a fifth of the step time otherwise. transformers' Trainer defaults to it too. (Not over shards.)
        fused = None if self.world.sharded else _fused_adamw(self.device)
        optimizer = torch.optim.AdamW(parameters, lr=self.config.learning_rate, weight_decay=WEIGHT_DECAY, fused=fused)
        steps = self.total_steps
        scheduler = linear_schedule(optimizer, warmup=math.ceil(WARMUP_FRACTION * steps), total=steps)
        scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        if self.resumed:
            load = None
            if self.world.sharded:
                load = functools.partial(distributed.load_optimizer_state, model, optimizer)
            restore_optimizer(self.output_dir, optimizer, self.position, load=load)
            scheduler.load_state_dict(self.position.extra["scheduler"])
            if "scaler" in self.position.extra:
                scaler.load_state_dict(self.position.extra["scaler"])
            logger.info("Resuming member %s at step %s", self.member, self.position.step)
        return model, tokenizer, optimizer, scheduler, scaler

    def _parallel(self, model: PreTrainedModel) -> torch.nn.Module:
        """The forward that training runs: the model's own in one process; wrapped in DDP, which syncs the
        gradients of what runs through it; or over a model sharded in place (FSDP), whose hooks do."""
        forward: torch.nn.Module = _RewardForward(model, packed=self.packed)
        if self.world.sharded:
            distributed.shard_model(model)
        elif self.world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            forward = torch.nn.parallel.DistributedDataParallel(forward, device_ids=ids)
        self.model = model
        return forward

    def _epoch(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        optimizer: torch.optim.Optimizer,
        scheduler: LambdaLR,
        scaler: Any,
        encoded: list[EncodedPair],
        collator: Collator,
    ) -> None:
        # Each epoch's order depends only on the seed and the epoch, so a resumed run skips what it has seen.
        batches = length_grouped_batches(
            [pair.length for pair in encoded],
            batch_size=self.config.batch_size,
            seed=self.seed * 1_000_003 + self.position.epoch,
        )
        accumulation = self.config.gradient_accumulation
        start = self.position.next_batch
        for first in range(start, len(batches), accumulation):
            group = batches[first : first + accumulation]
            loss = 0.0
            for n, indices in enumerate(group):
                with self._gradient_sync(last=n == len(group) - 1):
                    loss += self._backward(indices, encoded, collator, scaler, len(group))
            self._optimizer_step(model, optimizer, scheduler, scaler)
            self.position.next_batch = first + len(group)
            epoch_end = self.position.next_batch >= len(batches)
            if epoch_end:
                self.position.epoch, self.position.next_batch = self.position.epoch + 1, 0
            self._after_step(model, tokenizer, optimizer, scheduler, scaler, float(loss), epoch_end=epoch_end)
            if self.stopped:
                return
        self._report(model, tokenizer, evaluate_now=self.config.eval_every == 0)

    def _gradient_sync(self, *, last: bool) -> contextlib.AbstractContextManager[Any]:
        """DDP and FSDP reduce the ranks' gradients once a step, after its last micro-batch, not after each."""
        forward = self.forward
        if self.world.sharded:
            distributed.set_gradient_sync(self.model, last)
        if last or not isinstance(forward, torch.nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return forward.no_sync()

    def _backward(
        self, indices: list[int], encoded: list[EncodedPair], collator: Collator, scaler: Any, parts: int
    ) -> float:
        """Forward and backward over this rank's share of a global batch; returns the share of its loss (the
        whole loss in one process), divided by the micro-batches of the step."""
        mine, stand_in = distributed.shard(indices, self.world)
        batch = collator([encoded[i] for i in mine])
        if stand_in:
            batch["weight"] = torch.zeros_like(batch["weight"])
        batch = {key: value.to(self.device) for key, value in batch.items()}
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            outputs = self.forward(batch)
        terms = objective_terms(self.config, outputs, batch)
        if self.world.distributed:
            totals = distributed.all_sum_tensor(torch.stack([term.total.float() for term in terms]), self.world)
            loss = losses.reduce_terms(terms, list(totals))
            # DDP averages the ranks' gradients; the shares are to be summed.
            scaler.scale(loss * self.world.size / parts).backward()
        else:
            loss = losses.reduce_terms(terms)
            scaler.scale(loss / parts).backward()
        if not stand_in:
            self.step_tokens += batch_tokens(batch)
            self.step_examples += int(batch["margin"].shape[0])
        return float(loss.detach()) / parts

    def _optimizer_step(
        self, model: PreTrainedModel, optimizer: torch.optim.Optimizer, scheduler: LambdaLR, scaler: Any
    ) -> None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        self.position.step += 1

    def _after_step(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        optimizer: torch.optim.Optimizer,
        scheduler: LambdaLR,
        scaler: Any,
        loss: float,
        *,
        epoch_end: bool,
    ) -> None:
        step = self.position.step
        finished = step >= self.total_steps
        # The step's loss and tokens over all the ranks.
        loss, tokens, examples = distributed.all_sum([loss, self.step_tokens, self.step_examples], self.world)
        self.tokens_seen += int(tokens)
        self.examples_seen += int(examples)
        self.step_tokens = self.step_examples = 0
        self.position.loss_sum += loss
        self.position.loss_count += 1
        self.window.append(loss)
        evaluate_now = self.config.eval_every > 0 and step % self.config.eval_every == 0
        # Under FSDP every rank takes part in an evaluation's forward passes and in gathering the weights it saves.
        takes_part = self.world.main or self.world.sharded
        if self.selecting and takes_part and (evaluate_now or epoch_end):
            # Here rather than with the end-of-epoch report, which a stop at the epoch's last step skips: the
            # checkpoint below must know this evaluation, or the resumed run would never make it.
            self._select(model, tokenizer)
        if evaluate_now or step % self.config.logging_every == 0:
            self._report(model, tokenizer, evaluate_now=evaluate_now)
        # A stop at the last step is no stop: the model is saved as usual. Rank 0 is asked, after its report of
        # the step; the ranks agree on the answer.
        asked = not finished and self.world.main and bool(self.should_stop and self.should_stop())
        [stops] = distributed.all_sum([float(asked)], self.world)
        self.stopped = not finished and stops > 0
        if takes_part and not finished and (self.stopped or step % self.config.checkpoint_every == 0):
            self._checkpoint(model, tokenizer, optimizer, scheduler, scaler)

    def _checkpoint(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        optimizer: torch.optim.Optimizer,
        scheduler: LambdaLR,
        scaler: Any,
    ) -> None:
        weights = self._gathered_weights(model)
        moments = distributed.full_optimizer_state(model, optimizer) if self.world.sharded else None
        if not self.world.main:
            return
        self.position.extra = {"scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}
        if self.best is not None:
            self.position.extra["best"] = self.best
        save_checkpoint(
            self.output_dir,
            self.position,
            model=model,
            tokenizer=tokenizer,
            optimizer=optimizer,
            model_state=weights,
            optimizer_state=moments,
        )
        if self.best is not None and self.best["step"] != self.checkpointed_best:
            self.checkpointed_best = self.best["step"]
            prune_best(self.output_dir, self.member, keep=[self.checkpointed_best])

    def _select(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        """Keep this step's model if its accuracy is the best so far. A tie goes to the later model: the
        evaluation cannot tell the two apart, and the later one has had more of the schedule, so select_best
        departs from the last model only where the evaluation says it is worse. (transformers' Trainer keeps
        the earlier one, as early stopping does; here training runs to the end regardless.)"""
        accuracy = self._accuracy(model, tokenizer)
        if self.best is not None and accuracy < self.best["accuracy"]:
            return
        step = self.position.step
        self.best = {"step": step, "accuracy": accuracy}
        if step < self.total_steps:  # the last step's model is saved from memory at the end
            weights = self._gathered_weights(model)
            if self.world.main:
                save_best(
                    self.output_dir,
                    self.member,
                    step,
                    model=model,
                    tokenizer=tokenizer,
                    accuracy=accuracy,
                    model_state=weights,
                )
        if self.world.main:  # the one the checkpoint names stays until a checkpoint names this one
            prune_best(self.output_dir, self.member, keep=[step, self.checkpointed_best])

    def _report(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, evaluate_now: bool) -> None:
        """Progress with the mean loss of the steps since the last report (trl logs the same way), and the
        validation accuracy when it is time to evaluate."""
        if self.progress is None:
            if self.world.sharded and self.eval_examples and (evaluate_now or self._evaluated_now()):
                self._accuracy(model, tokenizer)  # rank 0 evaluates: the forward passes need every rank
            return
        loss = sum(self.window) / len(self.window) if self.window else self.last_loss
        self.window, self.last_loss = [], loss
        evaluated = self._evaluated_now()
        accuracy = self._accuracy(model, tokenizer) if (evaluate_now or evaluated) and self.eval_examples else None
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.progress(
            TrainProgress(
                step=self.position.step,
                total_steps=self.total_steps,
                epoch=self.position.epoch,
                member=self.member,
                loss=loss,
                eval_accuracy=accuracy,
                tokens_per_second=self.tokens_seen / elapsed,
                examples_per_second=self.examples_seen / elapsed,
            )
        )

    def _evaluated_now(self) -> bool:
        return self.evaluated is not None and self.evaluated[0] == self.position.step

    def _accuracy(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> float:
        """The accuracy on the evaluation pairs at this step, computed once however many ask for it."""
        step = self.position.step
        if self.evaluated is None or self.evaluated[0] != step:
            accuracy = pair_accuracy(
                model,
                tokenizer,
                self.eval_examples,
                batch_size=self.config.batch_size * 2,
                max_length=self.config.max_length,
            )
            if self.world.sharded:  # rank 0's figure, on every rank: they choose (and save) the same best model
                [accuracy] = distributed.all_sum([accuracy if self.world.main else 0.0], self.world)
            self.evaluated = (step, accuracy)
        return self.evaluated[1]


def pair_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[PairExample],
    *,
    batch_size: int,
    max_length: int,
) -> float:
    """The fraction of pairs whose chosen response the model scores higher, as evaluate counts it."""
    model.eval()
    items = [(e.prompt, e.chosen) for e in examples] + [(e.prompt, e.rejected) for e in examples]
    outputs = model_outputs(model, tokenizer, items, batch_size=batch_size, max_length=max_length)
    model.train()
    n = len(examples)
    return float((outputs[:n, 0] - outputs[n:, 0] > TIE).mean())
