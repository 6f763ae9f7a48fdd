"""Training runs: enqueue on a frozen version, execute on a gpu worker, cancel.

A run is executed under its advisory job lock (concord.locks.TRAINING) with a compare-and-swap from QUEUED or
RUNNING to RUNNING. The lock is held by the worker's database connection, so it goes with a worker killed
mid-run; the redelivered task (acks_late, reject_on_worker_lost) then claims the run, still RUNNING, and the
trainer resumes from the checkpoint in the run's output directory. A second delivery while the first worker
lives finds the lock taken and leaves the run alone: never two at once. Redis redelivers only after its
visibility timeout (hours), so the watchdog (training.services.recovery, every minute on Celery beat) sends the
task of a running run whose lock is free again, and fails a run that has lost its worker too often.

With CONCORD_TRAIN_PROCESSES (and CONCORD_TRAIN_NODES) beyond one, the task trains through torchrun
(training.ml.launch): it writes the run's pairs and settings into the run's folder, starts torchrun in a session
of its own that dies with the task's process, relays rank 0's events (phases, progress) to the run's row, and
asks the ranks to stop when the run is cancelled. torchrun restarts all ranks from the last checkpoint when one
dies; a worker that dies takes torchrun and its ranks with it, and the run is recovered as above.

The ML code (training.ml, which imports torch) is imported inside the functions that run on the worker, so
neither the web process nor the worker's parent process ever loads torch or touches CUDA.
"""

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Coalesce, Concat, Now, Right
from django.utils import timezone

from annotate.models import Project
from concord import jobs, locks
from concord.errors import ServiceError
from concord.jobs import enqueue_on_commit
from concord.locks import job_lock
from curation.models import DatasetVersion
from curation.services.version_exports import version_export
from curation.services.versions import code_version
from training.models import HISTORY_MAX_POINTS, LOG_MAX_CHARS, RewardModel, TrainingRun
from training.selectors_backbones import BACKBONE_REFUSED, backbone_allowed

if TYPE_CHECKING:
    from training.ml.data import PairExample
    from training.ml.trainer import TrainProgress, TrainResult

logger = logging.getLogger(__name__)

# Progress is written to the run's row at most this often, and cancel_requested read at most this often.
PROGRESS_INTERVAL_S = 1.0
# How often the task reads the events of a run in several processes.
EVENTS_POLL_S = 0.5
# The lines of torchrun's log an error quotes.
LOG_TAIL_LINES = 30
# How long a new launch waits for a dead launch's processes to be gone (SIGKILL is not instant: a process with a
# GPU context takes a moment to let go of it).
LEFTOVER_WAIT_S = 60
VALIDATION_FRACTION = 0.1


class TrainingError(ServiceError):
    """A run that cannot be started or changed: a version not frozen, a bad config, a finished run."""


def training_config_clean(config: dict[str, Any]) -> dict[str, Any]:
    """The config as TrainConfig reads it back, validated; TrainingError names every setting out of range."""
    from training.ml.config import TrainConfig  # a dataclass module: no torch

    try:
        parsed = TrainConfig.from_dict(config)
    except (TypeError, ValueError) as error:
        raise TrainingError(str(error)) from error
    problems = parsed.problems()
    if problems:
        raise TrainingError(errors=problems)
    return parsed.to_dict()


def training_backbone_check(*, backbone: str, user: AbstractBaseUser | None) -> None:
    """TrainingError unless a run started by `user` may train from `backbone` (training.selectors_backbones): asked
    where a run is created and again by the worker, since a form is not the only way a run comes to be."""
    if not backbone_allowed(backbone, user=user):
        raise TrainingError(errors=[("backbone", BACKBONE_REFUSED)])


def run_dir(run: TrainingRun) -> Path:
    return Path(settings.TRAINING_ROOT) / f"run-{run.pk}"


@transaction.atomic
def training_run_enqueue(
    *, project: Project, version: DatasetVersion, config: dict[str, Any], created_by: AbstractBaseUser | None
) -> TrainingRun:
    """A queued run of `config` on a frozen version of the project; the task is enqueued after the commit."""
    if version.status != DatasetVersion.Status.FROZEN:
        raise TrainingError(f"dataset version {version.name!r} is {version.status}: only a frozen version can be used")
    if not version.projects.filter(pk=project.pk).exists():
        raise TrainingError(f"dataset version {version.name!r} is not a version of {project.name}")
    clean = training_config_clean(config)
    training_backbone_check(backbone=clean["backbone"], user=created_by)
    run = TrainingRun(
        project=project,
        dataset_version=version,
        config=clean,
        created_by_id=created_by.pk if created_by is not None else None,
    )
    run.full_clean(exclude=["created_by"])
    run.save()
    run.output_dir = str(run_dir(run))
    run.save(update_fields=["output_dir"])
    enqueue_on_commit(jobs.TRAINING_RUN, run.pk)
    return run


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """A queued run is cancelled at once; a running one is asked to stop (the trainer checks between steps)."""
    queued = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.CANCELLED, cancel_requested=True, finished_at=timezone.now()
    )
    if not queued:
        asked = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(cancel_requested=True)
        if not asked:
            run.refresh_from_db()
            raise TrainingError(f"run {run.pk} is {run.status}; only a queued or running run can be cancelled")
    run.refresh_from_db()
    return run


