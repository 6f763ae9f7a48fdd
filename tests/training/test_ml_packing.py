"""Padding-free packing on tiny random decoders (CPU): packed rewards and gradients equal the padded model's, the
trainer trains packed, and encoders are refused."""

import itertools
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedConfig, PreTrainedModel

from training.ml.attention import CPU_ATTENTION
from training.ml.config import TrainConfig
from training.ml.data import PairCollator, encode_pairs
from training.ml.model import load_reward_model, reward_outputs
from training.ml.packing import (
    PACKABLE_MODEL_TYPES,
    PackedPairCollator,
    packed_reward_outputs,
    packing_problem,
    supports_packing,
    use_packing,
)
from training.ml.scoring import model_outputs
from training.ml.tiny import toy_pairs
from training.ml.trainer import objective_loss, train

TRAIN = toy_pairs(48, seed=1)
EVAL = toy_pairs(16, seed=2)
ATTRIBUTES = ("helpful", "correct")


def flat(lists: list[list[int]]) -> list[int]:
    return list(itertools.chain.from_iterable(lists))


def test_the_collator_restarts_positions_and_points_at_each_last_token(backbones: dict[str, Path]) -> None:
    _, tokenizer = load_reward_model(backbones["llama"])
    pairs = encode_pairs(TRAIN[:3], tokenizer, max_length=32, attributes=ATTRIBUTES)
    batch = PackedPairCollator(tokenizer)(pairs)
    sequences = [p.chosen["input_ids"] for p in pairs] + [p.rejected["input_ids"] for p in pairs]
    assert batch["input_ids"].tolist() == [flat(sequences)]
    assert batch["position_ids"].tolist() == [flat([list(range(len(s))) for s in sequences])]
    ends = np.cumsum([len(s) for s in sequences]) - 1
    assert batch["last_index"].tolist() == ends.tolist()
    assert "attention_mask" not in batch
    padded = PairCollator(tokenizer)(pairs)
    for key in ("margin", "weight", "targets", "target_mask"):
        assert torch.equal(batch[key], padded[key]), key


