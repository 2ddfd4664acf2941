"""PPO for the token-level environments, as the paper and its reference code run it (PAPER.md §1.4-1.8).

One iteration (DESIGN.md, "One PPO iteration, as data flows"):

1. rollout: reset the vector env (B prompts), sample B fixed-length responses with the policy (KV cache,
   temperature), step the env one token column at a time (the env truncates and scores), recompute
   tempered log-probs and values with the policy and the frozen reference, and shape per-token rewards
   (``-beta * KL`` on every token, the score on the last; ``rewards.kl``).
2. update: ``epochs`` x ``minibatches`` with a fresh permutation per epoch: reward whitening (optional),
   GAE (gamma 1, lambda 0.95), advantage whitening, clipped policy + ``vf_coef`` x clipped value loss,
   gradient accumulation over ``grad_accum`` micro-batches, TF-style Adam, linear LR decay.
3. control: ``beta`` from the KL controller, once per iteration after the gradient steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch

from agents.core import compute_gae, masked_mean, ppo_loss, whiten
from agents.policy import PolicyWithValue
from rewards.kl import AdaptiveKLController, FixedKLController, kl_per_token, shaped_rewards
from rewards.optim import linear_decay, make_optimizer


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters; defaults are the reference code's books values (PAPER.md §1.8 table).

    Attributes:
        total_episodes: episodes over the run (1M in the code, 2M in the paper); sets the LR schedule.
        batch_size: episodes per PPO iteration (512 books, 32 summarization in the code).
        minibatches: minibatches per epoch (1 in the paper and code).
        grad_accum: micro-batches per minibatch whose gradients are averaged before a step.
        epochs: PPO epochs per batch (4).
        lr: Adam learning rate (1e-5 books, 2e-6 summarization), linearly decayed to 0 when ``lr_decay``.
        optimizer: ``tf_adam`` (the reference code's epsilon placement) or ``torch_adam``.
        gamma, lam: GAE parameters (1, 0.95).
        cliprange, cliprange_value, vf_coef: clipped-loss settings (0.2, 0.2, 0.1); no entropy bonus.
        whiten_rewards: whiten shaped rewards per minibatch, scale only (on for books, off for summaries).
        kl_coef, adaptive_kl, target_kl, kl_horizon, kl_form: the KL controller (§1.5).
        kl_estimator: ``k1`` (the paper's) or ``k3``.
        old_logprobs: ``sampling`` (the reference code: log-probs recorded while sampling) or ``recompute``
            (the PyTorch reproduction's separate forward pass, [R] deviation (a)).
        seed: base seed; rank r uses ``seed + r * 100003`` (§1.8).
    """

    total_episodes: int = 1_000_000
    batch_size: int = 512
    minibatches: int = 1
    grad_accum: int = 1
    epochs: int = 4
    lr: float = 1e-5
    lr_decay: bool = True
    optimizer: Literal["tf_adam", "torch_adam"] = "tf_adam"
    adam_eps: float = 1e-5
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    whiten_rewards: bool = True
    kl_coef: float = 0.15
    adaptive_kl: bool = True
    target_kl: float = 6.0
    kl_horizon: int = 10_000
    kl_form: Literal["horizon", "paper"] = "horizon"
    kl_estimator: Literal["k1", "k3"] = "k1"
    old_logprobs: Literal["sampling", "recompute"] = "sampling"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size % (self.minibatches * self.grad_accum):
            raise ValueError(
                f"batch_size={self.batch_size} must be divisible by minibatches x grad_accum = "
                f"{self.minibatches} x {self.grad_accum}."
            )
        if self.whiten_rewards and self.batch_size // self.minibatches < 2:
            raise ValueError(
                "reward whitening needs at least 2 episodes per minibatch; set whiten_rewards=False."
            )

    @property
    def num_updates(self) -> int:
        """ceil(total_episodes / batch_size), as the reference code (§4.5 (c))."""
        return math.ceil(self.total_episodes / self.batch_size)


def make_kl_controller(cfg: PPOConfig) -> AdaptiveKLController | FixedKLController:
    if cfg.adaptive_kl:
        return AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon, form=cfg.kl_form)
    return FixedKLController(cfg.kl_coef)


@dataclass
class Rollout:
    """One batch of episodes, everything the update needs (batch-first)."""

    context: torch.Tensor  # (B, Lc) left-padded context ids
    responses: torch.Tensor  # (B, Lr) raw sampled responses
    logprobs: torch.Tensor  # (B, Lr) old tempered log-probs
    ref_logprobs: torch.Tensor  # (B, Lr)
    values: torch.Tensor  # (B, Lr) old values
    scores: torch.Tensor  # (B,) env scores (penalty applied)
    rewards: torch.Tensor  # (B, Lr) KL-shaped rewards
    non_score_rewards: torch.Tensor  # (B, Lr)
    entropy: torch.Tensor  # (B, Lr)
    valid: np.ndarray  # (B,)
    texts: list[str]


