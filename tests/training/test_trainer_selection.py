"""Choosing each member's model by its accuracy on the evaluation pairs (TrainConfig.select_best), across a stop
and a kill, and bootstrap ensembles whose members train on their own resample (TrainConfig.ensemble_kind).

The accuracies are scripted (pair_accuracy is replaced), so a test decides which evaluation is the best; the
script keeps a copy of the weights it was shown, which the saved model must equal."""

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from training.ml import trainer
from training.ml.config import TrainConfig
from training.ml.data import PairExample
from training.ml.model import load_reward_model
from training.ml.tiny import toy_pairs
from training.ml.trainer import TrainProgress, member_examples, run_fingerprint, train

TRAIN = toy_pairs(16, seed=1)  # two steps an epoch at batch size 8
EVAL = toy_pairs(8, seed=2)

Weights = dict[str, torch.Tensor]


def config_for(backbone: Path, **changes: Any) -> TrainConfig:
    settings: dict = {
        "backbone": str(backbone),
        "epochs": 3,
        "batch_size": 8,
        "learning_rate": 1e-2,
        "max_length": 32,
        "logging_every": 1,
        "select_best": True,
    }
    return replace(TrainConfig(**settings), **changes)


class ScriptedAccuracy:
    """Stands in for trainer.pair_accuracy: answers the scripted accuracies in turn, and keeps the weights of
    every model it evaluates."""

    def __init__(self, accuracies: Sequence[float]) -> None:
        self.accuracies = list(accuracies)
        self.weights: list[Weights] = []

    def __call__(self, model: torch.nn.Module, tokenizer: object, examples: object, **_: object) -> float:
        self.weights.append({name: p.detach().clone() for name, p in model.named_parameters()})
        return self.accuracies.pop(0)


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> ScriptedAccuracy:
    scripted = ScriptedAccuracy([])
    monkeypatch.setattr(trainer, "pair_accuracy", scripted)
    return scripted


def weights(model_dir: Path) -> Weights:
    model, _ = load_reward_model(model_dir)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def same(a: Weights, b: Weights) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def metadata(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "concord_reward.json").read_text())


def checkpoint_state(output_dir: Path) -> dict[str, Any]:
    return json.loads((output_dir / "checkpoint" / "state.json").read_text())


def best_steps(output_dir: Path, member: int = 0) -> list[str]:
    return sorted(p.name for p in (output_dir / f"best-{member}").glob("*"))


class Killed(Exception):
    """The worker dying mid-run: no checkpoint is written on the way out."""


# --- the setting ---


def test_the_settings_are_validated() -> None:
    with pytest.raises(ValueError, match=r"^ensemble_kind:"):
        TrainConfig(backbone="/m", ensemble_kind="bagging").validate()
    TrainConfig(backbone="/m", ensemble_kind="bootstrap", select_best=True).validate()


def test_new_settings_at_their_default_keep_an_older_run_s_fingerprint() -> None:
    # A run stopped before these settings existed must still resume: its checkpoint's fingerprint lacks them.
    import hashlib

    config = TrainConfig(backbone="/m")
    older = {k: v for k, v in config.to_dict().items() if k not in ("select_best", "ensemble_kind", "dropout")}
    assert config.fingerprint() == hashlib.sha256(json.dumps(older, sort_keys=True).encode()).hexdigest()
    assert replace(config, select_best=True).fingerprint() != config.fingerprint()
    assert replace(config, ensemble_kind="bootstrap").fingerprint() != config.fingerprint()
    assert replace(config, dropout=True).fingerprint() != config.fingerprint()


def test_with_select_best_the_evaluation_pairs_belong_to_the_run() -> None:
    plain = TrainConfig(backbone="/m")
    assert run_fingerprint(plain, TRAIN, EVAL) == run_fingerprint(plain, TRAIN, EVAL[:4])
    selecting = replace(plain, select_best=True)
    assert run_fingerprint(selecting, TRAIN, EVAL) != run_fingerprint(selecting, TRAIN, EVAL[:4])
    assert run_fingerprint(selecting, TRAIN, EVAL) == run_fingerprint(selecting, TRAIN, list(EVAL))


# --- select_best ---


@pytest.mark.parametrize(
    ("accuracies", "best"),
    [
        ([0.5, 0.875, 0.625], 1),  # the second epoch's model
        ([0.875, 0.875, 0.5], 1),  # a tie goes to the later model
        ([0.875, 0.5, 0.875], 2),  # ... the last one too
        ([0.25, 0.5, 0.75], 2),
    ],
)
def test_the_saved_model_is_the_best_epoch_s(
    accuracies: list[float], best: int, script: ScriptedAccuracy, backbones: dict[str, Path], tmp_path: Path
) -> None:
    script.accuracies = list(accuracies)
    result = train(config_for(backbones["bert"]), TRAIN, EVAL, output_dir=tmp_path)
    assert script.accuracies == []  # one evaluation per epoch, after its last step
    assert result.steps == 6
    saved = weights(tmp_path / "model")
    assert same(saved, script.weights[best])
    assert sum(same(saved, w) for w in script.weights) == 1  # the epochs' models differ: the check can fail
    info = metadata(tmp_path / "model")
    selected = (info["steps"], info["selected_step"], info["selected_eval_accuracy"])
    assert selected == (6, 2 * (best + 1), accuracies[best])
    assert not (tmp_path / "best-0").exists()
    assert not (tmp_path / "checkpoint").exists()


