"""Pure tensor functions of the PPO update (PAPER.md §1.8; must-haves 16-19).

Every mean is over all B x L tokens with no masking, as in the reference code's ``PPOTrainer.loss``;
``mask`` arguments exist for agents that do mask, and default to None (all tokens).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    if mask is None:
        return x.mean()
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Biased (population) variance, as ``tf.nn.moments`` (PAPER.md §4.2 detail 18)."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def whiten(
    x: torch.Tensor, shift_mean: bool = True, mask: torch.Tensor | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """``(x - mu) / sqrt(var + eps)``, with the mean added back when ``shift_mean=False`` (§1.8 steps 1, 3).

    Reward whitening uses ``shift_mean=False`` (only the scale changes); advantage whitening ``True``.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over fixed-length responses (§1.8 step 2; must-have 17).

    ``delta_t = r_t + gamma V_{t+1} - V_t`` with ``V_L = 0``; ``A_t = delta_t + gamma lam A_{t+1}``; the
    returns ``A + V`` come from the unwhitened advantages.

    Args:
        rewards, values: (B, L).

    Returns:
        ``(advantages, returns)``, both (B, L).
    """
    if rewards.shape != values.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)} and values {tuple(values.shape)} must have the same shape."
        )
    length = rewards.shape[1]
    last = torch.zeros_like(rewards[:, 0])
    advantages = torch.empty_like(rewards)
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    return advantages, advantages + values


class PPOLoss(NamedTuple):
    loss: torch.Tensor
    pg_loss: torch.Tensor
    vf_loss: torch.Tensor
    pg_clipfrac: torch.Tensor
    vf_clipfrac: torch.Tensor
    approxkl: torch.Tensor
    ratio: torch.Tensor


def ppo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    cliprange: float = 0.2,
    cliprange_value: float = 0.2,
    vf_coef: float = 0.1,
    mask: torch.Tensor | None = None,
) -> PPOLoss:
    """Clipped policy loss + ``vf_coef`` x clipped value loss, no entropy bonus (§1.8 steps 4-7; must-have 19).

    ``advantages`` are expected already whitened. ``approxkl = 0.5 mean (log pi - log pi_old)^2``.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = masked_mean(torch.maximum(pg1, pg2), mask)
    v_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    vf1 = (values - returns) ** 2
    vf2 = (v_clipped - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.maximum(vf1, vf2), mask)
    return PPOLoss(
        loss=pg_loss + vf_coef * vf_loss,
        pg_loss=pg_loss,
        vf_loss=vf_loss,
        pg_clipfrac=masked_mean((pg2 > pg1).float(), mask),
        vf_clipfrac=masked_mean((vf2 > vf1).float(), mask),
        approxkl=0.5 * masked_mean(log_ratio**2, mask),
        ratio=ratio,
    )


def logprobs_from_logits(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``log_softmax(logits / T)`` gathered at ``tokens`` (temperature inside every log-prob; must-have 2)."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return torch.gather(logp, -1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)