def training_run_resume(*, run: TrainingRun) -> TrainingRun:
    """Send the task of a queued or running run again, for a run whose worker died: Redis redelivers an
    unacknowledged task only after the visibility timeout (hours). Refused while a live worker holds the run's
    lock; if one takes it meanwhile, the extra delivery finds the lock taken and leaves the run alone.

    The watchdog (training.services.recovery) does this by itself for a running run; this is the manual way, for
    a queued run whose task was lost too. It marks the run as sent again (recovered_at), so the watchdog waits
    for a worker to take it rather than sending it once more, and is not counted against CONCORD_MAX_RECOVERIES.
    """
    if run.status not in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING):
        raise TrainingError(f"run {run.pk} is {run.status}; only a queued or running run can be resumed")
    with job_lock(locks.TRAINING, run.pk) as free:
        if not free:
            raise TrainingError(f"run {run.pk} is running on a live worker")
        TrainingRun.objects.filter(pk=run.pk).update(recovered_at=Now())
    run_log(run, "resume requested")
    enqueue_on_commit(jobs.TRAINING_RUN, run.pk)
    return run


def run_log(run: TrainingRun, message: str) -> None:
    """Append a line to the run's log, keeping its last LOG_MAX_CHARS characters (in SQL: no read-modify-write)."""
    line = f"{timezone.now():%Y-%m-%d %H:%M:%S} {message}\n"
    TrainingRun.objects.filter(pk=run.pk).update(log=Right(Concat("log", Value(line)), LOG_MAX_CHARS))


def run_phase(run: TrainingRun, message: str) -> None:
    """Say on the run's row what its worker is doing now (the run's page shows it while no step is counted), and
    in its log; a word from the worker, so its heartbeat too."""
    TrainingRun.objects.filter(pk=run.pk).update(phase=message[:200], heartbeat_at=timezone.now())
    run_log(run, message)


def training_run_execute(*, run: TrainingRun) -> TrainingRun:
    """Train a queued run, or resume one whose worker died. Safe to deliver twice (see the module's doc)."""
    with job_lock(locks.TRAINING, run.pk) as mine:
        active = [TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]
        claimed = mine and TrainingRun.objects.filter(pk=run.pk, status__in=active).update(
            status=TrainingRun.Status.RUNNING,
            started_at=Coalesce("started_at", Now()),
            heartbeat_at=Now(),
            error="",
            phase="starting on a worker",
        )
        if not claimed:
            logger.info("Training run %s is running elsewhere or has ended; leaving it alone", run.pk)
            run.refresh_from_db()
            return run
        run.refresh_from_db()
        try:
            _execute_claimed(run)
        except Exception as error:
            logger.exception("Training run %s failed", run.pk)
            run_log(run, traceback.format_exc()[-4000:])
            TrainingRun.objects.filter(pk=run.pk).update(
                status=TrainingRun.Status.FAILED, error=f"Training failed: {error}"[:2000], finished_at=timezone.now()
            )
            raise
    run.refresh_from_db()
    return run