def test_eval_every_adds_evaluations_between_epoch_ends(
    script: ScriptedAccuracy, backbones: dict[str, Path], tmp_path: Path
) -> None:
    # eval_every=3 over 3 epochs of 2 steps: steps 2, 3, 4, 6 (epoch ends and every third step; 6 is both, once).
    script.accuracies = [0.5, 0.75, 0.625, 0.5]
    reports: list[TrainProgress] = []
    config = config_for(backbones["bert"], eval_every=3)
    train(config, TRAIN, EVAL, output_dir=tmp_path, progress=reports.append)
    assert script.accuracies == []
    assert len(script.weights) == 4
    assert same(weights(tmp_path / "model"), script.weights[1])
    assert metadata(tmp_path / "model")["selected_step"] == 3
    # Reports carry the accuracy of a step that was evaluated, however it came to be evaluated.
    assert {r.step: r.eval_accuracy for r in reports if r.eval_accuracy is not None} == {
        2: 0.5,
        3: 0.75,
        4: 0.625,
        6: 0.5,
    }


def test_the_real_accuracy_selects_and_is_recorded(backbones: dict[str, Path], tmp_path: Path) -> None:
    result = train(config_for(backbones["bert"]), TRAIN, EVAL, output_dir=tmp_path)
    info = metadata(tmp_path / "model")
    assert info["selected_step"] in (2, 4, 6)
    # The final evaluation is of the saved model: the selected one.
    assert info["selected_eval_accuracy"] == pytest.approx(result.eval["accuracy"])


def test_without_evaluation_pairs_the_last_model_is_kept(
    script: ScriptedAccuracy, backbones: dict[str, Path], tmp_path: Path
) -> None:
    train(config_for(backbones["bert"], epochs=1), TRAIN, [], output_dir=tmp_path)
    assert script.weights == []
    info = metadata(tmp_path / "model")
    assert (info["selected_step"], info["selected_eval_accuracy"]) == (2, None)
    assert not (tmp_path / "best-0").exists()


@pytest.mark.parametrize("stop_at", [4, 5])  # at an epoch's last step, whose evaluation the checkpoint must hold
def test_a_stopped_run_resumes_with_its_best_model(
    stop_at: int, script: ScriptedAccuracy, backbones: dict[str, Path], tmp_path: Path
) -> None:
    config = config_for(backbones["bert"], epochs=4, checkpoint_every=100)
    steps: list[int] = []
    script.accuracies = [0.5, 0.875]  # steps 2 and 4
    stopped = train(
        config,
        TRAIN,
        EVAL,
        output_dir=tmp_path,
        progress=lambda p: steps.append(p.step),
        should_stop=lambda: steps[-1] >= stop_at,
    )
    assert stopped.stopped
    assert stopped.steps == stop_at
    assert checkpoint_state(tmp_path)["extra"]["best"] == {"step": 4, "accuracy": 0.875}
    assert best_steps(tmp_path) == ["step-4"]
    assert same(weights(tmp_path / "best-0" / "step-4"), script.weights[1])

    steps.clear()
    script.accuracies = [0.625, 0.75]  # steps 6 and 8: better than step 2, not than step 4
    resumed = train(config, TRAIN, EVAL, output_dir=tmp_path, progress=lambda p: steps.append(p.step))
    assert steps[0] == stop_at + 1
    assert resumed.steps == 8
    assert script.accuracies == []
    saved = weights(tmp_path / "model")
    assert same(saved, script.weights[1])
    assert not same(saved, script.weights[3])
    info = metadata(tmp_path / "model")
    assert (info["steps"], info["selected_step"], info["selected_eval_accuracy"]) == (8, 4, 0.875)
    assert not (tmp_path / "best-0").exists()
    assert not (tmp_path / "checkpoint").exists()


