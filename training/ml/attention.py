"""The attention kernel Concord asks transformers for on the CPU: transformers' sdpa attention, computed in fp32
when autocast hands it bf16 (or fp16) tensors.

Why: torch's CPU flash-attention kernel (what sdpa runs there without dropout) takes 3-4x as long in bf16 as in
fp32, forward and backward: with MiniLM's 12 heads of 32 and a padding mask, 32 sequences of 64 tokens 37 ms
against 9 ms, of 128 tokens 79 ms against 26 ms, of 256 tokens 111 ms against 85 ms (one layer, 2 threads, on AMX;
bench/train_throughput.py measures the whole step). The matmuls around it stay in bf16, where they are fast, and
the casts are cheap beside the kernel. Float32 inputs go through as they are, so fp32 training and inference
compute what transformers' own sdpa does.

The name contains "sdpa" on purpose: transformers then checks that the architecture supports sdpa when the model
loads (and falls back to eager where it does not), and it is registered with sdpa's mask function, so masks,
packed sequences included (training.ml.packing), are built as for sdpa.
"""

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

CPU_ATTENTION = "concord_fp32_sdpa"


def fp32_sdpa_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """sdpa_attention_forward, with reduced-precision inputs on the CPU computed in fp32 and the output cast back."""
    if query.device.type != "cpu" or query.dtype == torch.float32:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast("cpu", enabled=False):
        output, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
    return output.to(query.dtype), weights


AttentionInterface.register(CPU_ATTENTION, fp32_sdpa_attention_forward)
AttentionMaskInterface.register(CPU_ATTENTION, sdpa_mask)
