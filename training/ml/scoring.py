"""Rewards for (prompt, response) items from a saved model or ensemble, in length-sorted batches."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.ml.data import Prompt, encode
from training.ml.model import load_for_inference, member_dirs, reward_head, reward_outputs

Item = tuple[Prompt, str]


@dataclass
class PairScore:
    reward_a: float
    reward_b: float
    margin: float  # reward_a - reward_b (ensemble mean)
    ensemble_mean: float  # the members' mean margin; the margin itself for a single model
    ensemble_std: float  # the members' disagreement on the margin; 0 for a single model


@torch.inference_mode()
def model_outputs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[Item],
    *,
    batch_size: int = 64,
    max_length: int = 256,
) -> np.ndarray:
    """(items, outputs) array in the items' order. Items are run longest first in batches of similar length,
    which pads little, then put back in order."""
    return _run(model, tokenizer, items, batch_size=batch_size, max_length=max_length, features=False)[0]


@torch.inference_mode()
def model_outputs_and_features(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[Item],
    *,
    batch_size: int = 64,
    max_length: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """model_outputs, and each item's last-layer features: what the reward head reads, (items, hidden)."""
    outputs, features = _run(model, tokenizer, items, batch_size=batch_size, max_length=max_length, features=True)
    assert features is not None
    return outputs, features


def _run(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[Item],
    *,
    batch_size: int,
    max_length: int,
    features: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    device = next(model.parameters()).device
    encoded = [encode(tokenizer, prompt, response, max_length) for prompt, response in items]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]["input_ids"]))
    outputs = np.zeros((len(items), int(model.config.num_labels or 1)), dtype=np.float32)
    head = reward_head(model)
    kept = np.zeros((len(items), head.in_features), dtype=np.float32) if features else None
    seen: list[torch.Tensor] = []
    # The head's input, whatever the architecture pools: a decoder's head runs on every position and the model
    # keeps one position's output, so the input at that position is taken (_pooled).
    hook = head.register_forward_pre_hook(lambda _, args: seen.append(args[0])) if features else None
    tokenizer.padding_side = "right"
    try:
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            padded = tokenizer.pad([encoded[i] for i in indices], padding="longest", return_tensors="pt")
            batch = {k: v.to(device) for k, v in padded.items()}
            outputs[indices] = reward_outputs(model, batch).cpu().numpy()
            if kept is not None:
                pooled = _pooled(seen.pop(), batch["input_ids"], model.config.pad_token_id)
                kept[indices] = pooled.float().cpu().numpy()
    finally:
        if hook is not None:
            hook.remove()
    return outputs, kept