def _execute_claimed(run: TrainingRun) -> None:
    from training.ml.config import TrainConfig

    out = Path(run.output_dir or run_dir(run))
    out.mkdir(parents=True, exist_ok=True)
    config = TrainConfig.from_dict(run.config)
    resumed_from = checkpoint_step(out, steps_per_member=run.total_steps // config.ensemble_size)
    # Points reported after the checkpoint will be reported again by the resumed trainer; none before a new start.
    run.history = [p for p in run.history or [] if resumed_from and p.get("step", 0) <= resumed_from]
    TrainingRun.objects.filter(pk=run.pk).update(step=resumed_from, history=run.history)
    where = f"pid {os.getpid()} on {socket.gethostname()}"
    run_log(run, f"claimed by {where}; " + (f"resuming from step {resumed_from}" if resumed_from else "starting"))
    if run.cancel_requested:
        _finish_cancelled(run)
        return
    # Again here: the run may have been written by other means than training_run_enqueue, or its creator may no
    # longer administer the project whose model it names.
    training_backbone_check(backbone=config.backbone, user=run.created_by)
    run_phase(run, f"exporting the pairs of {run.dataset_version.name}")
    splits = training_examples(version=run.dataset_version, out=out, seed=config.seed)
    run_log(run, f"{len(splits.train)} train, {len(splits.validation)} validation, {len(splits.test)} held-out pairs")
    result = _train(run, config, splits.train, splits.validation, out)
    if result.stopped:
        _finish_cancelled(run)
        return
    model_dir = Path(result.model_dir or out)
    run_phase(run, f"evaluating on {len(splits.test or splits.validation)} held-out pairs")
    metrics = _evaluate(model_dir, splits, config, result)
    metrics["resumed_from"] = resumed_from
    _finish_succeeded(run, model_dir, metrics)


def checkpoint_step(out: Path, *, steps_per_member: int = 0) -> int:
    """The step of the resumable checkpoint the trainer left in `out` (training.ml.checkpoint), or 0; counted
    across an ensemble's members (the trainer counts each member's steps from 0) given the steps per member."""
    try:
        state = json.loads((out / "checkpoint" / "state.json").read_text())
    except (OSError, ValueError):
        return 0
    step = state.get("step") if isinstance(state, dict) else None
    member = state.get("member") if isinstance(state, dict) else None
    if not isinstance(step, int) or step <= 0:
        return 0
    return step + (member * steps_per_member if isinstance(member, int) else 0)


@dataclass(frozen=True)
class TrainingSplits:
    train: list["PairExample"]
    validation: list["PairExample"]
    test: list["PairExample"]


def training_examples(*, version: DatasetVersion, out: Path, seed: int) -> TrainingSplits:
    """Train, validation and held-out (test) pairs from the version's rows with every field (the "fine" export:
    context, weights and per-response ratings included), written afresh to `out` each attempt. Without a
    validation split, one is cut from the training pairs by prompt."""
    from training.ml.data import load_examples, split_by_prompt

    path = out / "data.jsonl"
    partial_path = out / "data.jsonl.tmp"
    partial_path.unlink(missing_ok=True)
    version_export(version=version, format="fine", path=partial_path)
    partial_path.replace(path)
    by_split: dict[str, list[PairExample]] = {"train": [], "validation": [], "test": []}
    for example in load_examples(path):
        by_split.setdefault(example.split or "train", []).append(example)
    train_examples, eval_examples = by_split["train"], by_split["validation"]
    if not eval_examples:
        train_examples, eval_examples = split_by_prompt(
            train_examples, validation_fraction=VALIDATION_FRACTION, seed=seed
        )
    if not train_examples:
        raise TrainingError("the dataset version has no training pairs")
    return TrainingSplits(train_examples, eval_examples, by_split["test"])


def _train(
    run: TrainingRun, config: Any, train_examples: list["PairExample"], eval_examples: list["PairExample"], out: Path
) -> "TrainResult":
    from training.ml.trainer import train

    reporter = _Reporter(run, members=config.ensemble_size)
    if training_in_processes():
        result = _train_in_processes(run, config, train_examples, eval_examples, out, reporter)
    else:
        result = train(
            config,
            train_examples,
            eval_examples,
            output_dir=out,
            progress=reporter.progress,
            should_stop=reporter.should_stop,
            phase=reporter.phase,
        )
    reporter.flush()
    run_log(run, f"trained {result.steps} steps in {result.seconds:.1f}s" + (" (stopped)" if result.stopped else ""))
    return result


def training_in_processes() -> bool:
    """Whether runs train through torchrun (CONCORD_TRAIN_PROCESSES, CONCORD_TRAIN_NODES) rather than in the
    task's own process."""
    return settings.CONCORD_TRAIN_PROCESSES != "1" or settings.CONCORD_TRAIN_NODES > 1


def _train_in_processes(
    run: TrainingRun,
    config: Any,
    train_examples: list["PairExample"],
    eval_examples: list["PairExample"],
    out: Path,
    reporter: "_Reporter",
) -> "TrainResult":
    """Train through torchrun (training.ml.launch), relaying rank 0's events to the run until torchrun exits."""
    from training.ml import launch

    _stop_leftover_ranks(out)
    spec = launch.spec_write(
        out,
        config=config.to_dict(),
        train_examples=train_examples,
        eval_examples=eval_examples,
        sharding=settings.CONCORD_TRAIN_SHARDING,
    )
    command = launch.torchrun_command(
        spec,
        processes=settings.CONCORD_TRAIN_PROCESSES,
        nodes=settings.CONCORD_TRAIN_NODES,
        endpoint=settings.CONCORD_TRAIN_RDZV_ENDPOINT,
        run_id=f"concord-run-{run.pk}",
        max_restarts=settings.CONCORD_TRAIN_MAX_RESTARTS,
    )
    run_log(run, "starting " + " ".join(command[1:]))
    with (out / "torchrun.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603  (a list from settings and a path: no shell, nothing a user typed)
            command,
            cwd=settings.BASE_DIR,
            env=_rank_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=launch.die_with_parent,  # in torchrun's process, before it starts
        )
    (out / "torchrun.pid").write_text(str(process.pid))
    events, result = launch.EventReader(out), None
    try:
        while True:
            exited = process.poll() is not None
            for event in events.new():
                result = _relay(run, reporter, event) or result
            if exited:
                break
            if reporter.should_stop():
                (out / launch.STOP).touch()
            time.sleep(EVENTS_POLL_S)
    finally:
        if process.poll() is None:  # this task is failing: its ranks must not train on unwatched
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if process.returncode != 0 or result is None:
        raise TrainingError(f"torchrun exited with status {process.returncode}:\n{_log_tail(out / 'torchrun.log')}")
    return result


def _relay(run: TrainingRun, reporter: "_Reporter", event: dict[str, Any]) -> "TrainResult | None":
    """One event of rank 0 to the run's row; the result, when it is the result."""
    from training.ml.trainer import TrainProgress, TrainResult

    fields = {key: value for key, value in event.items() if key != "kind"}
    if event["kind"] == "start":
        restart = fields.get("restart", 0)
        what = f"a rank died: torchrun restarted the ranks from the last checkpoint (restart {restart})"
        started = f"{fields.get('world')} processes started" + (" (FSDP)" if fields.get("sharded") else "")
        run_log(run, what if restart else started)
    elif event["kind"] == "phase":
        reporter.phase(str(fields["message"]))
    elif event["kind"] == "progress":
        reporter.progress(TrainProgress(**fields))
    elif event["kind"] == "result":
        model_dir = fields.pop("model_dir", None)
        return TrainResult(**fields, model_dir=Path(model_dir) if model_dir else None)
    return None


def _rank_environment() -> dict[str, str]:
    """The ranks' environment: on CPUs, the cores shared out among the local ranks (torchrun would give each one
    thread)."""
    env = dict(os.environ)
    processes = settings.CONCORD_TRAIN_PROCESSES
    if "OMP_NUM_THREADS" not in env and processes.isdigit():
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(processes)))
    return env