def test_a_killed_run_keeps_the_best_model_its_checkpoint_names(
    script: ScriptedAccuracy, backbones: dict[str, Path], tmp_path: Path
) -> None:
    # Checkpoints at steps 3 and 6. Step 4's better model is found after the step-3 checkpoint, and the run dies
    # at step 5 before another: the resumed run trains steps 4.. again, and (non-deterministic kernels on a GPU,
    # say) step 4 now scores worse. The best is step 2's, which the checkpoint names, not the newer one on disk.
    config = config_for(backbones["bert"], epochs=4, checkpoint_every=3)
    script.accuracies = [0.5, 0.875]

    def die_at_step_5(report: TrainProgress) -> None:
        if report.step == 5:
            raise Killed

    with pytest.raises(Killed):
        train(config, TRAIN, EVAL, output_dir=tmp_path, progress=die_at_step_5)
    assert checkpoint_state(tmp_path)["step"] == 3
    assert checkpoint_state(tmp_path)["extra"]["best"] == {"step": 2, "accuracy": 0.5}
    assert best_steps(tmp_path) == ["step-2", "step-4"]

    script.accuracies = [0.25, 0.375, 0.375]  # steps 4, 6 and 8 of the resumed run
    train(config, TRAIN, EVAL, output_dir=tmp_path)
    assert script.accuracies == []
    assert same(weights(tmp_path / "model"), script.weights[0])
    assert metadata(tmp_path / "model")["selected_step"] == 2
    assert not (tmp_path / "best-0").exists()


def test_each_member_of_an_ensemble_selects_its_own(
    script: ScriptedAccuracy, backbones: dict[str, Path], tmp_path: Path
) -> None:
    script.accuracies = [0.75, 0.5, 0.5, 0.75]  # member 0: steps 2, 4; member 1: steps 2, 4
    train(config_for(backbones["bert"], epochs=2, ensemble_size=2), TRAIN, EVAL, output_dir=tmp_path)
    assert same(weights(tmp_path / "member-0"), script.weights[0])
    assert same(weights(tmp_path / "member-1"), script.weights[3])
    assert [metadata(tmp_path / f"member-{m}")["selected_step"] for m in (0, 1)] == [2, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["member-0", "member-1"]


# --- bootstrap ensembles ---


def positions(sample: Sequence[PairExample]) -> list[int]:
    index = {id(e): i for i, e in enumerate(TRAIN)}
    return [index[id(e)] for e in sample]


def test_bootstrap_members_draw_their_own_resample_and_seeds_members_see_everything() -> None:
    config = TrainConfig(backbone="/m", ensemble_size=3, ensemble_kind="bootstrap", seed=7)
    drawn = [positions(member_examples(config, TRAIN, m)) for m in range(3)]
    assert all(len(d) == len(TRAIN) for d in drawn)
    assert all(len(set(d)) < len(TRAIN) for d in drawn)  # with replacement: some twice, some not at all
    assert len({tuple(d) for d in drawn}) == 3
    assert drawn == [positions(member_examples(config, TRAIN, m)) for m in range(3)]  # the same every time
    assert positions(member_examples(replace(config, seed=8), TRAIN, 0)) == drawn[1]  # seeded by seed + member
    seeds = replace(config, ensemble_kind="seeds")
    assert all(member_examples(seeds, TRAIN, m) is TRAIN for m in range(3))
    assert member_examples(replace(config, ensemble_size=1), TRAIN, 0) is TRAIN


@pytest.fixture
def trained_on(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The training examples of every member run, as positions in TRAIN, in order."""
    seen: list[list[int]] = []
    encode = trainer.encode_pairs

    def recording(examples: Sequence[PairExample], *args: Any, **kwargs: Any) -> Any:
        seen.append(positions(examples))
        return encode(examples, *args, **kwargs)

    monkeypatch.setattr(trainer, "encode_pairs", recording)
    return seen


@pytest.mark.parametrize("kind", ["seeds", "bootstrap"])
def test_members_train_on_their_examples(
    kind: str, trained_on: list[list[int]], backbones: dict[str, Path], tmp_path: Path
) -> None:
    config = config_for(backbones["bert"], epochs=1, ensemble_size=2, ensemble_kind=kind, select_best=False)
    train(config, TRAIN, EVAL, output_dir=tmp_path)
    everything = list(range(len(TRAIN)))
    if kind == "seeds":
        assert trained_on == [everything, everything]
    else:
        assert trained_on == [positions(member_examples(config, TRAIN, m)) for m in (0, 1)]
        assert trained_on[0] != trained_on[1]
        assert all(sorted(set(t)) != everything for t in trained_on)
    assert metadata(tmp_path / "member-1")["config"]["ensemble_kind"] == kind


def test_a_resumed_bootstrap_member_draws_the_same_resample(
    trained_on: list[list[int]], backbones: dict[str, Path], tmp_path: Path
) -> None:
    config = config_for(backbones["bert"], epochs=1, ensemble_size=2, ensemble_kind="bootstrap", select_best=False)
    reports: list[TrainProgress] = []
    stopped = train(
        config,
        TRAIN,
        EVAL,
        output_dir=tmp_path,
        progress=reports.append,
        should_stop=lambda: reports[-1].member == 1,
    )
    assert stopped.stopped
    assert len(trained_on) == 2
    reports.clear()
    train(config, TRAIN, EVAL, output_dir=tmp_path, progress=reports.append)
    # Member 0 is done (its fingerprint still matches) and member 1 goes on from its checkpoint, on its resample.
    assert (reports[0].member, reports[0].step) == (1, 2)
    assert trained_on[2:] == [trained_on[1]]
