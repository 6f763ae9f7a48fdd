"""The GPU path: FlashAttention 2 asked for where it is installed, decoders trained packed (no padding) in bf16
with gradient checkpointing, and data-parallel training over two GPUs (NCCL). The GPU tests skip without CUDA
(CI has none); the choice of kernel is checked everywhere."""

import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.training.test_ml_trainer import config_for
from training.ml import launch
from training.ml.attention import CPU_ATTENTION
from training.ml.model import attention_implementation, load_reward_model
from training.ml.packing import use_packing
from training.ml.tiny import toy_pairs
from training.ml.trainer import train

TRAIN = toy_pairs(48, seed=1)
EVAL = toy_pairs(16, seed=2)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def flash_attention_2_installed() -> bool:
    from transformers.utils import is_flash_attn_2_available

    return bool(is_flash_attn_2_available())


def test_flash_attention_2_is_asked_for_only_on_a_gpu_that_has_it() -> None:
    assert attention_implementation(cuda=True, flash_attention_2=True) == "flash_attention_2"
    assert attention_implementation(cuda=True, flash_attention_2=False) is None
    assert attention_implementation(cuda=False, flash_attention_2=True) == CPU_ATTENTION


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(not flash_attention_2_installed(), reason="needs flash-attn")
def test_a_decoder_loads_with_flash_attention_2_and_trains_packed(backbones: dict[str, Path]) -> None:
    model, _ = load_reward_model(backbones["llama"])
    assert model.config._attn_implementation == "flash_attention_2"
    assert use_packing("auto", model, torch.device("cuda"))


@pytest.mark.gpu
@needs_cuda
def test_a_decoder_trains_in_bf16_with_gradient_checkpointing(backbones: dict[str, Path], tmp_path: Path) -> None:
    config = config_for(backbones["llama"], precision="bf16", gradient_checkpointing=True)
    result = train(config, TRAIN, EVAL, output_dir=tmp_path)
    assert math.isfinite(result.train_loss)
    assert result.eval["accuracy"] >= 0.75


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_train_with_nccl(backbones: dict[str, Path], tmp_path: Path) -> None:
    config = config_for(backbones["llama"], precision="bf16", epochs=2)
    spec = launch.spec_write(tmp_path, config=config.to_dict(), train_examples=TRAIN, eval_examples=EVAL)
    command = launch.torchrun_command(spec, processes="2", nodes=1, endpoint="", run_id="gpu", max_restarts=0)
    done = subprocess.run(command, env=dict(os.environ), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    events = list(launch.EventReader(tmp_path).new())
    assert [e["world"] for e in events if e["kind"] == "start"] == [2]
    result = next(e for e in events if e["kind"] == "result")
    assert math.isfinite(result["train_loss"])
    assert result["eval"]["accuracy"] >= 0.75