def _stop_leftover_ranks(out: Path) -> None:
    """End a torchrun, and ranks, that this run's folder names and that still run on this machine (their task's
    process died before the kernel could take them along), and wait until they are gone: two trainers must never
    write one folder, nor share a GPU's memory."""
    from training.ml import launch

    leftovers = [(out / "torchrun.pid", b"torch.distributed.run")]
    leftovers += [(path, b"training.ml.launch") for path in sorted((out / launch.RANKS).glob("rank-*.pid"))]
    stopped = [pid for path, marker in leftovers if (pid := _kill_if_running(path, marker)) is not None]
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while any(Path(f"/proc/{pid}").exists() for pid in stopped) and time.monotonic() < deadline:
        time.sleep(0.1)


def _kill_if_running(pid_file: Path, marker: bytes) -> int | None:
    """SIGKILL the process a pid file names if it still runs `marker` (not a stranger that reused the pid)."""
    try:
        pid = int(pid_file.read_text())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if marker not in command:
        return None
    logger.warning("Stopping pid %s (%s) left behind in %s", pid, marker.decode(), pid_file.parent)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return pid


def _log_tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
    except OSError:
        return "(no log)"


class _Reporter:
    """The trainer's progress and should_stop callbacks, writing to (and reading from) the run's row at most
    once per PROGRESS_INTERVAL_S."""

    def __init__(self, run: TrainingRun, *, members: int) -> None:
        self.run = run
        self.run_id = run.pk
        self.members = members
        self.history: list[dict[str, Any]] = list(run.history or [])
        self.pending: dict[str, Any] | None = None
        self.last_write = 0.0
        self.last_check = 0.0
        self.stop = False

    def progress(self, update: "TrainProgress") -> None:
        # An ensemble's members train one after another, each counting from 0: the run counts them all.
        step = update.member * update.total_steps + update.step
        if self.history and step < self.history[-1]["step"]:
            # Restarted from a checkpoint (torchrun's ranks): the steps after it are trained, and reported, again.
            self.history = [p for p in self.history if p["step"] < step]
        point = {"step": step, "loss": _number(update.loss), "eval_accuracy": _number(update.eval_accuracy)}
        if self.history and self.history[-1]["step"] == step:
            # An evaluation reported at the step a loss was: merge them.
            merged = {k: v if v is not None else self.history[-1].get(k) for k, v in point.items()}
            self.history[-1] = merged
        else:
            self.history.append(point)
        if len(self.history) > HISTORY_MAX_POINTS:
            self.history = thin_history(self.history)
        # Merged into what is not written yet, so an evaluation reported between two writes is kept.
        self.pending = {
            **(self.pending or {}),
            "step": step,
            "total_steps": update.total_steps * self.members,
            "epoch": float(update.epoch),
            "loss": _number(update.loss),
            "tokens_per_second": _number(update.tokens_per_second),
        }
        if update.eval_accuracy is not None:
            self.pending["eval_accuracy"] = _number(update.eval_accuracy)
        if time.monotonic() - self.last_write >= PROGRESS_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        if self.pending is None:
            return
        TrainingRun.objects.filter(pk=self.run_id).update(
            **self.pending, history=self.history, heartbeat_at=timezone.now()
        )
        self.pending = None
        self.last_write = time.monotonic()

    def phase(self, message: str) -> None:
        """Written at once, after any progress not written yet: phases are few, and each says the next wait."""
        self.flush()
        run_phase(self.run, message)

    def should_stop(self) -> bool:
        if not self.stop and time.monotonic() - self.last_check >= PROGRESS_INTERVAL_S:
            self.last_check = time.monotonic()
            self.stop = TrainingRun.objects.filter(pk=self.run_id, cancel_requested=True).exists()
        return self.stop