@pytest.mark.parametrize("attention", ["sdpa", CPU_ATTENTION, "eager"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_packed_rewards_equal_the_padded_models(arch: str, attention: str, backbones: dict[str, Path]) -> None:
    torch.manual_seed(0)
    model, tokenizer = load_reward_model(backbones[arch], num_outputs=3)
    model.set_attn_implementation(attention)
    model.eval()
    pairs = encode_pairs(TRAIN[:8], tokenizer, max_length=32, attributes=ATTRIBUTES)
    # A sequence that ends with the pad token (eos here): the padded model reads the token before it; so must we.
    ids = [*pairs[0].chosen["input_ids"], tokenizer.eos_token_id]
    pairs[0].chosen = {"input_ids": ids, "attention_mask": [1] * len(ids)}
    assert len({len(p.chosen["input_ids"]) for p in pairs} | {len(p.rejected["input_ids"]) for p in pairs}) > 3
    padded_batch, packed_batch = PairCollator(tokenizer)(pairs), PackedPairCollator(tokenizer)(pairs)
    with torch.no_grad():
        padded = model(**{k: padded_batch[k] for k in ("input_ids", "attention_mask")}).logits
        packed = packed_reward_outputs(model, packed_batch)
        # Three pairs' row read as one long sequence (GPT-2 has 128 positions): each sequence after the first sees
        # the ones before it, and its rewards change.
        few = PackedPairCollator(tokenizer)(pairs[:3])
        one_sequence = torch.arange(few["input_ids"].shape[1]).unsqueeze(0)
        unpacked = packed_reward_outputs(model, {**few, "position_ids": one_sequence})
        changed = (unpacked - packed_reward_outputs(model, few))[1:].abs().amax(dim=1)
    assert packed.shape == (16, 3)
    assert packed.dtype == torch.float32
    torch.testing.assert_close(packed, padded, rtol=1e-4, atol=1e-5)
    assert (padded.std(dim=0) > 1e-3).all()  # rewards that differ: equal ones would prove nothing
    assert (changed > 1e-3).all()


def tiny_config(model_type: str) -> PreTrainedConfig:
    # Two layers 32 wide; every model type reads the sizes it knows (GPT-2 maps hidden_size to n_embd, and so on).
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    moe = {"num_experts": 4, "num_local_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
    return AutoConfig.for_model(
        model_type,
        vocab_size=64,
        intermediate_size=64,
        head_dim=8,
        max_position_embeddings=64,
        num_labels=1,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
        **sizes,
        **moe,
    )


@pytest.mark.parametrize("attention", ["sdpa", CPU_ATTENTION, "eager"])
@pytest.mark.parametrize("model_type", sorted(PACKABLE_MODEL_TYPES))
def test_every_packable_model_type_keeps_sequences_apart(model_type: str, attention: str) -> None:
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config(model_type), attn_implementation=attention)
    model.eval()
    assert supports_packing(model), packing_problem(model)
    sequences = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18, 19]]
    longest = max(len(s) for s in sequences)
    ids = torch.tensor([s + [0] * (longest - len(s)) for s in sequences])
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=(ids != 0).long()).logits
        packed = packed_reward_outputs(
            model,
            {
                "input_ids": torch.tensor([flat(sequences)]),
                "position_ids": torch.tensor([flat([list(range(len(s))) for s in sequences])]),
                "last_index": torch.tensor([4, 6, 14]),
            },
        )
    torch.testing.assert_close(packed, padded, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("objective", ["bt_margin", "combined"])
def test_packed_gradients_equal_the_padded_ones(objective: str, backbones: dict[str, Path]) -> None:
    config = TrainConfig(backbone=str(backbones["llama"]), objective=objective, attributes=ATTRIBUTES)
    torch.manual_seed(0)
    model, tokenizer = load_reward_model(backbones["llama"], num_outputs=config.num_outputs)
    pairs = encode_pairs(TRAIN[:8], tokenizer, max_length=32, attributes=ATTRIBUTES)
    grads = []
    for collator, forward in ((PairCollator, reward_outputs), (PackedPairCollator, packed_reward_outputs)):
        batch = collator(tokenizer)(pairs)
        model.zero_grad()
        objective_loss(config, forward(model, batch), batch).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    padded, packed = grads
    assert set(padded) == set(packed) == {name for name, _ in model.named_parameters()}
    for name in padded:
        torch.testing.assert_close(packed[name], padded[name], rtol=1e-4, atol=1e-7, msg=name)


def test_encoders_cannot_pack(backbones: dict[str, Path], tmp_path: Path) -> None:
    model, _ = load_reward_model(backbones["bert"])
    assert not supports_packing(model)
    assert "BertForSequenceClassification is not a decoder" in packing_problem(model)
    assert not use_packing("auto", model, torch.device("cuda"))
    config = TrainConfig(backbone=str(backbones["bert"]), packing="on", epochs=1, batch_size=16)
    with pytest.raises(ValueError, match=r"^packing: 'on' needs a decoder backbone.*BertForSequenceClassification"):
        train(config, TRAIN, [], output_dir=tmp_path)


def test_auto_packs_only_on_cuda_with_a_varlen_kernel(backbones: dict[str, Path]) -> None:
    model, _ = load_reward_model(backbones["llama"])
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # devices named, never touched
    assert supports_packing(model)
    assert (use_packing("on", model, cpu), use_packing("off", model, cuda)) == (True, False)
    assert not use_packing("auto", model, cpu)
    assert not use_packing("auto", model, cuda)  # sdpa: a dense mask over the whole packed row
    model.config._attn_implementation = "flash_attention_2"
    assert use_packing("auto", model, cuda)
    assert not use_packing("auto", model, cpu)
    model.config._attn_implementation = "flex_attention"
    assert "flex_attention" in packing_problem(model)


def config_for(backbone: Path, **changes: Any) -> TrainConfig:
    settings: dict = {
        "backbone": str(backbone),
        "epochs": 3,
        "batch_size": 8,
        "learning_rate": 1e-2,
        "max_length": 32,
        "logging_every": 1,
        "attributes": ATTRIBUTES,
        "packing": "on",
    }
    return replace(TrainConfig(**settings), **changes)


def mean_bt_loss(model_dir: Path, *, seed: int | None = None) -> float:
    if seed is not None:
        torch.manual_seed(seed)
    model, tokenizer = load_reward_model(model_dir)
    items = [(e.prompt, e.chosen) for e in TRAIN] + [(e.prompt, e.rejected) for e in TRAIN]
    out = model_outputs(model.eval(), tokenizer, items)
    delta = out[: len(TRAIN), 0] - out[len(TRAIN) :, 0]
    return float(np.log1p(np.exp(-delta)).mean())


def test_a_packed_run_learns_and_saves_a_model_that_loads(
    backbones: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def counted(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        calls.append(batch["input_ids"].shape[0])
        return packed_reward_outputs(model, batch)

    monkeypatch.setattr("training.ml.trainer.packed_reward_outputs", counted)
    config = config_for(backbones["llama"], seed=5)
    result = train(config, TRAIN, EVAL, output_dir=tmp_path)
    assert calls == [1] * 18  # every step ran packed, one row per batch
    assert math.isfinite(result.train_loss)
    assert result.tokens_per_second > 0
    assert mean_bt_loss(tmp_path / "model") < mean_bt_loss(backbones["llama"], seed=5) - 0.1
    assert result.eval["accuracy"] >= 0.75
    torch.manual_seed(5)
    before, _ = load_reward_model(backbones["llama"])
    after, _ = load_reward_model(tmp_path / "model")
    assert after.config.model_type == "llama"
    assert supports_packing(after)
    trained = dict(after.named_parameters())
    unchanged = [name for name, p in before.named_parameters() if torch.equal(p, trained[name])]
    assert unchanged == []


def test_packed_and_padded_training_give_the_same_losses(backbones: dict[str, Path], tmp_path: Path) -> None:
    # Llama has no dropout: the two runs do the same arithmetic, up to float rounding. fp32: under bf16 autocast
    # (the CPU's `auto` with AMX) the packed and the padded matmuls round apart by more than that.
    config = config_for(backbones["llama"], epochs=1, objective="combined", precision="fp32")
    packed = train(config, TRAIN, [], output_dir=tmp_path / "packed")
    padded = train(replace(config, packing="off"), TRAIN, [], output_dir=tmp_path / "padded")
    recomputed = train(replace(config, gradient_checkpointing=True), TRAIN, [], output_dir=tmp_path / "recomputed")
    assert packed.train_loss == pytest.approx(padded.train_loss, rel=1e-4)
    assert recomputed.train_loss == pytest.approx(packed.train_loss, rel=1e-4)


def test_the_packing_setting_is_validated_and_fingerprinted() -> None:
    assert TrainConfig(backbone="/m").packing == "auto"
    with pytest.raises(ValueError, match=r"^packing: must be one of auto, on, off$"):
        TrainConfig(backbone="/m", packing="yes").validate()
    data = TrainConfig(backbone="/m", packing="off").to_dict()
    assert data["packing"] == "off"
    assert TrainConfig.from_dict(data).packing == "off"
    stored_before = {k: v for k, v in data.items() if k != "packing"}  # a run saved before the setting existed
    assert TrainConfig.from_dict(stored_before).packing == "auto"
    assert TrainConfig(backbone="/m", packing="off").fingerprint() != TrainConfig(backbone="/m").fingerprint()
