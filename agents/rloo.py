"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024), on the same env and policy as PPO.

A second in-house algorithm, written only against the environment API (:class:`textenv.vector.TextVectorEnv`)
and the policy (:class:`agents.policy.PolicyWithValue`): neither needed a change. In PAPER.md notation,
with ``k`` responses ``y_1..y_k`` sampled for each query ``x``:

    R(x, y_i) = r(x, y_i) - beta * sum_t [log pi(y_it | x, y_i,<t) - log rho(y_it | x, y_i,<t)]   (§1.4)
    A_i      = R(x, y_i) - 1/(k-1) * sum_{j != i} R(x, y_j)                 (the leave-one-out baseline)
    loss     = mean_i sum_t max(-A_i * ratio_it, -A_i * clip(ratio_it, 1 - eps, 1 + eps))

with ``ratio_it = pi(y_it) / pi_old(y_it)``. On the first (or only) gradient step ratio = 1 and the loss
gradient is exactly REINFORCE's ``-mean_i A_i * grad log pi(y_i | x)``; with several epochs or minibatches
the clipped ratio keeps later steps near the sampling policy (as TRL's RLOO does). There is no value
function: the policy's value head is left untouched. The KL is part of the sequence reward, not a
per-token reward; ``beta`` follows the same controllers as PPO (``textenv.kl``).

The ``k`` responses of a query come from the env itself: the vector env is reset with the same seed for
each group of ``k`` sub-environments, so they draw the same prompt.
"""

from __future__ import annotations

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass

from agents import distributed as D
from agents.group import GroupAgent, SequenceBatch
from agents.sections import OBJECTIVE_CURVES, STRICT, AlgoConfig, Algorithm

__all__ = ["ALGO", "RLOOAgent", "RLOOConfig", "leave_one_out_advantages", "rloo_loss"]


@dataclass(frozen=True, config=STRICT)
class RLOOConfig(AlgoConfig):
    """RLOO's own hyper-parameters (the shared ones are :class:`agents.loop.AlgoConfig`'s); ``k = 4`` as
    in the RLOO paper's main runs, one on-policy epoch.

    Attributes:
        k: responses per query (>= 2); ``batch_size`` is queries x ``k``.
        cliprange: the ratio clip used once the policy has moved within an iteration.
        normalize_advantages: divide the leave-one-out advantages by their batch std (an option; off in
            RLOO's paper).
    """

    epochs: int = Field(1, gt=0)
    k: int = Field(4, ge=2)
    cliprange: float = Field(0.2, gt=0)
    normalize_advantages: bool = False

    def __post_init__(self) -> None:
        if self.batch_size % self.k:
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of k={self.k} (queries x k).")
        if (self.batch_size // self.k) % self.minibatches:
            raise ValueError(
                f"the {self.batch_size // self.k} queries per batch must divide into minibatches={self.minibatches}."
            )


def leave_one_out_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """``A_i = R_i - mean_{j != i} R_j`` within consecutive groups of ``k``; ``rewards`` (B,), B = n * k."""
    groups = rewards.reshape(-1, k)  # (n, k)
    baseline = (groups.sum(1, keepdim=True) - groups) / (k - 1)
    return (groups - baseline).reshape(-1)


def rloo_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The clipped REINFORCE-LOO loss (module docstring): per-token ratios, summed over the response,
    averaged over episodes. ``logprobs``/``old_logprobs`` (B, L), ``advantages`` (B,).

    Returns ``(loss, clipfrac, approxkl)``.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    adv = advantages[:, None]
    losses = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange))
    loss = losses.sum(1).mean()
    clipfrac = ((ratio - 1.0).abs() > cliprange).float().mean()
    approxkl = 0.5 * (log_ratio**2).mean()
    return loss, clipfrac, approxkl


class RLOOAgent(GroupAgent):
    """RLOO on a :class:`textenv.vector.TextVectorEnv` whose ``num_envs`` is this process's batch."""

    prefix = "rloo"

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        advantages = leave_one_out_advantages(rewards, self.config.k)
        if self.config.normalize_advantages:
            advantages = D.global_whiten(advantages)  # LOO advantages have mean 0: this divides by the std
        return advantages

    def minibatch_loss(self, stats, batch: SequenceBatch, idx: torch.Tensor):
        loss, clipfrac, approxkl = rloo_loss(
            stats.logprobs, batch.logprobs[idx], batch.advantages[idx], self.config.cliprange
        )
        return loss, {"policy/clipfrac": clipfrac, "policy/approxkl": approxkl}


ALGO = Algorithm(
    name="rloo",
    config=RLOOConfig,
    agent=RLOOAgent,
    curves=(
        *OBJECTIVE_CURVES,
        ("rloo/advantage_std", "advantage std"),
        ("rloo/policy/clipfrac", "policy clip fraction"),
    ),
    summary="REINFORCE with a leave-one-out baseline over k responses per prompt (Ahmadian et al. 2024)",
)
