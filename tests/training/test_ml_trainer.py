"""Training tiny random models on a toy task: the loss is finite and goes down, every trainable parameter
changes, each objective runs, a stopped run resumes to the same weights as one that never stopped, dropout is off
unless asked for, and `auto` precision is bf16 where the device has it."""

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from training.ml import trainer as trainer_module
from training.ml.config import OBJECTIVES, TrainConfig
from training.ml.model import disable_dropout, load_reward_model
from training.ml.scoring import model_outputs, score_pairs
from training.ml.tiny import toy_pairs
from training.ml.trainer import TrainProgress, freeze_shift_invariant, resolve_precision, train

TRAIN = toy_pairs(48, seed=1)
EVAL = toy_pairs(16, seed=2)


def config_for(backbone: Path, **changes: object) -> TrainConfig:
    settings: dict = {
        "backbone": str(backbone),
        "epochs": 3,
        "batch_size": 8,
        "learning_rate": 1e-2,
        "max_length": 32,
        "logging_every": 1,
        "attributes": ("helpful", "correct"),
    }
    return replace(TrainConfig(**settings), **changes)


def mean_bt_loss(model_dir: Path, config: TrainConfig, *, seed: int | None = None) -> float:
    """The BT loss on the training pairs of a saved model, or of the freshly initialised one (seed given)."""
    if seed is not None:
        torch.manual_seed(seed)
    model, tokenizer = load_reward_model(model_dir, num_outputs=config.num_outputs)
    items = [(e.prompt, e.chosen) for e in TRAIN] + [(e.prompt, e.rejected) for e in TRAIN]
    out = model_outputs(model.eval(), tokenizer, items)
    delta = out[: len(TRAIN), 0] - out[len(TRAIN) :, 0]
    return float(np.log1p(np.exp(-delta)).mean())


def state(model_dir: Path, *, seed: int | None = None, config: TrainConfig | None = None) -> dict[str, torch.Tensor]:
    """The trainable parameters of a saved model, or of the freshly initialised one (seed and config given)."""
    if seed is not None:
        torch.manual_seed(seed)
    model, _ = load_reward_model(model_dir)
    if config is not None:
        freeze_shift_invariant(model, config)
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_it_learns_the_toy_task_and_changes_every_parameter(
    arch: str, backbones: dict[str, Path], tmp_path: Path
) -> None:
    config = config_for(backbones[arch], seed=5)
    reports: list[TrainProgress] = []
    result = train(config, TRAIN, EVAL, output_dir=tmp_path, progress=reports.append)
    assert not result.stopped
    assert result.steps == 18 == reports[-1].total_steps
    assert all(math.isfinite(r.loss) for r in reports)
    assert math.isfinite(result.train_loss)
    assert mean_bt_loss(tmp_path / "model", config) < mean_bt_loss(backbones[arch], config, seed=5) - 0.1
    before, after = state(backbones[arch], seed=5, config=config), state(tmp_path / "model")
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    # GPT-2's score head reads its final LayerNorm's output, so that norm's bias adds one constant to every reward
    # and Bradley-Terry gives it no gradient: at most float rounding moves it (in bf16 the halves cancel exactly).
    shift_invariant = {"gpt2": ["transformer.ln_f.bias"]}.get(arch, [])
    assert [name for name in unchanged if name not in shift_invariant] == []
    assert result.eval["accuracy"] >= 0.75
    assert result.model_dir == tmp_path / "model"
    assert not (tmp_path / "checkpoint").exists()


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_each_objective_trains(objective: str, backbones: dict[str, Path], tmp_path: Path) -> None:
    config = config_for(backbones["bert"], objective=objective, epochs=1, batch_size=16)
    reports: list[TrainProgress] = []
    result = train(config, TRAIN, EVAL, output_dir=tmp_path, progress=reports.append)
    assert result.steps == 3
    assert all(math.isfinite(r.loss) and r.loss > 0 for r in reports)
    outputs = json.loads((tmp_path / "model" / "concord_reward.json").read_text())
    assert outputs["objective"] == objective
    if objective in ("regression", "combined"):
        assert set(result.eval["attribute_rmse"]) == {"helpful", "correct"}


