"""Reward-model losses for the four label types (PAPER.md §1.3 table; must-have 7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def best_of_n_loss(rewards: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """``-log softmax(r)[best]`` averaged over the batch (``label_types.PickBest``).

    Args:
        rewards: (B, N) rewards of the N samples of each question.
        best: (B,) index of the chosen sample.
    """
    if rewards.dim() != 2 or best.shape != (rewards.shape[0],):
        raise ValueError(
            f"rewards must be (B, N) and best (B,), got {tuple(rewards.shape)} and {tuple(best.shape)}."
        )
    if (best < 0).any() or (best >= rewards.shape[1]).any():
        raise ValueError(f"best indices {best.tolist()} must lie in [0, {rewards.shape[1]}).")
    return F.cross_entropy(rewards, best.long())


def pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry: ``-log sigmoid(r_chosen - r_rejected)``; equal to best-of-2."""
    return -F.logsigmoid(chosen - rejected).mean()


def scalar_rating_loss(predicted: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """``mean (score - r(x, y))^2`` (``scalar_rating``)."""
    return ((score - predicted) ** 2).mean()


def scalar_compare_loss(
    reward0: torch.Tensor, reward1: torch.Tensor, difference: torch.Tensor
) -> torch.Tensor:
    """``mean (difference - (r(x, y1) - r(x, y0)))^2`` (``scalar_compare``)."""
    return ((difference - (reward1 - reward0)) ** 2).mean()
