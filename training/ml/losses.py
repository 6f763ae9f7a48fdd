"""One short function per objective. Rewards are 1-D tensors over the batch; every loss is a (weighted) mean.

Each objective is written once, as terms: per-example losses with the weight of each in a weighted mean (a
LossTerm). `reduce_terms` takes their means, by default over the batch at hand; a data-parallel trainer passes
the weight totals of the whole global batch instead (summed over its ranks), so that each rank's share adds up,
over the ranks, to the loss one process computes on the global batch (training.ml.distributed)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec

import torch
import torch.nn.functional as F

P = ParamSpec("P")


@dataclass
class LossTerm:
    """A weighted mean to take, scaled: scale * sum(values * weight) / sum(weight)."""

    values: torch.Tensor
    weight: torch.Tensor
    scale: float = 1.0

    @property
    def total(self) -> torch.Tensor:
        return self.weight.sum()


def reduce_terms(terms: Sequence[LossTerm], totals: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """The loss of the terms: each term's weighted mean, over its own weights or over `totals` (one per term). A
    term whose total is zero (no rated example) adds a zero that keeps the graph."""
    loss = None
    for n, term in enumerate(terms):
        total = term.total if totals is None else totals[n]
        part = term.scale * (term.values * term.weight).sum() / total.clamp_min(1e-12)
        loss = part if loss is None else loss + part
    assert loss is not None, "an objective has at least one term"
    return loss


def _weights(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    # Example weights (a curator's discount of an annotator's labels) scale each pair's share of the mean.
    return torch.ones_like(values) if weight is None else weight


def bradley_terry_terms(r_c: torch.Tensor, r_r: torch.Tensor, weight: torch.Tensor | None = None) -> LossTerm:
    """Bradley-Terry pairwise loss, -log sigmoid(r_chosen - r_rejected): InstructGPT (Ouyang et al. 2022, eq. 1),
    as trl's RewardTrainer computes it."""
    values = -F.logsigmoid(r_c - r_r)
    return LossTerm(values, _weights(values, weight))


def bradley_terry_margin_terms(
    r_c: torch.Tensor,
    r_r: torch.Tensor,
    margin: torch.Tensor,
    scale: float = 1.0,
    weight: torch.Tensor | None = None,
) -> LossTerm:
    """Bradley-Terry with a margin, -log sigmoid(r_c - r_r - scale * margin): Llama 2 (Touvron et al. 2023,
    eq. 2). A clearly preferred response must win by more than a slightly preferred one."""
    values = -F.logsigmoid(r_c - r_r - scale * margin)
    return LossTerm(values, _weights(values, weight))


def bradley_terry_soft_terms(
    r_c: torch.Tensor, r_r: torch.Tensor, smoothing: float = 0.1, weight: torch.Tensor | None = None
) -> LossTerm:
    """Label-smoothed Bradley-Terry, -(1-e) log sigmoid(d) - e log sigmoid(-d) with d = r_c - r_r: Secrets of
    RLHF part II (Wang et al. 2024, sec. 3): a label is taken to be wrong with probability e, so noisy pairs
    cannot push the reward gap without bound."""
    delta = r_c - r_r
    values = -(1 - smoothing) * F.logsigmoid(delta) - smoothing * F.logsigmoid(-delta)
    return LossTerm(values, _weights(values, weight))


def attribute_regression_terms(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
) -> LossTerm:
    """Mean squared error over the rated attributes only (mask 1 where a rating exists): SteerLM / HelpSteer2
    (Wang et al. 2024) regression reward models. pred, target, mask: (batch, attributes)."""
    squared = (pred - target) ** 2 * mask
    # Per example: the mean over its rated attributes; an example with no ratings contributes nothing.
    rated = mask.sum(dim=-1)
    per_example = squared.sum(dim=-1) / rated.clamp_min(1)
    keep = (rated > 0).to(pred.dtype)
    return LossTerm(per_example, keep if weight is None else weight * keep)


def combined_terms(
    r_c: torch.Tensor,
    r_r: torch.Tensor,
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    regression_weight: float = 0.5,
    weight: torch.Tensor | None = None,
) -> list[LossTerm]:
    """Bradley-Terry plus weighted attribute regression on the same model: HelpSteer2-Preference (Wang et al.
    2024), which found the two objectives complementary. pred/target/mask cover chosen and rejected responses."""
    # pred rows are chosen then rejected, so the example weights repeat.
    rows = None if weight is None else torch.cat([weight, weight])
    regression = attribute_regression_terms(pred, target, mask, rows)
    regression.scale = regression_weight
    return [bradley_terry_terms(r_c, r_r, weight), regression]


# The losses of one batch, each the reduction of its terms: the terms functions above, reduced.


def _reduced(terms: Callable[P, LossTerm | list[LossTerm]]) -> Callable[P, torch.Tensor]:
    def loss(*args: P.args, **kwargs: P.kwargs) -> torch.Tensor:
        made = terms(*args, **kwargs)
        return reduce_terms(made if isinstance(made, list) else [made])

    loss.__doc__ = f"The loss of one batch: {terms.__name__}, reduced (reduce_terms)."
    return loss


bradley_terry = _reduced(bradley_terry_terms)
bradley_terry_margin = _reduced(bradley_terry_margin_terms)
bradley_terry_soft = _reduced(bradley_terry_soft_terms)
attribute_regression = _reduced(attribute_regression_terms)
combined = _reduced(combined_terms)