class PPOAgent:
    """PPO on a :class:`textenv.vector.TextVectorEnv` (or anything with its interface)."""

    def __init__(
        self, policy: PolicyWithValue, envs, config: PPOConfig, reference: PolicyWithValue | None = None
    ):
        self.policy, self.envs, self.config = policy, envs, config
        self.reference = reference if reference is not None else policy.reference()
        if envs.num_envs != config.batch_size:
            raise ValueError(
                f"the vector env has {envs.num_envs} envs; PPOConfig.batch_size is {config.batch_size}."
            )
        self.context_length = envs.unwrapped.runtime.context_length
        self.response_length = envs.unwrapped.config.response_length
        self.kl_ctl = make_kl_controller(config)
        params = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(params, lr=config.lr, kind=config.optimizer, eps=config.adam_eps)
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        self.iteration = 0
        self.np_rng = np.random.default_rng(config.seed)

    # ----------------------------------------------------------------------------------- rollout
    @torch.no_grad()
    def rollout(self) -> Rollout:
        cfg = self.config
        obs, _ = self.envs.reset(seed=int(self.np_rng.integers(2**31)))
        context = torch.as_tensor(obs[:, : self.context_length])
        self.policy.eval()
        responses, sample_logprobs = self.policy.sample(
            context, self.response_length, generator=self.generator
        )
        info, rewards_env = {}, None
        for t in range(self.response_length):
            _, rewards_env, terminated, _, info = self.envs.step(responses[:, t].numpy())
        if not terminated.all():
            raise RuntimeError("the environment did not terminate after response_length steps.")
        scores = torch.as_tensor(rewards_env, dtype=torch.float32)
        full = torch.cat([context, responses], dim=1)
        stats = self.policy.forward_stats(full, self.context_length)
        ref = self.reference.forward_stats(full, self.context_length)
        logprobs = sample_logprobs if cfg.old_logprobs == "sampling" else stats.logprobs
        rewards, non_score = shaped_rewards(
            scores, logprobs, ref.logprobs, self.kl_ctl.value, cfg.kl_estimator
        )
        return Rollout(
            context=context,
            responses=responses,
            logprobs=logprobs,
            ref_logprobs=ref.logprobs,
            values=stats.values,
            scores=scores,
            rewards=rewards,
            non_score_rewards=non_score,
            entropy=stats.entropy,
            valid=np.asarray(info["valid"]),
            texts=list(info["truncated_text"]),
        )

    # ------------------------------------------------------------------------------------ update
    def update(self, batch: Rollout) -> dict:
        cfg = self.config
        lr = linear_decay(cfg.lr, self.iteration, cfg.num_updates) if cfg.lr_decay else cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.policy.train()
        n = cfg.batch_size
        mb = n // cfg.minibatches
        micro = mb // cfg.grad_accum
        logs: dict[str, list[float]] = {}
        for _epoch in range(cfg.epochs):
            order = torch.randperm(n, generator=self.generator)
            for start in range(0, n, mb):
                idx = order[start : start + mb]
                rewards = batch.rewards[idx]
                if cfg.whiten_rewards:  # per minibatch, scale only (§1.8 step 1)
                    rewards = whiten(rewards, shift_mean=False)
                advantages, returns = compute_gae(rewards, batch.values[idx], cfg.gamma, cfg.lam)
                advantages = whiten(advantages)
                self.optimizer.zero_grad(set_to_none=True)
                for m in range(0, mb, micro):
                    sub = idx[m : m + micro]
                    full = torch.cat([batch.context[sub], batch.responses[sub]], dim=1)
                    stats = self.policy.forward_stats(full, self.context_length)
                    out = ppo_loss(
                        stats.logprobs,
                        batch.logprobs[sub],
                        advantages[m : m + micro],
                        stats.values,
                        batch.values[sub],
                        returns[m : m + micro],
                        cfg.cliprange,
                        cfg.cliprange_value,
                        cfg.vf_coef,
                    )
                    (out.loss / cfg.grad_accum).backward()
                    var_returns = returns[m : m + micro].var(unbiased=False)
                    for key, value in (
                        ("ppo/loss/total", out.loss),
                        ("ppo/loss/policy", out.pg_loss),
                        ("ppo/loss/value", out.vf_loss),
                        ("ppo/policy/approxkl", out.approxkl),
                        ("ppo/policy/clipfrac", out.pg_clipfrac),
                        ("ppo/val/clipfrac", out.vf_clipfrac),
                        ("ppo/val/error", masked_mean((stats.values - returns[m : m + micro]) ** 2)),
                        ("ppo/returns/mean", returns[m : m + micro].mean()),
                        ("ppo/returns/var", var_returns),
                        ("ppo/policy/ratio_mean", out.ratio.mean()),
                    ):
                        logs.setdefault(key, []).append(float(value.detach()))
                self.optimizer.step()
        self.policy.eval()
        metrics = {k: float(np.mean(v)) for k, v in logs.items()}
        metrics["ppo/val/var_explained"] = 1.0 - metrics["ppo/val/error"] / max(
            metrics["ppo/returns/var"], 1e-8
        )
        metrics["ppo/lr"] = lr
        return metrics

    # ------------------------------------------------------------------------------- iteration
    def step(self) -> dict:
        """One PPO iteration: rollout, update, KL control; returns the reference code's metric keys."""
        t0 = time.perf_counter()
        batch = self.rollout()
        t_rollout = time.perf_counter() - t0
        kl = kl_per_token(batch.logprobs, batch.ref_logprobs, self.config.kl_estimator).sum(1)  # (B,)
        metrics = {
            "objective/kl": float(kl.mean()),
            "objective/kl_coef": self.kl_ctl.value,
            "objective/score": float(batch.scores.mean()),
            "objective/score_total": float(batch.scores.mean() + batch.non_score_rewards.sum(1).mean()),
            "objective/entropy": float((-batch.logprobs).sum(1).mean()),
            "objective/valid_rate": float(batch.valid.mean()),
        }
        t1 = time.perf_counter()
        metrics.update(self.update(batch))
        self.kl_ctl.update(metrics["objective/kl"], self.config.batch_size)
        self.iteration += 1
        metrics.update(
            {
                "time/rollout": t_rollout,
                "time/update": time.perf_counter() - t1,
                "time/iteration": time.perf_counter() - t0,
                "iteration": self.iteration,
                "episodes": self.iteration * self.config.batch_size,
            }
        )
        self.last_batch = batch
        return metrics

    def config_dict(self) -> dict:
        return asdict(self.config)
