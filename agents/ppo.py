"""PPO for the token-level environments, as the paper and its reference code run it (PAPER.md §1.4-1.8).

The iteration skeleton (rollout, andon cord, KL control, checkpoints) is :class:`agents.loop.Agent`'s;
this module holds PPO's own part:

1. rollout: the policy's values on the sampled responses (recorded while sampling, as the reference
   code's ``respond``; ``old_logprobs = "recompute"``: a separate pass) and per-token KL-shaped rewards (``-beta * KL``
   on every token, the score on the last; ``textenv.kl``);
2. update: ``epochs`` x ``minibatches`` with a fresh permutation per epoch: reward whitening (optional),
   GAE (gamma 1, lambda 0.95), advantage whitening, clipped policy + ``vf_coef`` x clipped value loss,
   gradient accumulation over ``grad_accum`` micro-batches, TF-style Adam, linear LR decay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from pydantic.dataclasses import dataclass

from agents import distributed as D
from agents.core import compute_gae, masked_mean, ppo_loss
from agents.loop import Agent, TrainingHalted
from agents.policy import Stats
from agents.sections import OBJECTIVE_CURVES, STRICT, AlgoConfig, Algorithm
from textenv.kl import shaped_rewards
from textenv.models.trunk import Features

__all__ = ["ALGO", "PPOAgent", "PPOConfig", "Rollout", "TrainingHalted"]


@dataclass(frozen=True, config=STRICT)
class PPOConfig(AlgoConfig):
    """PPO's own hyper-parameters; defaults are the reference code's books values (PAPER.md §1.8 table).
    The shared ones (batch, episodes, epochs, seed, ``optim``, ``kl``, ``halt``) are :class:`AlgoConfig`'s.

    Attributes:
        grad_accum: micro-batches per minibatch whose gradients are averaged before a step.
        gamma, lam: GAE parameters (1, 0.95).
        cliprange, cliprange_value, vf_coef: clipped-loss settings (0.2, 0.2, 0.1); no entropy bonus.
        whiten_rewards: whiten shaped rewards per minibatch, scale only (on for books, off for summaries).
        old_logprobs: ``sampling`` (the reference code: the old log-probs, values and entropies recorded
            while sampling, §1.8) or ``recompute`` (the PyTorch reproduction's separate forward pass of
            the policy over query ⊕ response for all three, [R] deviation (a)). A separate value
            network (``value_model``) always runs that pass: its values need the whole sequence.
    """

    grad_accum: int = Field(1, gt=0)
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    cliprange: float = Field(0.2, gt=0)
    cliprange_value: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.1, ge=0)
    whiten_rewards: bool = True
    old_logprobs: Literal["sampling", "recompute"] = "sampling"

    def __post_init__(self) -> None:
        if self.batch_size % (self.minibatches * self.grad_accum):
            raise ValueError(
                f"batch_size={self.batch_size} must be divisible by minibatches x grad_accum = "
                f"{self.minibatches} x {self.grad_accum}."
            )
        if self.whiten_rewards and self.batch_size // self.minibatches < 2:
            raise ValueError(
                f"batch_size={self.batch_size} with minibatches={self.minibatches} leaves fewer than 2 "
                "episodes per minibatch, which reward whitening needs; raise batch_size or set "
                "whiten_rewards=false."
            )


@dataclasses.dataclass
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
    features: Features | None = None  # frozen lower blocks' output (top-k training), reused by the update

    def index(self, rows) -> Rollout:
        """The episodes ``rows`` (a slice or index tensor) of this batch."""
        idx = rows if isinstance(rows, slice) else torch.as_tensor(rows)
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "texts":
                out[f.name] = value[idx] if isinstance(idx, slice) else [value[int(i)] for i in idx]
            elif f.name == "valid":
                out[f.name] = value[idx if isinstance(idx, slice) else idx.numpy()]
            elif value is None:
                out[f.name] = None
            else:
                out[f.name] = value.index(idx) if isinstance(value, Features) else value[idx]
        return Rollout(**out)


class PPOAgent(Agent):
    """PPO on a :class:`textenv.vector.TextVectorEnv` (or anything with its interface)."""

    def __init__(self, policy, envs, config: PPOConfig, reference=None, parallel: str = "ddp") -> None:
        super().__init__(policy, envs, config, reference, parallel)
        # the reference code's respond(): values and entropies come with the samples, no second pass
        self.sample_values = (
            config.old_logprobs == "sampling" and getattr(policy, "value_model", None) is None
        )
        if self.local_batch % (config.minibatches * config.grad_accum):
            raise ValueError(
                f"the per-process batch {self.local_batch} must be divisible by minibatches x grad_accum = "
                f"{config.minibatches} x {config.grad_accum}."
            )

    # ----------------------------------------------------------------------------------- rollout
    @torch.no_grad()
    def rollout(self) -> Rollout:
        cfg = self.config
        s = self.sample_and_score()
        t0 = time.perf_counter()
        if self.sample_values:  # recorded while sampling (§1.8)
            stats = Stats(s.logprobs, s.values, s.entropy)
        else:  # old_logprobs = "recompute", or a separate value network
            stats = self.engine.call("forward_stats", s.full, self.context_length, s.features)
        self.timings["forward"] = time.perf_counter() - t0
        logprobs = s.logprobs if cfg.old_logprobs == "sampling" else stats.logprobs
        rewards, non_score = shaped_rewards(
            s.scores, logprobs, s.ref_logprobs, self.kl_ctl.value, cfg.kl.estimator
        )
        return Rollout(
            context=s.context,
            responses=s.responses,
            logprobs=logprobs,
            ref_logprobs=s.ref_logprobs,
            values=stats.values,
            scores=s.scores,
            rewards=rewards,
            non_score_rewards=non_score,
            entropy=stats.entropy,
            valid=s.valid,
            texts=s.texts,
            features=s.features,
        )

    # ------------------------------------------------------------------------------------ update
    def update(self, batch: Rollout) -> dict:
        cfg = self.config
        lr = self.set_lr()
        self.policy.train()
        n = self.local_batch
        mb = n // cfg.minibatches
        micro = mb // cfg.grad_accum
        logs: dict[str, list[float]] = {}
        for _epoch in range(cfg.epochs):
            order = torch.randperm(n, generator=self.generator, device=self.device)
            for start in range(0, n, mb):
                idx = order[start : start + mb]
                rewards = batch.rewards[idx]
                # moments over the global minibatch (all ranks), biased variance
                if cfg.whiten_rewards:  # per minibatch, scale only (§1.8 step 1)
                    rewards = D.global_whiten(rewards, shift_mean=False)
                advantages, returns = compute_gae(rewards, batch.values[idx], cfg.gamma, cfg.lam)
                advantages = D.global_whiten(advantages)
                self.optimizer.zero_grad(set_to_none=True)
                for m in range(0, mb, micro):
                    sub = idx[m : m + micro]
                    full = torch.cat([batch.context[sub], batch.responses[sub]], dim=1)
                    feats = batch.features.index(sub) if batch.features is not None else None
                    last = m + micro >= mb  # ranks average the gradients in the last micro-batch's backward
                    with contextlib.nullcontext() if last else self.engine.no_sync():
                        stats = self.engine.forward_stats(full, self.context_length, feats)
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
                        self.scaler.scale(out.loss / cfg.grad_accum).backward()
                    var_returns = returns[m : m + micro].var(unbiased=False)
                    old_values = batch.values[sub]
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
                        ("ppo/policy/entropy", stats.entropy.mean()),
                        ("ppo/val/vpred", stats.values.mean()),
                        ("ppo/val/mean", old_values.mean()),
                        ("ppo/val/var", old_values.var(unbiased=False)),
                    ):
                        logs.setdefault(key, []).append(float(value.detach()))
                grad_norm = self.checked_step(logs["ppo/loss/total"][-1])
                if grad_norm is not None:  # None: an fp16 step skipped on overflow
                    logs.setdefault("ppo/grad_norm", []).append(grad_norm)
        self.policy.eval()
        metrics = {k: float(np.mean(v)) for k, v in logs.items()}
        metrics["ppo/val/var_explained"] = 1.0 - metrics["ppo/val/error"] / max(
            metrics["ppo/returns/var"], 1e-8
        )
        metrics["ppo/lr"] = lr
        return metrics

    # ------------------------------------------------------------------------------- iteration
    def rollout_metrics(self, batch: Rollout) -> dict:
        return {
            **super().rollout_metrics(batch),
            "objective/score_total": float(batch.scores.mean() + batch.non_score_rewards.sum(1).mean()),
        }


ALGO = Algorithm(
    name="ppo",
    config=PPOConfig,
    agent=PPOAgent,
    curves=(
        *OBJECTIVE_CURVES,
        ("ppo/val/var_explained", "value var. explained"),
        ("ppo/policy/clipfrac", "policy clip fraction"),
    ),
    summary="PPO with a value head and per-token KL-shaped rewards (the paper's)",
)
