"""Padding-free packing for decoder backbones: a batch's 2B sequences (chosen first, then rejected) run as one row of
tokens with position ids that restart at 0 for each sequence, no attention mask, and the reward read at each
sequence's last token.

Why that is exact, in transformers 5.18 (masking_utils): `create_causal_mask` (and its sliding-window and chunked
siblings) calls `find_packed_sequence_indices(position_ids)` when the attention mask is None and there is no cache;
every place where the position id does not go up by one starts a new sequence, and the mask that sdpa and eager
get (flex too, not enabled here) is the causal mask AND-ed with "same sequence": a block-diagonal causal mask.
flash_attention_2/3 get no mask (`flash_attention_mask` returns None) but `_flash_attention_forward` sees the
restarting position ids (`_is_packed_sequence`, batch size 1) and calls the varlen kernel with cumulative sequence
lengths built from them. Rotary or learned absolute position embeddings then see each sequence from position 0,
so every hidden state is the one the sequence would have alone, up to float rounding.

The conditions, the first three checked by `packing_problem`, the last kept by `packed_reward_outputs`:
- the model is a decoder with a `score` head read at the last token (transformers' *ForSequenceClassification of
  a causal LM) over `model.base_model`;
- its model type is one of PACKABLE_MODEL_TYPES, each checked against padded batches in test_ml_packing.py: some
  models that build their mask with create_causal_mask still see across packed sequences (ALiBi in Bloom and MPT,
  OPT and BioGPT's positions), and hybrid ones (Jamba, Qwen3-Next) carry recurrent state from one sequence to the
  next. Encoders (BERT, MiniLM) are bidirectional and have no such path;
- the attention implementation is one of PACKED_ATTENTION;
- the base model runs with use_cache=False: with a cache (config.use_cache is True for most decoders) the mask
  code skips the packed-sequence check and every token would attend to the sequences before it.

It pays only with a varlen kernel (VARLEN_ATTENTION, on a GPU): sdpa and eager build a dense (T, T) mask over the
packed length T = all 2B sequences together and compute every masked-out score, 2B times the attention work of
the padded batch. With them packing is for checking the packed path, on the CPU too.
"""

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.ml.attention import CPU_ATTENTION
from training.ml.data import EncodedPair, pair_targets

PACKABLE_MODEL_TYPES = frozenset(
    {
        "gemma",
        "gemma2",
        "gemma3_text",
        "gpt2",
        "gpt_neox",
        "llama",
        "mistral",
        "mixtral",
        "olmo2",
        "phi3",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
        "smollm3",
        "starcoder2",
    }
)
PACKED_ATTENTION = ("sdpa", CPU_ATTENTION, "eager", "flash_attention_2", "flash_attention_3")
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")


def packing_problem(model: PreTrainedModel) -> str:
    """Why the model cannot run packed sequences, or "" when it can (the conditions in the module docstring)."""
    config = model.config
    model_type = getattr(config, "model_type", "")
    attention = getattr(config, "_attn_implementation", None)
    base = model.base_model
    if base is model or not isinstance(getattr(model, "score", None), torch.nn.Linear):
        return f"{type(model).__name__} is not a decoder with a score head on its last token"
    if model_type not in PACKABLE_MODEL_TYPES:
        return f"model type {model_type!r} is not one known to keep packed sequences apart"
    if getattr(config, "is_encoder_decoder", False) or not getattr(config, "is_causal", True):
        return f"{type(model).__name__} does not attend causally"
    if attention not in PACKED_ATTENTION:
        return f"attention implementation {attention!r} ignores packed position ids"
    return ""


def supports_packing(model: PreTrainedModel) -> bool:
    return not packing_problem(model)


def use_packing(setting: str, model: PreTrainedModel, device: torch.device) -> bool:
    """Whether to train packed: "on" whenever the model supports it (an error when it does not), "auto" only
    where it pays, on CUDA with a varlen attention kernel, "off" never."""
    if setting == "off":
        return False
    problem = packing_problem(model)
    if setting == "on":
        if problem:
            raise ValueError(f"packing: 'on' needs a decoder backbone that supports it, but {problem}; use 'auto'")
        return True
    attention = getattr(model.config, "_attn_implementation", None)
    return not problem and device.type == "cuda" and attention in VARLEN_ATTENTION


def _last_real_token(ids: Sequence[int], pad_token_id: int | None) -> int:
    # The token the padded model reads (transformers' rightmost token that is not the pad token, else the first),
    # so a packed-trained reward is read where scoring reads it: a decoder padding with its end-of-sequence token
    # skips a trailing one.
    real = [i for i, token in enumerate(ids) if token != pad_token_id]
    return real[-1] if real else 0


class PackedPairCollator:
    """The batch's chosen sequences, then its rejected ones, concatenated into one row: input_ids and position_ids
    of shape (1, T), last_index (2B,) the position in the row where each sequence's reward is read, and the
    labels PairCollator gives (margin, weight, targets, target_mask). No attention mask: see the module docstring."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.pad_token_id = tokenizer.pad_token_id

    def __call__(self, pairs: Sequence[EncodedPair]) -> dict[str, torch.Tensor]:
        sequences = [pair.chosen["input_ids"] for pair in pairs] + [pair.rejected["input_ids"] for pair in pairs]
        if not all(sequences):
            raise ValueError("an empty sequence cannot be packed")
        ids: list[int] = []
        positions: list[int] = []
        last: list[int] = []
        for sequence in sequences:
            last.append(len(ids) + _last_real_token(sequence, self.pad_token_id))
            ids.extend(sequence)
            positions.extend(range(len(sequence)))
        return {
            "input_ids": torch.tensor([ids], dtype=torch.long),
            "position_ids": torch.tensor([positions], dtype=torch.long),
            "last_index": torch.tensor(last, dtype=torch.long),
            **pair_targets(pairs),
        }


def packed_reward_outputs(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(2B, outputs) float32 rewards of a packed batch, as reward_outputs gives for the padded one: the base model
    over the packed row, then the score head on the hidden states at last_index only."""
    hidden = model.base_model(
        input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
    ).last_hidden_state
    return model.get_submodule("score")(hidden[0, batch["last_index"]]).float()