def thin_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every other point, keeping the last: the curve keeps its shape in half the points."""
    return history[:-1:2] + history[-1:]


def _number(value: Any) -> float | None:
    """A float JSON can hold (NaN and infinities become None)."""
    if value is None:
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None


def _evaluate(model_dir: Path, splits: TrainingSplits, config: Any, result: "TrainResult") -> dict[str, Any]:
    """Held-out metrics on the test split (the validation split when there is none: heldout_split says which),
    with the model's probabilities calibrated on the validation split and attribute errors beside the training
    means'. Without a test split the calibration is fitted on the very pairs it is measured on, so the model
    is promoted only when the admin insists (training.services.scoring.promotion_warning)."""
    from training.ml.evaluate import attribute_means, evaluate, length_baseline_accuracy

    heldout = splits.test or splits.validation
    metrics: dict[str, Any] = {
        "train_loss": _number(result.train_loss),
        "steps": result.steps,
        "seconds": _number(result.seconds),
        "tokens_per_second": _number(result.tokens_per_second),
        "eval": result.eval,
        "heldout_pairs": len(heldout),
        "heldout_split": "test" if splits.test else "validation",
    }
    if heldout:
        metrics["heldout"] = evaluate(
            model_dir,
            heldout,
            batch_size=config.batch_size,
            max_length=config.max_length,
            calibration=splits.validation,
            attribute_means=attribute_means(splits.train, config.attributes),
        )
        metrics["length_baseline_accuracy"] = length_baseline_accuracy(heldout)
    return metrics


@transaction.atomic
def _finish_succeeded(run: TrainingRun, model_dir: Path, metrics: dict[str, Any]) -> None:
    run.refresh_from_db()
    heldout = metrics.get("heldout") or {}
    run.status = TrainingRun.Status.SUCCEEDED
    run.metrics = metrics
    run.finished_at = timezone.now()
    if heldout.get("accuracy") is not None:
        run.eval_accuracy = heldout["accuracy"]
    run.save(update_fields=["status", "metrics", "finished_at", "eval_accuracy"])
    version = run.dataset_version
    card = {
        "dataset_version": {"id": version.pk, "name": version.name, "content_hash": version.content_hash},
        "config": run.config,
        "metrics": metrics,
        "code_version": code_version(),
        "created": timezone.now().isoformat(),
        "run": run.pk,
    }
    RewardModel.objects.get_or_create(
        run=run, defaults={"project": run.project, "path": str(model_dir), "model_card": card}
    )
    run_log(run, f"succeeded; held-out accuracy {heldout.get('accuracy')}")


def _finish_cancelled(run: TrainingRun) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.CANCELLED, finished_at=timezone.now())
    run_log(run, "cancelled")