def test_a_stopped_run_resumes_at_its_step_to_the_same_weights(backbones: dict[str, Path], tmp_path: Path) -> None:
    # Dropout is on (the backbone's 0.1), so equal weights also show that the random generator was restored.
    config = config_for(
        backbones["bert"], epochs=2, batch_size=4, gradient_accumulation=2, checkpoint_every=4, dropout=True
    )
    straight = train(config, TRAIN, [], output_dir=tmp_path / "straight")
    assert straight.steps == 12

    steps: list[int] = []
    stopped = train(
        config,
        TRAIN,
        [],
        output_dir=tmp_path / "resumed",
        progress=lambda p: steps.append(p.step),
        should_stop=lambda: len(steps) >= 7,
    )
    assert stopped.stopped
    assert stopped.steps == 7
    assert not (tmp_path / "resumed" / "model").exists()
    saved = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert (saved["step"], saved["epoch"], saved["next_batch"]) == (7, 1, 2)

    steps.clear()
    resumed = train(config, TRAIN, [], output_dir=tmp_path / "resumed", progress=lambda p: steps.append(p.step))
    assert not resumed.stopped
    assert steps[0] == 8
    assert resumed.steps == 12
    a, b = state(tmp_path / "straight" / "model"), state(tmp_path / "resumed" / "model")
    assert all(torch.equal(a[name], b[name]) for name in a)

    # Delivered once more, a finished run trains nothing and reports what it had.
    weights = tmp_path / "resumed" / "model" / "model.safetensors"
    written = weights.stat().st_mtime_ns
    again = train(config, TRAIN, [], output_dir=tmp_path / "resumed")
    assert (again.steps, again.train_loss) == (12, resumed.train_loss)
    assert weights.stat().st_mtime_ns == written


def test_a_checkpoint_of_another_configuration_is_not_resumed(backbones: dict[str, Path], tmp_path: Path) -> None:
    config = config_for(backbones["bert"], epochs=1, batch_size=8)
    train(config, TRAIN, [], output_dir=tmp_path, should_stop=lambda: True)
    assert (tmp_path / "checkpoint").exists()
    steps: list[int] = []
    changed = replace(config, learning_rate=1e-3)
    result = train(changed, TRAIN, [], output_dir=tmp_path, progress=lambda p: steps.append(p.step))
    assert steps[0] == 1
    assert result.steps == 6


def test_should_stop_is_checked_every_step(backbones: dict[str, Path], tmp_path: Path) -> None:
    result = train(config_for(backbones["bert"]), TRAIN, EVAL, output_dir=tmp_path, should_stop=lambda: True)
    assert result.stopped
    assert result.steps == 1
    assert result.model_dir is None


