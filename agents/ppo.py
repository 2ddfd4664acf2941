"""PPO for the token-level environments, as the paper and its reference code run it (PAPER.md §1.4-1.8).

One iteration (DESIGN.md, "One PPO iteration, as data flows"):

1. rollout: reset the vector env (B prompts), sample B fixed-length responses with the policy (KV cache,
   temperature), step the env one token column at a time (the env truncates and scores), recompute
   tempered log-probs and values with the policy and the frozen reference, and shape per-token rewards
   (``-beta * KL`` on every token, the score on the last; ``textenv.kl``).
2. update: ``epochs`` x ``minibatches`` with a fresh permutation per epoch: reward whitening (optional),
   GAE (gamma 1, lambda 0.95), advantage whitening, clipped policy + ``vf_coef`` x clipped value loss,
   gradient accumulation over ``grad_accum`` micro-batches, TF-style Adam, linear LR decay.
3. control: ``beta`` from the KL controller, once per iteration after the gradient steps.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch

from agents import distributed as D
from agents.core import compute_gae, masked_mean, ppo_loss
from agents.policy import PolicyWithValue
from rewards.optim import linear_decay, make_optimizer
from textenv.env import NonFiniteRewardError
from textenv.kl import AdaptiveKLController, FixedKLController, kl_per_token, shaped_rewards
from textenv.models.trunk import Features


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
        halt_kl_factor, halt_kl_patience: the andon cord stops a run whose KL exceeds ``halt_kl_factor`` x
            ``target_kl`` for ``halt_kl_patience`` iterations in a row (0 turns it off).
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
    halt_kl_factor: float = 3.0
    halt_kl_patience: int = 3
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


class TrainingHalted(RuntimeError):
    """The andon cord: training stopped on NaN/inf or a KL runaway; the message says what and what to do."""

    def __init__(self, message: str, phase: str) -> None:
        super().__init__(message)
        self.phase = phase  # "rollout": no optimiser step of this iteration happened; "update": one may have


def check_rollout(
    metrics: dict, rewards: torch.Tensor, cfg, kl_over: int, iteration: int, kl_coef: float
) -> int:
    """The andon cord's rollout checks (shared by the built-in agents): raises :class:`TrainingHalted` on
    non-finite statistics or rewards, or when the KL has exceeded ``cfg.halt_kl_factor x cfg.target_kl``
    for ``cfg.halt_kl_patience`` iterations in a row; returns the updated count of such iterations."""
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad or not torch.isfinite(rewards).all():
        raise TrainingHalted(
            f"iteration {iteration + 1}: non-finite rollout statistics {bad or ['rewards']} "
            f"(score mean {metrics['objective/score']}, KL {metrics['objective/kl']}); check the reward "
            "function for NaN/inf outputs.",
            phase="rollout",
        )
    if not (
        cfg.halt_kl_patience
        and cfg.target_kl
        and metrics["objective/kl"] > cfg.halt_kl_factor * cfg.target_kl
    ):
        return 0
    kl_over += 1
    if kl_over >= cfg.halt_kl_patience:
        raise TrainingHalted(
            f"iteration {iteration + 1}: KL {metrics['objective/kl']:.2f} nats has exceeded "
            f"{cfg.halt_kl_factor:g} x target {cfg.target_kl:g} for {kl_over} iterations (beta "
            f"{kl_coef:.4g}); the policy is running away from the reference. Lower the "
            "learning rate, raise kl_coef or check the reward model for exploits, then --resume.",
            phase="rollout",
        )
    return kl_over


def checked_grad_norm(params: list[torch.Tensor], iteration: int, loss: float) -> float:
    """All-reduce the gradients over ranks and return their norm; raises :class:`TrainingHalted` before
    the optimiser step when it is not finite (the andon cord)."""
    D.average_gradients(params)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm=float("inf"))
    if not torch.isfinite(grad_norm):
        raise TrainingHalted(
            f"iteration {iteration + 1}: non-finite gradient (norm {float(grad_norm)}, loss "
            f"{loss}) before an optimiser step; nothing was applied for this "
            "minibatch. Lower the learning rate or check the inputs, then --resume.",
            phase="update",
        )
    return float(grad_norm)


class AgentState:
    """What the built-in agents share: one iteration's skeleton (:meth:`step`: rollout, andon checks,
    update, KL control, metrics) and checkpointing, everything a resumed run needs to continue bit for
    bit (trainable weights, optimiser, KL controller, RNG states, counters; the frozen rest is rebuilt
    from the model spec). Needs ``config``, ``policy``, ``optimizer``, ``kl_ctl``, ``kl_over``,
    ``generator``, ``np_rng``, ``rank``, ``world``, ``iteration`` and ``timings``, and from the agent
    ``rollout()`` (a batch with ``logprobs``, ``ref_logprobs``, ``scores``, ``rewards``, ``valid``),
    ``update(batch)`` and :meth:`rollout_metrics`."""

    def rollout_metrics(self, batch) -> dict:
        """The batch's ``objective/*`` statistics (agents add their own keys)."""
        kl = kl_per_token(batch.logprobs, batch.ref_logprobs, self.config.kl_estimator).sum(1)  # (B,)
        return {
            "objective/kl": float(kl.mean()),
            "objective/kl_coef": self.kl_ctl.value,
            "objective/score": float(batch.scores.mean()),
            "objective/score_std": float(batch.scores.std(unbiased=False)),
            "objective/entropy": float((-batch.logprobs).sum(1).mean()),
            "objective/valid_rate": float(batch.valid.mean()),
        }

    def step(self) -> dict:
        """One iteration: rollout, update, KL control; returns the reference code's metric keys.

        Raises :class:`TrainingHalted` (the andon cord) before any optimiser step when the rollout holds
        NaN/inf or the KL has exceeded ``halt_kl_factor x target_kl`` for ``halt_kl_patience`` iterations
        in a row (the agent's state is then exactly that after the previous iteration), and before the
        offending optimiser step when a loss or gradient is not finite.
        """
        cfg = self.config
        t0 = time.perf_counter()
        try:
            batch = self.rollout()
        except NonFiniteRewardError as exc:
            raise TrainingHalted(f"iteration {self.iteration + 1}: {exc}", phase="rollout") from exc
        t_rollout = time.perf_counter() - t0
        metrics = D.mean_metrics(self.rollout_metrics(batch))
        self.kl_over = check_rollout(
            metrics, batch.rewards, cfg, self.kl_over, self.iteration, self.kl_ctl.value
        )
        t1 = time.perf_counter()
        metrics.update(D.mean_metrics(self.update(batch)))
        self.kl_ctl.update(metrics["objective/kl"], cfg.batch_size)
        self.iteration += 1
        metrics.update(
            {
                **{f"time/{k}": v for k, v in self.timings.items()},
                "time/rollout": t_rollout,
                "time/update": time.perf_counter() - t1,
                "time/iteration": time.perf_counter() - t0,
                "iteration": self.iteration,
                "episodes": self.iteration * cfg.batch_size,
            }
        )
        self.last_batch = batch
        return metrics

    def config_dict(self) -> dict:
        return asdict(self.config)

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue bit for bit: trainable weights, optimiser, KL
        controller, RNG states and counters (the frozen rest is rebuilt from the model spec)."""
        return {
            "iteration": self.iteration,
            "trainable": {
                n: p.detach().clone() for n, p in self.policy.named_parameters() if p.requires_grad
            },
            "optimizer": self.optimizer.state_dict(),
            "kl_ctl": self.kl_ctl.state_dict(),
            "kl_over": self.kl_over,
            "generator": self.generator.get_state(),
            "np_rng": self.np_rng.bit_generator.state,
            "rank": self.rank,
            "world": self.world,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("world", 1) != self.world:
            raise ValueError(
                f"the checkpoint was written by {state.get('world')} processes; resume it with the same number "
                f"(this run has {self.world})."
            )
        named = dict(self.policy.named_parameters())
        missing = [n for n in state["trainable"] if n not in named]
        if missing:
            raise ValueError(
                f"checkpoint tensors {missing[:3]} are not in this policy; was it built the same way?"
            )
        with torch.no_grad():
            for n, t in state["trainable"].items():
                named[n].copy_(t)
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.kl_over = int(state.get("kl_over", 0))
        self.generator.set_state(state["generator"])
        self.np_rng.bit_generator.state = state["np_rng"]
        self.iteration = int(state["iteration"])


class PPOAgent(AgentState):
    """PPO on a :class:`textenv.vector.TextVectorEnv` (or anything with its interface)."""

    def __init__(
        self, policy: PolicyWithValue, envs, config: PPOConfig, reference: PolicyWithValue | None = None
    ):
        self.policy, self.envs, self.config = policy, envs, config
        self.reference = reference if reference is not None else policy.reference()
        self.rank, self.world = D.rank(), D.world_size()
        if config.batch_size % self.world:
            raise ValueError(f"batch_size={config.batch_size} is not divisible by {self.world} processes.")
        self.local_batch = config.batch_size // self.world
        if envs.num_envs != self.local_batch:
            raise ValueError(
                f"the vector env has {envs.num_envs} envs; this process needs batch_size / processes = "
                f"{config.batch_size} / {self.world} = {self.local_batch}."
            )
        if self.local_batch % (config.minibatches * config.grad_accum):
            raise ValueError(
                f"the per-process batch {self.local_batch} must be divisible by minibatches x grad_accum = "
                f"{config.minibatches} x {config.grad_accum}."
            )
        self.context_length = envs.unwrapped.runtime.context_length
        self.response_length = envs.unwrapped.config.response_length
        self.kl_ctl = make_kl_controller(config)
        self.params = [p for p in policy.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the policy has no trainable parameters; check set_trainable / enable_lora.")
        self.optimizer = make_optimizer(self.params, lr=config.lr, kind=config.optimizer, eps=config.adam_eps)
        seed = config.seed + self.rank * D.RANK_SEED_STRIDE  # per-rank seeds (§1.8)
        self.device = next(policy.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.np_rng = np.random.default_rng(seed)
        self.iteration = 0
        self.kl_over = 0  # consecutive iterations with KL above halt_kl_factor x target
        self.timings: dict[str, float] = {}

    # ----------------------------------------------------------------------------------- rollout
    @torch.no_grad()
    def rollout(self) -> Rollout:
        cfg = self.config
        obs, _ = self.envs.reset(seed=int(self.np_rng.integers(2**31)))
        context = torch.as_tensor(obs[:, : self.context_length]).to(self.device)
        self.policy.eval()
        t0 = time.perf_counter()
        responses, sample_logprobs = self.policy.sample(
            context, self.response_length, generator=self.generator
        )
        t1 = time.perf_counter()
        info, rewards_env = {}, None
        for t in range(self.response_length):
            _, rewards_env, terminated, _, info = self.envs.step(responses[:, t].cpu().numpy())
        if not terminated.all():
            raise RuntimeError("the environment did not terminate after response_length steps.")
        scores = torch.as_tensor(rewards_env, dtype=torch.float32, device=self.device)
        t2 = time.perf_counter()
        full = torch.cat([context, responses], dim=1)
        feats = self.policy.features(full)  # top-k training: the shared frozen lower part, run once
        stats = self.policy.forward_stats(full, self.context_length, feats)
        t3 = time.perf_counter()
        ref = self.reference.forward_stats(full, self.context_length, feats)
        self.timings = {
            "sample": t1 - t0,
            "score": t2 - t1,
            "forward": t3 - t2,
            "reference": time.perf_counter() - t3,
        }
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
            features=feats,
        )

    # ------------------------------------------------------------------------------------ update
    def update(self, batch: Rollout) -> dict:
        cfg = self.config
        lr = linear_decay(cfg.lr, self.iteration, cfg.num_updates) if cfg.lr_decay else cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
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
                    stats = self.policy.forward_stats(full, self.context_length, feats)
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
                grad_norm = checked_grad_norm(self.params, self.iteration, logs["ppo/loss/total"][-1])
                logs.setdefault("ppo/grad_norm", []).append(grad_norm)
                self.optimizer.step()
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
