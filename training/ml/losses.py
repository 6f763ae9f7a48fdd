"""One short function per objective. Rewards are 1-D tensors over the batch; every loss is a (weighted) mean."""

import torch
import torch.nn.functional as F


def _mean(losses: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    # Example weights (a curator's discount of an annotator's labels) scale each pair's share of the mean.
    if weight is None:
        return losses.mean()
    return (losses * weight).sum() / weight.sum().clamp_min(1e-12)


def bradley_terry(r_c: torch.Tensor, r_r: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Bradley-Terry pairwise loss, -log sigmoid(r_chosen - r_rejected): InstructGPT (Ouyang et al. 2022, eq. 1),
    as trl's RewardTrainer computes it."""
    return _mean(-F.logsigmoid(r_c - r_r), weight)


def bradley_terry_margin(
    r_c: torch.Tensor,
    r_r: torch.Tensor,
    margin: torch.Tensor,
    scale: float = 1.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bradley-Terry with a margin, -log sigmoid(r_c - r_r - scale * margin): Llama 2 (Touvron et al. 2023,
    eq. 2). A clearly preferred response must win by more than a slightly preferred one."""
    return _mean(-F.logsigmoid(r_c - r_r - scale * margin), weight)


def bradley_terry_soft(
    r_c: torch.Tensor, r_r: torch.Tensor, smoothing: float = 0.1, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Label-smoothed Bradley-Terry, -(1-e) log sigmoid(d) - e log sigmoid(-d) with d = r_c - r_r: Secrets of
    RLHF part II (Wang et al. 2024, sec. 3): a label is taken to be wrong with probability e, so noisy pairs
    cannot push the reward gap without bound."""
    delta = r_c - r_r
    return _mean(-(1 - smoothing) * F.logsigmoid(delta) - smoothing * F.logsigmoid(-delta), weight)


def attribute_regression(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error over the rated attributes only (mask 1 where a rating exists): SteerLM / HelpSteer2
    (Wang et al. 2024) regression reward models. pred, target, mask: (batch, attributes)."""
    squared = (pred - target) ** 2 * mask
    # Per example: the mean over its rated attributes; an example with no ratings contributes nothing.
    rated = mask.sum(dim=-1)
    per_example = squared.sum(dim=-1) / rated.clamp_min(1)
    keep = (rated > 0).to(pred.dtype)
    weight = keep if weight is None else weight * keep
    if weight.sum() == 0:
        return pred.sum() * 0  # no ratings in this batch: a zero that keeps the graph
    return _mean(per_example, weight)


def combined(
    r_c: torch.Tensor,
    r_r: torch.Tensor,
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    regression_weight: float = 0.5,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bradley-Terry plus weighted attribute regression on the same model: HelpSteer2-Preference (Wang et al.
    2024), which found the two objectives complementary. pred/target/mask cover chosen and rejected responses."""
    pair_loss = bradley_terry(r_c, r_r, weight)
    # pred rows are chosen then rejected, so the example weights repeat.
    rows = None if weight is None else torch.cat([weight, weight])
    return pair_loss + regression_weight * attribute_regression(pred, target, mask, rows)
