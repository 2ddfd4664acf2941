"""GRPO: group-relative policy optimisation (Shao et al. 2024, DeepSeekMath §4.1) on the text envs.

No value function: ``k`` responses are sampled for each prompt and each response's advantage is its
reward standardised within its group. With ``R_i`` the sequence reward of response ``i`` of a group:

    A_i  = (R_i - mean_j R_j) / (std_j R_j + eps)          (``scale_rewards = false``: no division)
    loss = mean_i mean_t [ max(-A_i * ratio_it, -A_i * clip(ratio_it, 1 - eps_c, 1 + eps_c)) + l_it ]

with ``ratio_it = pi(y_it) / pi_old(y_it)`` and the KL to the reference ``rho`` in one of two places,
both named options (``kl_in``):

* ``"reward"`` (default, the paper's, PAPER.md §1.4): ``R_i = r_i - beta * sum_t KL_t`` with the
  configured estimator, ``l_it = 0``;
* ``"loss"`` (DeepSeekMath): ``R_i = r_i`` and ``l_it = beta * k3_it`` with the unbiased non-negative
  estimator ``k3 = rho/pi - log(rho/pi) - 1`` of the current policy, differentiated through ``pi``.

``beta`` follows the shared KL controller (``[kl]``); ``std`` is the group's sample standard deviation and
``eps = 1e-4`` (as TRL's GRPO). The ``k`` responses of a prompt come from the env itself: the vector env
is reset with the same seed for each group of ``k`` sub-environments.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass

from agents.group import GroupAgent, SequenceBatch
from agents.loop import Samples
from agents.sections import OBJECTIVE_CURVES, STRICT, AlgoConfig, Algorithm
from textenv.kl import kl_per_token

__all__ = ["ALGO", "GRPOAgent", "GRPOConfig", "group_relative_advantages", "grpo_loss"]

ADV_EPS = 1e-4


@dataclass(frozen=True, config=STRICT)
class GRPOConfig(AlgoConfig):
    """GRPO's own hyper-parameters (the shared ones are :class:`agents.loop.AlgoConfig`'s).

    Attributes:
        k: responses per prompt (>= 2; DeepSeekMath: 64); ``batch_size`` is prompts x ``k``.
        cliprange: the ratio clip (0.2).
        kl_in: ``"reward"`` (the KL summed into the sequence reward, the paper's) or ``"loss"`` (k3 per
            token in the loss, DeepSeekMath's).
        scale_rewards: divide by the group's standard deviation (DeepSeekMath); false: only centre.
    """

    epochs: int = Field(1, gt=0)
    k: int = Field(4, ge=2)
    cliprange: float = Field(0.2, gt=0)
    kl_in: Literal["reward", "loss"] = "reward"
    scale_rewards: bool = True

    def __post_init__(self) -> None:
        if self.batch_size % self.k or (self.batch_size // self.k) % self.minibatches:
            raise ValueError(
                f"batch_size={self.batch_size} must be prompts x k={self.k} with the prompts divisible into "
                f"minibatches={self.minibatches}."
            )


def group_relative_advantages(rewards: torch.Tensor, k: int, scale: bool = True) -> torch.Tensor:
    """``(R_i - mean_g) / (std_g + eps)`` within consecutive groups of ``k``; ``rewards`` (B,), B = n * k."""
    groups = rewards.reshape(-1, k)
    centred = groups - groups.mean(1, keepdim=True)
    if scale:
        centred = centred / (groups.std(1, keepdim=True) + ADV_EPS)
    return centred.reshape(-1)


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    cliprange: float,
    kl_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped group-relative loss (module docstring), averaged over tokens then responses.
    ``logprobs``/``old_logprobs``/``ref_logprobs`` (B, L), ``advantages`` (B,); ``kl_coef`` > 0 adds
    ``beta * k3`` per token. Returns ``(loss, {"policy/clipfrac", "policy/approxkl", "kl_loss"})``."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    adv = advantages[:, None]
    per_token = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange))
    k3 = kl_per_token(logprobs, ref_logprobs, "k3")
    loss = (per_token + kl_coef * k3).mean(1).mean()
    return loss, {
        "policy/clipfrac": ((ratio - 1.0).abs() > cliprange).float().mean(),
        "policy/approxkl": 0.5 * (log_ratio**2).mean(),
        "kl_loss": (kl_coef * k3).mean(1).mean(),
    }


class GRPOAgent(GroupAgent):
    """GRPO on a :class:`textenv.vector.TextVectorEnv` whose ``num_envs`` is this process's batch."""

    prefix = "grpo"

    def sequence_rewards(self, s: Samples) -> torch.Tensor:
        return super().sequence_rewards(s) if self.config.kl_in == "reward" else s.scores

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        return group_relative_advantages(rewards, self.config.k, self.config.scale_rewards)

    def minibatch_loss(self, stats, batch: SequenceBatch, idx: torch.Tensor):
        beta = self.kl_ctl.value if self.config.kl_in == "loss" else 0.0
        return grpo_loss(
            stats.logprobs,
            batch.logprobs[idx],
            batch.ref_logprobs[idx],
            batch.advantages[idx],
            self.config.cliprange,
            beta,
        )


ALGO = Algorithm(
    name="grpo",
    config=GRPOConfig,
    agent=GRPOAgent,
    curves=(
        *OBJECTIVE_CURVES,
        ("grpo/advantage_std", "advantage std"),
        ("grpo/policy/clipfrac", "policy clip fraction"),
    ),
    summary="group-relative advantages over k responses per prompt, clipped objective (DeepSeekMath)",
)
