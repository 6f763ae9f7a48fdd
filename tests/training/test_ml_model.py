"""Loading reward models: heads added to backbones, decoders reading their last real token, no pickle, no code of
the checkpoint's own (auto_map), and the packaged default backbone offline."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from training.ml.config import default_backbone
from training.ml.model import (
    UnsafeCheckpointError,
    load_for_inference,
    load_reward_model,
    member_dirs,
    save_reward_model,
)
from training.ml.scoring import model_outputs
from training.ml.tiny import tiny_backbone


def test_it_refuses_pickle_only_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UnsafeCheckpointError, match=r"pytorch_model\.bin"):
        load_reward_model(tmp_path)
    (tmp_path / "pytorch_model.bin").unlink()
    (tmp_path / "weights.pt").write_bytes(b"not loaded")
    with pytest.raises(UnsafeCheckpointError, match=r"weights\.pt"):
        load_reward_model(tmp_path)


def with_own_code(source: Path, to: Path, file: str) -> Path:
    """A copy of a backbone whose `file` names a module of its own (auto_map) that leaves a mark when imported."""
    shutil.copytree(source, to)
    (to / "planted.py").write_text(
        f"open({str(to / 'ran')!r}, 'w').write('ran')\n"
        "from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast\n"
        "class PlantedConfig(BertConfig): pass\n"
        "class PlantedModel(BertForSequenceClassification): pass\n"
        "class PlantedTokenizer(PreTrainedTokenizerFast): pass\n"
    )
    data = json.loads((to / file).read_text()) if (to / file).exists() else {}
    data["auto_map"] = {
        "AutoConfig": "planted.PlantedConfig",
        "AutoModelForSequenceClassification": "planted.PlantedModel",
        "AutoTokenizer": [None, "planted.PlantedTokenizer"],
    }
    (to / file).write_text(json.dumps(data))
    return to


@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json"])
def test_it_refuses_a_checkpoint_that_names_code_of_its_own(tmp_path: Path, file: str) -> None:
    planted = with_own_code(tiny_backbone(tmp_path / "bert"), tmp_path / "planted", file)
    with pytest.raises(UnsafeCheckpointError, match=r"auto_map"):
        load_reward_model(planted)
    with pytest.raises(UnsafeCheckpointError, match=r"auto_map"):
        load_for_inference(planted)
    assert not (planted / "ran").exists()


def test_it_reports_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_reward_model(tmp_path / "absent")


def test_a_backbone_gets_a_head_with_one_output_per_target(tmp_path: Path) -> None:
    model, tokenizer = load_reward_model(tiny_backbone(tmp_path / "bert"), num_outputs=3)
    out = model_outputs(model.eval(), tokenizer, [("hi", "good answer")])
    assert out.shape == (1, 3)


def test_a_decoder_pads_with_eos_and_reads_its_last_real_token(tmp_path: Path) -> None:
    model, tokenizer = load_reward_model(tiny_backbone(tmp_path / "gpt2", architecture="gpt2"))
    assert tokenizer.pad_token == tokenizer.eos_token
    assert model.config.pad_token_id == tokenizer.eos_token_id
    model.eval()
    short = ("why", "good")
    alone = model_outputs(model, tokenizer, [short])
    # Batched beside a much longer item, the short one is right-padded: its reward must not change.
    batched = model_outputs(model, tokenizer, [short, ("why", "good answer because " * 8)], batch_size=2)
    assert alone[0, 0] == pytest.approx(batched[0, 0], abs=1e-5)


def test_saving_writes_safetensors_and_loads_back_the_same_model(tmp_path: Path) -> None:
    model, tokenizer = load_reward_model(tiny_backbone(tmp_path / "bert"))
    save_reward_model(model, tokenizer, tmp_path / "saved", metadata={"objective": "bt"})
    assert (tmp_path / "saved" / "model.safetensors").exists()
    assert not list((tmp_path / "saved").glob("*.bin"))
    again, _ = load_reward_model(tmp_path / "saved")
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_member_dirs_finds_ensembles_and_run_directories(tmp_path: Path) -> None:
    for name in ("member-10", "member-2", "member-0"):
        (tmp_path / "ens" / name).mkdir(parents=True)
    assert [p.name for p in member_dirs(tmp_path / "ens")] == ["member-0", "member-2", "member-10"]
    (tmp_path / "run" / "model").mkdir(parents=True)
    assert member_dirs(tmp_path / "run") == [tmp_path / "run" / "model"]
    assert member_dirs(tmp_path / "run" / "model") == [tmp_path / "run" / "model"]


def test_the_default_backbone_loads_offline_and_gives_a_reward(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    model, tokenizer = load_reward_model(default_backbone())
    assert model.config.model_type == "bert"
    rewards = model_outputs(model.eval(), tokenizer, [([{"role": "user", "content": "hi"}], "hello there")])
    assert rewards.shape == (1, 1)
    assert torch.isfinite(torch.from_numpy(rewards)).all()


def regression_model(tmp_path: Path, architecture: str = "bert") -> Path:
    """A three-output model saved as a regression run saves it: output 0 the reward, 1-2 two attributes."""
    torch.manual_seed(1)
    model, tokenizer = load_reward_model(
        tiny_backbone(tmp_path / architecture, architecture=architecture), num_outputs=3
    )
    path = tmp_path / f"{architecture}-regression"
    save_reward_model(model, tokenizer, path, metadata={"objective": "regression", "attributes": ["a", "b"]})
    return path


@pytest.mark.parametrize("architecture", ["bert", "gpt2"])
def test_bradley_terry_initialised_from_a_regression_model_keeps_its_reward_output(
    tmp_path: Path, architecture: str
) -> None:
    path = regression_model(tmp_path, architecture)
    items = [("hi", "good answer"), ("why", "bad")]
    regression, tokenizer = load_reward_model(path, num_outputs=3)
    single, _ = load_reward_model(path, num_outputs=1)
    assert single.config.num_labels == 1
    expected = model_outputs(regression.eval(), tokenizer, items)[:, 0]
    assert model_outputs(single.eval(), tokenizer, items)[:, 0] == pytest.approx(expected, abs=1e-6)
    # And the other way: more outputs than were saved keep the saved ones and add new ones.
    wider, _ = load_reward_model(path, num_outputs=5)
    wide_outputs = model_outputs(wider.eval(), tokenizer, items)
    assert wide_outputs.shape == (2, 5)
    assert wide_outputs[:, :3] == pytest.approx(model_outputs(regression, tokenizer, items), abs=1e-6)


def test_a_foreign_classifier_s_head_of_another_size_is_replaced(tmp_path: Path) -> None:
    classifier, tokenizer = load_reward_model(tiny_backbone(tmp_path / "bert"), num_outputs=2)
    classifier.save_pretrained(tmp_path / "sentiment")  # no concord_reward.json: not a Concord model
    tokenizer.save_pretrained(tmp_path / "sentiment")
    model, _ = load_reward_model(tmp_path / "sentiment", num_outputs=1)
    assert model_outputs(model.eval(), tokenizer, [("hi", "there")]).shape == (1, 1)