def _pooled(head_input: torch.Tensor, input_ids: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
    """(sequences, hidden): an encoder's head input already is; a decoder's is per position, and its reward is read
    where transformers reads it, at the rightmost token that is not the pad token (else the first), so a decoder
    padding with its end-of-sequence token skips a trailing one, as packing._last_real_token does."""
    if head_input.dim() == 2:
        return head_input
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    real = input_ids != pad_token_id if pad_token_id is not None else torch.ones_like(input_ids, dtype=torch.bool)
    last = (positions * real).argmax(dim=-1)
    return head_input[torch.arange(head_input.shape[0], device=head_input.device), last]


@dataclass
class PairSignals:
    """What selection strategies read of pairs (training.ml.selection.Pool), margins B minus A. The features are
    the first member's (an ensemble's members share a backbone's pretraining); the margins, and so the Fisher
    weights p(1 - p), are the members' mean, the better estimate of p. None: not asked for."""

    margins: np.ndarray  # (pairs,) the members' mean of reward_b - reward_a
    member_margins: np.ndarray  # (pairs, members)
    features: np.ndarray | None  # (pairs, hidden) the first member's head input for B minus for A
    embeddings: np.ndarray | None  # (pairs, hidden) the first member's head inputs for A and B added, L2-normalised


class RewardScorer:
    """A model or an ensemble's members, loaded once and kept for many calls: a scoring job scores a project
    chunk by chunk, and loading a large backbone for each chunk would cost as much as scoring it."""

    def __init__(self, model_dir: Path | str, *, batch_size: int = 64, max_length: int = 256) -> None:
        self.batch_size, self.max_length = batch_size, max_length
        self.members = [load_for_inference(path)[:2] for path in member_dirs(model_dir)]

    def outputs(self, items: Sequence[Item]) -> np.ndarray:
        """(members, items, outputs): every member run over the items."""
        return np.stack(
            [
                model_outputs(model, tokenizer, items, batch_size=self.batch_size, max_length=self.max_length)
                for model, tokenizer in self.members
            ]
        )

    def score_texts(self, items: Sequence[Item]) -> np.ndarray:
        """The preference reward of each (prompt, response), averaged over an ensemble's members."""
        if not items:
            return np.zeros(0, dtype=np.float32)
        return self.outputs(items)[:, :, 0].mean(axis=0)

    def pair_signals(self, pairs: Sequence[tuple[Prompt, str, str]], *, features: bool = True) -> PairSignals:
        """Margins of (prompt, response_a, response_b) pairs by every member and, with `features`, the first
        member's last-layer features (hidden x 4 bytes x 2 per pair: asked for only by the strategies that read
        them)."""
        items = [(prompt, a) for prompt, a, _ in pairs] + [(prompt, b) for prompt, _, b in pairs]
        options = {"batch_size": self.batch_size, "max_length": self.max_length}
        model, tokenizer = self.members[0]
        if features:
            first, hidden = model_outputs_and_features(model, tokenizer, items, **options)
        else:
            first, hidden = model_outputs(model, tokenizer, items, **options), None
        rest = [model_outputs(model, tokenizer, items, **options) for model, tokenizer in self.members[1:]]
        rewards = np.stack([first, *rest])[:, :, 0]  # (members, items)
        n = len(pairs)
        member_margins = (rewards[:, n:] - rewards[:, :n]).T
        if hidden is None:
            return PairSignals(member_margins.mean(axis=1), member_margins, None, None)
        side_sum = hidden[:n] + hidden[n:]
        norms = np.linalg.norm(side_sum, axis=1, keepdims=True)
        return PairSignals(
            margins=member_margins.mean(axis=1),
            member_margins=member_margins,
            features=hidden[n:] - hidden[:n],
            embeddings=side_sum / np.maximum(norms, 1e-12),
        )

    def score_pairs(self, pairs: Sequence[tuple[Prompt, str, str]]) -> list[PairScore]:
        """Rewards of both responses of (prompt, response_a, response_b) pairs, with the ensemble's spread."""
        items = [(prompt, a) for prompt, a, _ in pairs] + [(prompt, b) for prompt, _, b in pairs]
        if not items:
            return []
        rewards = self.outputs(items)[:, :, 0]
        reward_a, reward_b = rewards[:, : len(pairs)], rewards[:, len(pairs) :]
        margins = reward_a - reward_b
        return [
            PairScore(
                reward_a=float(reward_a[:, i].mean()),
                reward_b=float(reward_b[:, i].mean()),
                margin=float(margins[:, i].mean()),
                ensemble_mean=float(margins[:, i].mean()),
                ensemble_std=float(margins[:, i].std()),
            )
            for i in range(len(pairs))
        ]


def member_outputs(
    model_dir: Path | str, items: Sequence[Item], *, batch_size: int = 64, max_length: int = 256
) -> np.ndarray:
    """(members, items, outputs) of a model loaded for this call only."""
    return RewardScorer(model_dir, batch_size=batch_size, max_length=max_length).outputs(items)


def score_texts(
    model_dir: Path | str, items: Sequence[Item], *, batch_size: int = 64, max_length: int = 256
) -> np.ndarray:
    """RewardScorer.score_texts with a model loaded for this call only."""
    if not items:
        return np.zeros(0, dtype=np.float32)
    return RewardScorer(model_dir, batch_size=batch_size, max_length=max_length).score_texts(items)


def score_pairs(
    model_dir: Path | str,
    pairs: Sequence[tuple[Prompt, str, str]],
    *,
    batch_size: int = 64,
    max_length: int = 256,
) -> list[PairScore]:
    """RewardScorer.score_pairs with a model loaded for this call only."""
    if not pairs:
        return []
    return RewardScorer(model_dir, batch_size=batch_size, max_length=max_length).score_pairs(pairs)
