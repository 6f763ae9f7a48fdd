"""Concord's CPU attention (training.ml.attention): chosen on the CPU for every architecture the tests use,
transformers' sdpa to the bit in fp32, fp32 inside bf16 autocast (where torch's CPU kernel is 3-4x faster than in
bf16), gradients through it, and nothing of it in a saved model's config."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from training.ml import attention as attention_module
from training.ml.attention import CPU_ATTENTION
from training.ml.model import load_reward_model, save_reward_model

TEXTS = ["the answer is yes because it is good", "no", "it is good"]


def batch_of(tokenizer, texts=TEXTS):  # type: ignore[no-untyped-def]
    return tokenizer(texts, padding=True, return_tensors="pt")


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_the_cpu_kernel_computes_what_sdpa_does_in_fp32(arch: str, backbones: dict[str, Path]) -> None:
    torch.manual_seed(0)
    model, tokenizer = load_reward_model(backbones[arch])
    assert model.config._attn_implementation == CPU_ATTENTION
    batch = batch_of(tokenizer)
    with torch.no_grad():
        ours = model.eval()(**batch).logits
        model.set_attn_implementation("sdpa")
        theirs = model(**batch).logits
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_under_bf16_autocast_attention_runs_in_fp32_and_trains(
    arch: str, backbones: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[torch.dtype] = []
    kernel = attention_module.sdpa_attention_forward

    def spy(module, query, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(query.dtype)
        return kernel(module, query, *args, **kwargs)

    monkeypatch.setattr(attention_module, "sdpa_attention_forward", spy)
    torch.manual_seed(0)
    model, tokenizer = load_reward_model(backbones[arch])
    batch = batch_of(tokenizer)
    with torch.no_grad():
        reference = model.eval()(**batch).logits
    seen.clear()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rewards = model(**batch).logits
    assert set(seen) == {torch.float32}  # and not empty
    rewards.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    torch.testing.assert_close(rewards.float(), reference, rtol=0.05, atol=0.05)  # bf16 matmuls around it


def test_a_saved_model_names_no_concord_kernel(backbones: dict[str, Path], tmp_path: Path) -> None:
    # Loaded elsewhere with plain transformers, the model must not ask for a kernel only Concord registers.
    model, tokenizer = load_reward_model(backbones["bert"])
    save_reward_model(model, tokenizer, tmp_path / "model")
    assert CPU_ATTENTION not in (tmp_path / "model" / "config.json").read_text()
    assert "attn_implementation" not in json.loads((tmp_path / "model" / "config.json").read_text())
    AutoModelForSequenceClassification.from_pretrained(tmp_path / "model", use_safetensors=True)
