"""Preference pairs from a frozen dataset version's export, tokenised and batched for one forward pass.

Both export formats load: TRL JSONL ({prompt, chosen: [assistant turn], rejected: [...], margin, split}) and the
fine-grained JSONL (every DatasetRow field, with per-response ratings under labels.{chosen,rejected}.ratings),
either optionally gzipped. Batches are grouped by length and padded to their longest sequence (PairCollator);
decoder backbones can instead run padding-free, all 2B sequences packed into one row with restarting position ids
(training.ml.packing, TrainConfig.packing), which pays with a varlen FlashAttention kernel on a GPU.
"""

import gzip
import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

Turns = list[dict[str, Any]]
Prompt = Turns | str


@dataclass
class PairExample:
    prompt: Turns
    chosen: str
    rejected: str
    margin: float = 0.0
    weight: float = 1.0
    split: str = "train"
    source: str = ""
    chosen_ratings: dict[str, float] | None = None
    rejected_ratings: dict[str, float] | None = None


def load_examples(path: Path) -> list[PairExample]:
    """Every pair in a TRL or fine-grained JSONL export (.jsonl or .jsonl.gz), in file order."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        return [example_from_row(json.loads(line)) for line in lines if line.strip()]


def example_from_row(row: dict[str, Any]) -> PairExample:
    labels = row.get("labels") or {}
    return PairExample(
        prompt=prompt_with_context(row["prompt"], row.get("context") or ""),
        chosen=_response_text(row["chosen"]),
        rejected=_response_text(row["rejected"]),
        margin=float(row.get("margin") or 0.0),
        weight=float(row.get("weight", 1.0)),
        split=row.get("split") or "train",
        source=row.get("source") or "",
        chosen_ratings=_ratings(labels.get("chosen")),
        rejected_ratings=_ratings(labels.get("rejected")),
    )


def prompt_with_context(prompt: Prompt, context: str) -> Turns:
    """The turns a model reads for an item: its reference material (context), when it has any, as a system turn
    before the prompt. Training and scoring both read items this way, so a model is scored on what it learnt."""
    turns = as_turns(prompt)
    return [{"role": "system", "content": context}, *turns] if context else turns


def as_turns(prompt: Prompt) -> Turns:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _response_text(response: str | Turns) -> str:
    if isinstance(response, str):
        return response
    return "\n\n".join(
        str(turn.get("content", "")) for turn in response if turn.get("role", "assistant") == "assistant"
    )


def _ratings(side: dict[str, Any] | None) -> dict[str, float] | None:
    ratings = (side or {}).get("ratings") or {}
    numbers = {name: float(value) for name, value in ratings.items() if isinstance(value, int | float)}
    return numbers or None


def split_by_prompt(
    examples: Sequence[PairExample], *, validation_fraction: float, seed: int
) -> tuple[list[PairExample], list[PairExample]]:
    """Train and validation sets that share no prompt, so validation accuracy is not inflated by memorised
    prompts. Prompts are shuffled with the seed and taken for validation until the fraction is reached."""
    groups: dict[str, list[PairExample]] = {}
    for example in examples:
        groups.setdefault(json.dumps(example.prompt, sort_keys=True), []).append(example)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    wanted = round(len(examples) * validation_fraction)
    train: list[PairExample] = []
    validation: list[PairExample] = []
    for key in keys:
        (validation if len(validation) < wanted else train).extend(groups[key])
    return train, validation


def flatten_turns(turns: Turns) -> str:
    """Chat turns as plain text, for tokenizers without a chat template (encoders such as MiniLM)."""
    return "\n".join(f"{turn.get('role', 'user')}: {turn.get('content', '')}" for turn in turns)


def encode(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, response: str, max_length: int) -> dict[str, Any]:
    """Token ids of a prompt and its response. A chat model gets its own template, cut from the left so the
    response, whose last token carries the reward, survives; an encoder gets a (prompt, response) text pair."""
    turns = as_turns(prompt)
    if getattr(tokenizer, "chat_template", None):
        conversation = [*turns, {"role": "assistant", "content": response}]
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
        tokenizer.truncation_side = "left"
        return dict(tokenizer(text, truncation=True, max_length=max_length, add_special_tokens=False))
    tokenizer.truncation_side = "left"  # cuts the start of the prompt, whose last turn matters most
    return dict(tokenizer(flatten_turns(turns), response, truncation="longest_first", max_length=max_length))


@dataclass
class EncodedPair:
    chosen: dict[str, Any]
    rejected: dict[str, Any]
    margin: float
    weight: float
    chosen_targets: list[float]
    rejected_targets: list[float]
    chosen_mask: list[float]
    rejected_mask: list[float]

    @property
    def length(self) -> int:
        return max(len(self.chosen["input_ids"]), len(self.rejected["input_ids"]))


def regression_targets(ratings: dict[str, float] | None, attributes: Sequence[str]) -> tuple[list[float], list[float]]:
    """Targets for outputs 0..n: output 0 the mean of the rated attributes (the overall score a regression
    model ranks by), outputs 1..n each attribute; the mask is 1 where a rating exists."""
    rated = [ratings[name] for name in attributes if ratings and name in ratings]
    overall = sum(rated) / len(rated) if rated else 0.0
    values = [overall] + [(ratings or {}).get(name, 0.0) for name in attributes]
    mask = [1.0 if rated else 0.0] + [1.0 if ratings and name in ratings else 0.0 for name in attributes]
    return values, mask


def encode_pairs(
    examples: Sequence[PairExample],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    attributes: Sequence[str] = (),
) -> list[EncodedPair]:
    encoded = []
    for example in examples:
        chosen_targets, chosen_mask = regression_targets(example.chosen_ratings, attributes)
        rejected_targets, rejected_mask = regression_targets(example.rejected_ratings, attributes)
        encoded.append(
            EncodedPair(
                chosen=encode(tokenizer, example.prompt, example.chosen, max_length),
                rejected=encode(tokenizer, example.prompt, example.rejected, max_length),
                margin=example.margin,
                weight=example.weight,
                chosen_targets=chosen_targets,
                rejected_targets=rejected_targets,
                chosen_mask=chosen_mask,
                rejected_mask=rejected_mask,
            )
        )
    return encoded


def length_grouped_batches(lengths: Sequence[int], *, batch_size: int, seed: int) -> list[list[int]]:
    """Batches of indices of similar length, in a seeded order: shuffle, cut into mega-batches of 50 batches,
    sort each by length, cut into batches, shuffle the batches (transformers' LengthGroupedSampler)."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        group = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches


def batch_count(examples: int, batch_size: int) -> int:
    return math.ceil(examples / batch_size)


class PairCollator:
    """Chosen and rejected sequences of a batch padded together, chosen first: the model runs once over all
    2B sequences and the trainer splits the outputs (trl's RewardTrainer concatenates the same way)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer

    def __call__(self, pairs: Sequence[EncodedPair]) -> dict[str, torch.Tensor]:
        sequences = [pair.chosen for pair in pairs] + [pair.rejected for pair in pairs]
        self.tokenizer.padding_side = "right"
        batch = dict(self.tokenizer.pad(sequences, padding="longest", return_tensors="pt"))
        return {**batch, **pair_targets(pairs)}


def pair_targets(pairs: Sequence[EncodedPair]) -> dict[str, torch.Tensor]:
    """What the losses need besides the rewards: margin and weight per pair, targets and their mask per sequence
    (chosen rows first, as the sequences)."""
    return {
        "margin": torch.tensor([pair.margin for pair in pairs], dtype=torch.float32),
        "weight": torch.tensor([pair.weight for pair in pairs], dtype=torch.float32),
        "targets": torch.tensor(
            [p.chosen_targets for p in pairs] + [p.rejected_targets for p in pairs], dtype=torch.float32
        ),
        "target_mask": torch.tensor(
            [p.chosen_mask for p in pairs] + [p.rejected_mask for p in pairs], dtype=torch.float32
        ),
    }


def batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    """The real tokens of a padded batch (its attention mask) or of a packed one (every token in the row)."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def iterate_batches(
    encoded: Sequence[EncodedPair],
    collator: Callable[[Sequence[EncodedPair]], dict[str, torch.Tensor]],
    *,
    batch_size: int,
    seed: int,
) -> Iterator[dict[str, torch.Tensor]]:
    for indices in length_grouped_batches([pair.length for pair in encoded], batch_size=batch_size, seed=seed):
        yield collator([encoded[i] for i in indices])