def test_an_ensemble_trains_separately_seeded_members(backbones: dict[str, Path], tmp_path: Path) -> None:
    config = config_for(backbones["bert"], epochs=1, batch_size=16, ensemble_size=2)
    result = train(config, TRAIN, EVAL, output_dir=tmp_path)
    assert result.model_dir == tmp_path
    first, second = state(tmp_path / "member-0"), state(tmp_path / "member-1")
    assert not torch.equal(first["classifier.weight"], second["classifier.weight"])
    assert result.eval["ensemble"]["members"] == 2
    [score] = score_pairs(tmp_path, [(EVAL[0].prompt, EVAL[0].chosen, EVAL[0].rejected)])
    assert score.ensemble_std > 0
    assert score.margin == pytest.approx(score.reward_a - score.reward_b, abs=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cuda(precision: str, backbones: dict[str, Path], tmp_path: Path) -> None:
    config = config_for(backbones["bert"], precision=precision, gradient_checkpointing=True)
    result = train(config, TRAIN, EVAL, output_dir=tmp_path)
    assert math.isfinite(result.train_loss)
    assert result.eval["accuracy"] >= 0.75


def test_gradient_checkpointing_gives_the_same_losses(backbones: dict[str, Path], tmp_path: Path) -> None:
    # Recomputed activations are the same numbers: torch's checkpoint replays the random state, dropout too.
    config = config_for(backbones["gpt2"], epochs=1, batch_size=16, dropout=True, precision="fp32")
    plain = train(config, TRAIN, [], output_dir=tmp_path / "plain")
    saved = train(replace(config, gradient_checkpointing=True), TRAIN, [], output_dir=tmp_path / "saved")
    assert plain.train_loss == pytest.approx(saved.train_loss, rel=1e-4)


def test_bradley_terry_trains_from_a_regression_run_s_model(backbones: dict[str, Path], tmp_path: Path) -> None:
    regression = config_for(backbones["bert"], objective="regression", epochs=1, batch_size=16)
    train(regression, TRAIN, EVAL, output_dir=tmp_path / "regression")
    config = config_for(tmp_path / "regression" / "model", objective="bt", epochs=1, batch_size=16)
    result = train(config, TRAIN, EVAL, output_dir=tmp_path / "bt")
    saved = json.loads((tmp_path / "bt" / "model" / "concord_reward.json").read_text())
    assert (saved["objective"], result.steps) == ("bt", 3)
    assert math.isfinite(result.eval["accuracy"])


def without_dropout(backbone: Path, to: Path) -> Path:
    """A copy of the backbone whose config sets every dropout rate to 0."""
    shutil.copytree(backbone, to)
    config = json.loads((to / "config.json").read_text())
    rates = {k: 0.0 for k, v in config.items() if ("dropout" in k or k.endswith("pdrop")) and isinstance(v, float)}
    assert rates, "the backbone has dropout to turn off"
    (to / "config.json").write_text(json.dumps({**config, **rates}))
    return to


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_dropout_is_off_unless_asked_for(arch: str, backbones: dict[str, Path], tmp_path: Path) -> None:
    # Off: the run trains as the same backbone with every dropout rate 0 in its config does, to the bit.
    config = config_for(backbones[arch], epochs=1, batch_size=8, precision="fp32")
    train(config, TRAIN, [], output_dir=tmp_path / "default")
    plain = without_dropout(backbones[arch], tmp_path / "no-dropout-backbone")
    train(replace(config, backbone=str(plain)), TRAIN, [], output_dir=tmp_path / "no-dropout")
    default, zeroed = state(tmp_path / "default" / "model"), state(tmp_path / "no-dropout" / "model")
    assert all(torch.equal(default[name], zeroed[name]) for name in default)
    # Asked for, the backbone's dropout (0.1) is on, and the same seed trains other weights.
    train(replace(config, dropout=True), TRAIN, [], output_dir=tmp_path / "dropout")
    kept = state(tmp_path / "dropout" / "model")
    assert not all(torch.equal(default[name], kept[name]) for name in default)


def test_disable_dropout_reaches_the_rates_attention_kernels_read(backbones: dict[str, Path], tmp_path: Path) -> None:
    # Llama keeps its attention dropout as a float that it hands to the kernel, not as an nn.Dropout.
    folder = tmp_path / "llama"
    shutil.copytree(backbones["llama"], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.5}))
    model, tokenizer = load_reward_model(folder)
    batch = tokenizer(["the answer is yes because it is good"] * 4, return_tensors="pt")
    model.train()
    torch.manual_seed(0)
    noisy = model(**batch).logits
    assert not torch.equal(noisy, model(**batch).logits)
    disable_dropout(model)
    assert torch.equal(model(**batch).logits, model(**batch).logits)
    assert torch.allclose(model(**batch).logits, model.eval()(**batch).logits)


def test_auto_precision_is_bf16_where_the_device_computes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer_module, "native_bf16", lambda: True)
    assert resolve_precision("auto") == torch.bfloat16
    monkeypatch.setattr(trainer_module, "native_bf16", lambda: False)
    assert resolve_precision("auto") is None
    assert resolve_precision("bf16") == torch.bfloat16  # asked for: emulated where not native
    assert resolve_precision("fp32") is None
    if not torch.cuda.is_available():
        assert resolve_precision("fp16") is None  # the loss scaler is CUDA's: the CPU trains fp32
