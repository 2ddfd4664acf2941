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

import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from agents import distributed as D
from agents.policy import PolicyWithValue
from agents.ppo import AgentState, checked_grad_norm, make_kl_controller
from rewards.optim import linear_decay, make_optimizer
from textenv.kl import kl_per_token
from textenv.models.trunk import Features

__all__ = ["RLOOAgent", "RLOOBatch", "RLOOConfig", "leave_one_out_advantages", "rloo_loss"]


@dataclass(frozen=True)
class RLOOConfig:
    """RLOO hyper-parameters. The KL settings default to the paper's books values (§1.8); ``k = 4`` as in
    the RLOO paper's main runs.

    Attributes:
        total_episodes: episodes over the run; sets the LR schedule.
        batch_size: episodes per iteration (queries x ``k``).
        k: responses per query (>= 2).
        minibatches, epochs: gradient steps per batch (1 x 1: plain on-policy REINFORCE-LOO).
        lr, lr_decay, optimizer, adam_eps: as :class:`agents.ppo.PPOConfig`.
        cliprange: the ratio clip used once the policy has moved within an iteration.
        normalize_advantages: divide the leave-one-out advantages by their batch std (an option; off in
            RLOO's paper).
        kl_coef, adaptive_kl, target_kl, kl_horizon, kl_form, kl_estimator: the KL penalty (§1.4-1.5).
        halt_kl_factor, halt_kl_patience: the andon cord, as in PPO.
        seed: base seed; rank r uses ``seed + r * 100003``.
    """

    total_episodes: int = 1_000_000
    batch_size: int = 512
    k: int = 4
    minibatches: int = 1
    epochs: int = 1
    lr: float = 1e-5
    lr_decay: bool = True
    optimizer: Literal["tf_adam", "torch_adam"] = "tf_adam"
    adam_eps: float = 1e-5
    cliprange: float = 0.2
    normalize_advantages: bool = False
    kl_coef: float = 0.15
    adaptive_kl: bool = True
    target_kl: float = 6.0
    kl_horizon: int = 10_000
    kl_form: Literal["horizon", "paper"] = "horizon"
    kl_estimator: Literal["k1", "k3"] = "k1"
    halt_kl_factor: float = 3.0
    halt_kl_patience: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"k={self.k}: the leave-one-out baseline needs at least 2 responses per query.")
        if self.batch_size % self.k:
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of k={self.k} (queries x k).")
        if (self.batch_size // self.k) % self.minibatches:
            raise ValueError(
                f"the {self.batch_size // self.k} queries per batch must divide into minibatches={self.minibatches}."
            )

    @property
    def num_updates(self) -> int:
        return math.ceil(self.total_episodes / self.batch_size)


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


@dataclass
class RLOOBatch:
    context: torch.Tensor  # (B, Lc)
    responses: torch.Tensor  # (B, Lr)
    logprobs: torch.Tensor  # (B, Lr) sampling-time tempered log-probs
    ref_logprobs: torch.Tensor  # (B, Lr)
    scores: torch.Tensor  # (B,)
    rewards: torch.Tensor  # (B,) score - beta * KL (sequence level)
    advantages: torch.Tensor  # (B,)
    valid: np.ndarray
    texts: list[str]
    features: Features | None = None


class RLOOAgent(AgentState):
    """RLOO on a :class:`textenv.vector.TextVectorEnv` whose ``num_envs`` is this process's batch."""

    def __init__(
        self, policy: PolicyWithValue, envs, config: RLOOConfig, reference: PolicyWithValue | None = None
    ) -> None:
        self.policy, self.envs, self.config = policy, envs, config
        self.reference = reference if reference is not None else policy.reference()
        self.rank, self.world = D.rank(), D.world_size()
        if config.batch_size % (self.world * config.k):
            raise ValueError(
                f"batch_size={config.batch_size} must split into {self.world} processes x groups of k={config.k}."
            )
        self.local_batch = config.batch_size // self.world
        if envs.num_envs != self.local_batch:
            raise ValueError(
                f"the vector env has {envs.num_envs} envs; this process needs batch_size / processes = "
                f"{config.batch_size} / {self.world} = {self.local_batch}."
            )
        self.context_length = envs.unwrapped.runtime.context_length
        self.response_length = envs.unwrapped.config.response_length
        self.kl_ctl = make_kl_controller(config)
        self.params = [p for n, p in policy.named_parameters() if p.requires_grad and "value" not in n]
        if not self.params:
            raise ValueError("the policy has no trainable parameters; check set_trainable / enable_lora.")
        self.optimizer = make_optimizer(self.params, lr=config.lr, kind=config.optimizer, eps=config.adam_eps)
        seed = config.seed + self.rank * D.RANK_SEED_STRIDE
        self.device = next(policy.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.np_rng = np.random.default_rng(seed)
        self.iteration = 0
        self.kl_over = 0
        self.timings: dict[str, float] = {}

    @torch.no_grad()
    def rollout(self) -> RLOOBatch:
        cfg = self.config
        groups = self.local_batch // cfg.k
        seeds = self.np_rng.integers(2**31, size=groups)
        obs, _ = self.envs.reset(seed=[int(s) for s in np.repeat(seeds, cfg.k)])  # k envs per prompt
        context = torch.as_tensor(obs[:, : self.context_length]).to(self.device)
        self.policy.eval()
        t0 = time.perf_counter()
        responses, logprobs = self.policy.sample(context, self.response_length, generator=self.generator)
        t1 = time.perf_counter()
        for t in range(self.response_length):
            _, env_rewards, terminated, _, info = self.envs.step(responses[:, t].cpu().numpy())
        if not terminated.all():
            raise RuntimeError("the environment did not terminate after response_length steps.")
        scores = torch.as_tensor(env_rewards, dtype=torch.float32, device=self.device)
        t2 = time.perf_counter()
        full = torch.cat([context, responses], dim=1)
        feats = self.policy.features(full)
        ref = self.reference.forward_stats(full, self.context_length, feats).logprobs
        self.timings = {"sample": t1 - t0, "score": t2 - t1, "reference": time.perf_counter() - t2}
        kl = kl_per_token(logprobs, ref, cfg.kl_estimator).sum(1)  # (B,)
        rewards = scores - self.kl_ctl.value * kl  # §1.4, the KL summed into the sequence reward
        advantages = leave_one_out_advantages(rewards, cfg.k)
        if cfg.normalize_advantages:
            advantages = D.global_whiten(advantages)  # LOO advantages have mean 0: this divides by the std
        return RLOOBatch(
            context,
            responses,
            logprobs,
            ref,
            scores,
            rewards,
            advantages,
            np.asarray(info["valid"]),
            list(info["truncated_text"]),
            feats,
        )

    def update(self, batch: RLOOBatch) -> dict:
        cfg = self.config
        lr = linear_decay(cfg.lr, self.iteration, cfg.num_updates) if cfg.lr_decay else cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.policy.train()
        groups = self.local_batch // cfg.k
        per_mb = groups // cfg.minibatches
        logs: dict[str, list[float]] = {}
        for _epoch in range(cfg.epochs):
            order = torch.randperm(groups, generator=self.generator, device=self.device)
            for start in range(0, groups, per_mb):
                g = order[start : start + per_mb]
                idx = (g[:, None] * cfg.k + torch.arange(cfg.k, device=self.device)).reshape(-1)
                full = torch.cat([batch.context[idx], batch.responses[idx]], dim=1)
                feats = batch.features.index(idx) if batch.features is not None else None
                stats = self.policy.forward_stats(full, self.context_length, feats)
                loss, clipfrac, approxkl = rloo_loss(
                    stats.logprobs, batch.logprobs[idx], batch.advantages[idx], cfg.cliprange
                )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = checked_grad_norm(self.params, self.iteration, float(loss.detach()))
                self.optimizer.step()
                for key, value in (
                    ("rloo/loss", float(loss)),
                    ("rloo/policy/clipfrac", float(clipfrac)),
                    ("rloo/policy/approxkl", float(approxkl)),
                    ("rloo/grad_norm", grad_norm),
                ):
                    logs.setdefault(key, []).append(value)
        self.policy.eval()
        metrics = {k: float(np.mean(v)) for k, v in logs.items()}
        metrics["rloo/lr"] = lr
        return metrics

    def rollout_metrics(self, batch: RLOOBatch) -> dict:
        """The PPO agent's ``objective/*`` keys (``score_total``: the KL-penalised sequence reward) and the
        leave-one-out advantages' spread."""
        return {
            **super().rollout_metrics(batch),
            "objective/score_total": float(batch.rewards.mean()),
            "rloo/advantage_std": float(batch.advantages.std(unbiased=False)),
        }
