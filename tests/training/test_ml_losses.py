"""The loss functions against values worked out by hand (log sigma(1) = -0.313262, log sigma(-1) = -1.313262)."""

import math

import pytest
import torch

from training.ml import losses

NLS1 = math.log1p(math.exp(-1))  # -log sigmoid(1)
NLS_1 = math.log1p(math.exp(1))  # -log sigmoid(-1)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_bradley_terry_is_minus_log_sigmoid_of_the_gap() -> None:
    assert losses.bradley_terry(t(1.0, 0.5), t(0.0, 0.5)).item() == pytest.approx((NLS1 + math.log(2)) / 2)


def test_bradley_terry_weights_each_pair() -> None:
    loss = losses.bradley_terry(t(1.0, 0.0), t(0.0, 0.0), weight=t(1.0, 3.0))
    assert loss.item() == pytest.approx((NLS1 + 3 * math.log(2)) / 4)


def test_margin_moves_the_target_gap() -> None:
    # A gap of 2 with margin 1 at scale 1 scores like a plain gap of 1; scale 0 is plain Bradley-Terry.
    assert losses.bradley_terry_margin(t(2.0), t(0.0), t(1.0), 1.0).item() == pytest.approx(NLS1)
    assert losses.bradley_terry_margin(t(1.0), t(0.0), t(1.0), 0.0).item() == pytest.approx(NLS1)
    assert losses.bradley_terry_margin(t(2.0), t(0.0), t(0.5), 2.0).item() == pytest.approx(NLS1)


def test_soft_labels_mix_both_directions() -> None:
    loss = losses.bradley_terry_soft(t(1.0), t(0.0), smoothing=0.1)
    assert loss.item() == pytest.approx(0.9 * NLS1 + 0.1 * NLS_1)
    assert losses.bradley_terry_soft(t(1.0), t(0.0), smoothing=0.0).item() == pytest.approx(NLS1)


def test_soft_labels_stop_rewarding_an_ever_larger_gap() -> None:
    # With smoothing the loss has its minimum at a finite gap, log((1 - e) / e): beyond it the loss grows.
    best = math.log(0.9 / 0.1)
    at_best = losses.bradley_terry_soft(t(best), t(0.0), smoothing=0.1).item()
    assert losses.bradley_terry_soft(t(best + 3), t(0.0), smoothing=0.1).item() > at_best


def test_attribute_regression_averages_rated_attributes_only() -> None:
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, 3.0]])
    target = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    # Row 0: (1-0)^2 over 1 rated = 1; row 1: unrated, left out; row 2: (4 + 1) / 2 = 2.5.
    assert losses.attribute_regression(pred, target, mask).item() == pytest.approx((1 + 2.5) / 2)


def test_attribute_regression_without_ratings_is_zero_with_a_graph() -> None:
    pred = torch.ones(2, 3, requires_grad=True)
    loss = losses.attribute_regression(pred, torch.zeros(2, 3), torch.zeros(2, 3))
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad is not None


def test_combined_adds_weighted_regression_to_bradley_terry() -> None:
    pred = torch.tensor([[2.0], [0.0]])  # chosen then rejected
    target = torch.tensor([[0.0], [0.0]])
    mask = torch.tensor([[1.0], [1.0]])
    loss = losses.combined(t(1.0), t(0.0), pred, target, mask, regression_weight=0.5)
    assert loss.item() == pytest.approx(NLS1 + 0.5 * (4 + 0) / 2)
