"""KL penalty: per-token estimators, KL-shaped rewards and the KL-coefficient controllers.

PAPER.md §1.4 (shaped reward, must-have 13) and §1.5 (controllers, must-have 14).
"""

from __future__ import annotations

from typing import Literal

import torch

KLEstimator = Literal["k1", "k3"]


def kl_per_token(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k1"
) -> torch.Tensor:
    """Single-sample per-token KL(pi || rho) estimates for the sampled tokens, shape (B, L).

    ``k1`` (the paper and reference code, §1.4): ``log pi - log rho``; unbiased, can be negative.
    ``k3`` (Schulman's estimator, an option): ``(r - 1) - log r`` with ``r = rho / pi``; unbiased and >= 0.
    """
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)} and ref_logprobs {tuple(ref_logprobs.shape)} differ in shape."
        )
    if estimator == "k1":
        return logprobs - ref_logprobs
    if estimator == "k3":
        log_ratio = ref_logprobs - logprobs
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"Unknown KL estimator {estimator!r}; use 'k1' (the paper's) or 'k3'.")


def shaped_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    kl_coef: float,
    estimator: KLEstimator = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token KL-shaped rewards (PAPER.md §1.4, ``train_policy.compute_rewards``; must-have 13).

    ``R_t = -beta * KL_t`` for every response token and ``R_{L-1} += score``: the score always goes on
    the last index of the fixed-length response, even when truncation happened earlier.

    Args:
        scores: (B,) scores of the truncated responses (penalty already applied by the env).
        logprobs: (B, L) tempered log-probs of the sampled tokens under pi.
        ref_logprobs: (B, L) the same under rho.
        kl_coef: beta.

    Returns:
        ``(rewards, non_score_rewards)``, both (B, L).
    """
    if scores.dim() != 1 or scores.shape[0] != logprobs.shape[0]:
        raise ValueError(f"scores must be (B,) with B = {logprobs.shape[0]}, got {tuple(scores.shape)}.")
    non_score = -kl_coef * kl_per_token(logprobs, ref_logprobs, estimator)  # (B, L)
    rewards = non_score.clone()
    rewards[:, -1] += scores.to(rewards.dtype)
    return rewards, non_score


class FixedKLController:
    """A constant beta (the summarization presets: 0.03 TL;DR, 0.01 or 0.1 CNN/DM; §1.5)."""

    def __init__(self, kl_coef: float) -> None:
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}.")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"type": "fixed", "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional control of beta towards a target KL (PAPER.md §1.5; must-have 14).

    ``form="horizon"`` (the reference code, default): ``e = clip(KL/target - 1, -0.2, 0.2)`` and
    ``beta <- beta * (1 + e * n_steps / horizon)`` with ``n_steps`` the episodes in the PPO batch.
    ``form="paper"``: ``beta <- beta * (1 + K_beta * e)`` with ``K_beta = 0.1`` (paper §2.2). Call
    :meth:`update` once per PPO iteration, after the gradient steps, with the batch's mean KL.
    """

    def __init__(
        self,
        init_kl_coef: float,
        target: float,
        horizon: int = 10_000,
        form: Literal["horizon", "paper"] = "horizon",
        k_beta: float = 0.1,
    ) -> None:
        if init_kl_coef <= 0 or target <= 0 or horizon <= 0:
            raise ValueError(
                f"init_kl_coef ({init_kl_coef}), target ({target}) and horizon ({horizon}) must all be > 0."
            )
        if form not in ("horizon", "paper"):
            raise ValueError(f"form must be 'horizon' (reference code) or 'paper', got {form!r}.")
        self.value = float(init_kl_coef)
        self.target, self.horizon, self.form, self.k_beta = float(target), int(horizon), form, float(k_beta)

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        if self.form == "horizon":
            self.value *= 1.0 + error * n_steps / self.horizon
        else:
            self.value *= 1.0 + self.k_beta * error
        return self.value

    def state_dict(self) -> dict:
        return {
            "type": "adaptive",
            "value": self.value,
            "target": self.target,
            "horizon": self.horizon,
            "form": self.form,
            "k_beta": self.k_beta,
        }

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
        self.target, self.horizon = float(state["target"]), int(state["horizon"])
        self.form, self.k_beta = state["form"], float(state["k_beta"])
