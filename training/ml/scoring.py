"""Rewards for (prompt, response) items from a saved model or ensemble, in length-sorted batches."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.ml.data import Prompt, encode
from training.ml.model import load_for_inference, member_dirs, reward_outputs

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
    device = next(model.parameters()).device
    encoded = [encode(tokenizer, prompt, response, max_length) for prompt, response in items]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]["input_ids"]))
    outputs = np.zeros((len(items), int(model.config.num_labels or 1)), dtype=np.float32)
    tokenizer.padding_side = "right"
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch = tokenizer.pad([encoded[i] for i in indices], padding="longest", return_tensors="pt")
        logits = reward_outputs(model, {k: v.to(device) for k, v in batch.items()})
        outputs[indices] = logits.cpu().numpy()
    return outputs


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
