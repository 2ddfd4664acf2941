"""The agent loop every built-in algorithm shares (DESIGN.md, "One PPO iteration, as data flows").

One iteration (:meth:`Agent.step`):

1. rollout: reset the vector env (B prompts, or B / k prompts k times each for group algorithms), sample
   B fixed-length responses with the policy (KV cache, temperature), step the env one token column at a
   time (the env truncates and scores), run the frozen reference (:meth:`Agent.sample_and_score`); the
   algorithm then turns this into its batch (:meth:`Agent.rollout`: KL-shaped rewards, advantages, ...);
2. the andon cord (:func:`check_rollout`): NaN/inf or a KL runaway stops the run before any update;
3. update: the algorithm's own (:meth:`Agent.update`), every optimiser step behind
   :func:`checked_grad_norm` (a non-finite gradient norm halts; on several processes the gradients were
   averaged over ranks by the engine, DDP or FSDP, during the backward pass: :mod:`agents.distributed`);
4. control: ``beta`` from the KL controller, once per iteration after the gradient steps (§1.5).

The config sections every algorithm shares are declared once in :mod:`agents.sections`; the value-free
group algorithms (RLOO, GRPO) share :class:`agents.group.GroupAgent`. An algorithm module holds only its
own fields, its rollout post-processing and its update, and one :class:`agents.sections.Algorithm`
entry (see :mod:`agents.algos`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from agents import distributed as D
from agents.sections import RECENT_KLS, AlgoConfig
from rewards.optim import linear_decay, make_optimizer
from textenv.env import NonFiniteRewardError
from textenv.kl import AdaptiveKLController, FixedKLController, kl_per_token
from textenv.models.trunk import Features


class TrainingHalted(RuntimeError):
    """The andon cord: training stopped on NaN/inf or a KL runaway; the message says what and what to do."""

    def __init__(self, message: str, phase: str) -> None:
        super().__init__(message)
        self.phase = phase  # "rollout": no optimiser step of this iteration happened; "update": one may have


def check_rollout(metrics: dict, rewards: torch.Tensor, cfg: AlgoConfig, kl_over: int, iteration: int) -> int:
    """The andon cord's rollout checks: raises :class:`TrainingHalted` on non-finite statistics or rewards,
    or when the KL has exceeded the halt threshold for ``halt.kl_patience`` iterations in a row; returns
    the updated count of such iterations."""
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad or not torch.isfinite(rewards).all():
        raise TrainingHalted(
            f"iteration {iteration + 1}: non-finite rollout statistics {bad or ['rewards']} "
            f"(score mean {metrics['objective/score']}, KL {metrics['objective/kl']}); check the reward "
            "function for NaN/inf outputs.",
            phase="rollout",
        )
    threshold = cfg.halt.threshold(cfg.kl)
    if not (cfg.halt.kl_patience and metrics["objective/kl"] > threshold):
        return 0
    kl_over += 1
    if kl_over >= cfg.halt.kl_patience:
        raise TrainingHalted(
            f"iteration {iteration + 1}: KL {metrics['objective/kl']:.2f} nats has exceeded the halt threshold "
            f"{threshold:g} for {kl_over} iterations (beta {metrics['objective/kl_coef']:.4g}); the policy is "
            "running away from the reference. Check the reward model for exploits, or lower optim.lr or raise "
            "halt.kl_threshold (both may change on --resume), then --resume.",
            phase="rollout",
        )
    return kl_over


def checked_grad_norm(
    params: list[torch.Tensor], iteration: int, loss: float, overflow_ok: bool = False
) -> float:
    """The gradients' norm (already averaged over ranks by the engine); raises :class:`TrainingHalted`
    before the optimiser step when it is not finite (the andon cord). ``overflow_ok`` (fp16 with a loss
    scaler): an overflow is the scaler's to handle (it skips the step and lowers the scale)."""
    # the norm only: clip_grad_norm_(max_norm=inf) would also multiply every gradient by 1.0, a full
    # read and write of the gradients per step for nothing (the same norm, bit for bit)
    grad_norm = D.full(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
    if not torch.isfinite(grad_norm) and not (overflow_ok and math.isfinite(loss)):  # a NaN loss always halts
        raise TrainingHalted(
            f"iteration {iteration + 1}: non-finite gradient (norm {float(grad_norm)}, loss "
            f"{loss}) before an optimiser step; nothing was applied for this "
            "minibatch. Lower the learning rate or check the inputs, then --resume.",
            phase="update",
        )
    return float(grad_norm)


@dataclasses.dataclass
class Samples:
    """What every rollout starts from: B responses to B contexts, scored, with the reference's log-probs."""

    context: torch.Tensor  # (B, Lc) left-padded context ids
    responses: torch.Tensor  # (B, Lr) raw sampled responses
    logprobs: torch.Tensor  # (B, Lr) tempered log-probs recorded while sampling
    ref_logprobs: torch.Tensor  # (B, Lr) the frozen reference's
    scores: torch.Tensor  # (B,) env scores (penalty applied)
    valid: np.ndarray  # (B,)
    texts: list[str]  # truncated responses, decoded
    features: Features | None  # frozen lower blocks' output (top-k training), reused by the update
    full: torch.Tensor  # (B, Lc + Lr) context and response
    # the policy's values and entropies recorded while sampling (when the agent asks for them, see
    # Agent.sample_values), else None
    values: torch.Tensor | None = None  # (B, Lr)
    entropy: torch.Tensor | None = None  # (B, Lr)


class Agent:
    """The shared skeleton of a built-in algorithm on a :class:`textenv.vector.TextVectorEnv`.

    Subclasses set :attr:`group` (responses per prompt: 1, or ``config.k``) and implement
    :meth:`rollout` (from :meth:`sample_and_score` to the algorithm's batch, which must have
    ``logprobs``, ``ref_logprobs``, ``scores``, ``rewards``, ``valid`` and ``texts``) and :meth:`update`.
    """

    config: AlgoConfig
    # whether sample_and_score also records the policy's values and entropies while sampling
    # (PolicyWithValue.sample_stats); an algorithm with a value function turns it on
    sample_values: bool = False
    policy: Any  # agents.policy.PolicyWithValue
    reference: Any
    envs: Any
    rank: int
    world: int
    local_batch: int
    context_length: int
    response_length: int
    kl_ctl: AdaptiveKLController | FixedKLController
    params: list[torch.nn.Parameter]
    engine: D.Engine  # how the policy runs: the plain path, DDP or FSDP (agents.distributed)
    optimizer: torch.optim.Optimizer
    device: torch.device
    generator: torch.Generator
    np_rng: np.random.Generator
    iteration: int
    kl_over: int  # consecutive iterations with the KL above the halt threshold
    timings: dict[str, float]
    last_batch: Any

    def __init__(self, policy, envs, config: AlgoConfig, reference=None, parallel: str = "ddp") -> None:
        self.policy, self.envs, self.config = policy, envs, config
        self.reference = reference if reference is not None else policy.reference()
        self.rank, self.world = D.rank(), D.world_size()
        unit = self.world * self.group * config.minibatches
        if config.batch_size % unit:
            raise ValueError(
                f"batch_size={config.batch_size} must split into {self.world} process(es) x "
                f"minibatches={config.minibatches} x {self.group} response(s) per prompt; use a multiple of {unit}."
            )
        self.local_batch = config.batch_size // self.world
        if envs.num_envs != self.local_batch:
            raise ValueError(
                f"the vector env has {envs.num_envs} envs; this process needs batch_size / processes = "
                f"{config.batch_size} / {self.world} = {self.local_batch}."
            )
        self.context_length = envs.unwrapped.task.context_length
        self.response_length = envs.unwrapped.config.response_length
        self.kl_ctl = config.kl.controller()
        self.recent_kls: list[float] = []
        self.params = self.trainable_parameters()
        if not self.params:
            raise ValueError("the policy has no trainable parameters; check set_trainable / enable_lora.")
        self.device = next(policy.parameters()).device
        # on several processes: DDP or FSDP (which turns the parameters into shards: the optimiser comes after)
        self.engine = D.wrap(policy, parallel, self.params)
        self.reference = self.engine.reference(self.reference)
        self.params = self.trainable_parameters()
        o = config.optim
        self.optimizer = make_optimizer(self.params, lr=o.lr, kind=o.optimizer, eps=o.adam_eps, fused=o.fused)
        # run.precision = "fp16": dynamic loss scaling (bf16 and fp32 need none: a disabled scaler is a no-op)
        fp16 = getattr(policy, "precision", "fp32") == "fp16"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.skipped_steps = self.consecutive_skips = 0
        seed = config.seed + self.rank * D.RANK_SEED_STRIDE  # per-rank seeds (§1.8)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.np_rng = np.random.default_rng(seed)
        self.iteration, self.kl_over, self.timings, self.last_batch = 0, 0, {}, None

    @property
    def group(self) -> int:
        """Responses per prompt (1; group algorithms: ``config.k``)."""
        return 1

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.policy.parameters() if p.requires_grad]

    # ----------------------------------------------------------------------------------- rollout
    def reset_envs(self) -> np.ndarray:
        """Reset the vector env; group algorithms give each group of ``group`` envs one prompt."""
        if self.group == 1:
            obs, _ = self.envs.reset(seed=int(self.np_rng.integers(2**31)))
        else:
            seeds = self.np_rng.integers(2**31, size=self.local_batch // self.group)
            obs, _ = self.envs.reset(seed=[int(s) for s in np.repeat(seeds, self.group)])
        return obs

    @torch.no_grad()
    def sample_and_score(self) -> Samples:
        """Sample B responses, step the env to score them, run the frozen reference (timings recorded)."""
        obs = self.reset_envs()
        context = torch.as_tensor(obs[:, : self.context_length]).to(self.device)
        self.policy.eval()
        t0 = time.perf_counter()
        values = entropy = None
        if self.sample_values:
            responses, stats = self.engine.call(
                "sample_stats", context, self.response_length, generator=self.generator
            )
            logprobs, values, entropy = stats
        else:
            responses, logprobs = self.engine.call(
                "sample", context, self.response_length, generator=self.generator
            )
        t1 = time.perf_counter()
        info, env_rewards, terminated = {}, None, np.zeros(0, dtype=bool)
        for t in range(self.response_length):
            _, env_rewards, terminated, _, info = self.envs.step(responses[:, t].cpu().numpy())
        if not terminated.all():
            raise RuntimeError("the environment did not terminate after response_length steps.")
        scores = torch.as_tensor(env_rewards, dtype=torch.float32, device=self.device)
        t2 = time.perf_counter()
        full = torch.cat([context, responses], dim=1)
        feats = self.engine.call("features", full)  # top-k training: the shared frozen lower part, run once
        ref = self.reference.forward_stats(full, self.context_length, feats).logprobs
        self.timings = {"sample": t1 - t0, "score": t2 - t1, "reference": time.perf_counter() - t2}
        return Samples(
            context,
            responses,
            logprobs,
            ref,
            scores,
            np.asarray(info["valid"]),
            list(info["truncated_text"]),
            feats,
            full,
            values,
            entropy,
        )

    def rollout(self) -> Any:
        raise NotImplementedError

    def update(self, batch: Any) -> dict:
        raise NotImplementedError

    def set_lr(self) -> float:
        """This iteration's learning rate (linear decay to 0 over the run when ``optim.lr_decay``)."""
        o = self.config.optim
        lr = linear_decay(o.lr, self.iteration, self.config.num_updates) if o.lr_decay else o.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def minibatch_indices(self):
        """One epoch's minibatches: a fresh permutation of the prompt groups (episodes when ``group`` is
        1); each minibatch is the episode indices of its ``batch / group / minibatches`` groups."""
        groups = self.local_batch // self.group
        per_mb = groups // self.config.minibatches
        order = torch.randperm(groups, generator=self.generator, device=self.device)
        offsets = torch.arange(self.group, device=self.device)
        for start in range(0, groups, per_mb):
            yield (order[start : start + per_mb, None] * self.group + offsets).reshape(-1)

    def minibatch_update(self, batch, loss_fn: Callable, prefix: str) -> dict:
        """``epochs`` x ``minibatches`` gradient steps of ``loss_fn(stats, batch, idx) -> (loss, logs)``
        (``stats``: the policy's :meth:`forward_stats` on the minibatch ``idx``); returns the mean of each
        logged value under ``prefix/``, the gradient norm and the learning rate."""
        lr = self.set_lr()
        self.policy.train()
        logs: dict[str, list[float]] = {}
        for _epoch in range(self.config.epochs):
            for idx in self.minibatch_indices():
                full = torch.cat([batch.context[idx], batch.responses[idx]], dim=1)
                feats = batch.features.index(idx) if batch.features is not None else None
                stats = self.engine.forward_stats(full, self.context_length, feats)
                loss, values = loss_fn(stats, batch, idx)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                grad_norm = self.checked_step(float(loss.detach()))
                norm = () if grad_norm is None else (("grad_norm", grad_norm),)  # None: an fp16 skip
                for key, value in (("loss", loss), *values.items(), *norm):
                    logs.setdefault(f"{prefix}/{key}", []).append(float(torch.as_tensor(value).detach()))
        self.policy.eval()
        return {**{k: float(np.mean(v)) for k, v in logs.items()}, f"{prefix}/lr": lr}

    # fp16: this many optimiser steps skipped in a row (the loss scale halved each time) halt the run
    MAX_CONSECUTIVE_SKIPS = 8

    def checked_step(self, loss: float) -> float | None:
        """Unscale the gradients (fp16), check their norm (the andon cord), step the optimiser and return
        the norm; None when the fp16 scaler skipped the step because the gradients overflowed (a finite
        loss; a NaN loss halts as in fp32), and a halt after ``MAX_CONSECUTIVE_SKIPS`` skips in a row."""
        self.scaler.unscale_(self.optimizer)
        grad_norm = checked_grad_norm(self.params, self.iteration, loss, overflow_ok=self.scaler.is_enabled())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if math.isfinite(grad_norm):
            self.consecutive_skips = 0
            return grad_norm
        self.skipped_steps += 1
        self.consecutive_skips += 1
        if self.consecutive_skips >= self.MAX_CONSECUTIVE_SKIPS:
            raise TrainingHalted(
                f"iteration {self.iteration + 1}: fp16 gradients overflowed {self.consecutive_skips} steps in a "
                f"row (loss scale now {self.scaler.get_scale():g}); use run.precision = 'bf16' or a lower "
                "learning rate, then --resume.",
                phase="update",
            )
        return None

    def rollout_metrics(self, batch) -> dict:
        """The batch's ``objective/*`` statistics (algorithms add their own keys)."""
        kl = kl_per_token(batch.logprobs, batch.ref_logprobs, self.config.kl.estimator).sum(1)  # (B,)
        return {
            "objective/kl": float(kl.mean()),
            "objective/kl_coef": self.kl_ctl.value,
            "objective/score": float(batch.scores.mean()),
            "objective/score_std": float(batch.scores.std(unbiased=False)),
            "objective/entropy": float((-batch.logprobs).sum(1).mean()),
            "objective/valid_rate": float(batch.valid.mean()),
        }

    # --------------------------------------------------------------------------------- iteration
    def step(self) -> dict:
        """One iteration: rollout, andon checks, update, KL control; returns the reference code's keys.

        Raises :class:`TrainingHalted` before any optimiser step when the rollout holds NaN/inf or the KL
        has exceeded the halt threshold for ``halt.kl_patience`` iterations in a row (the agent's state
        is then exactly that after the previous iteration), and before the offending optimiser step when
        a loss or gradient is not finite.
        """
        cfg = self.config
        t0 = time.perf_counter()
        rng_before = (self.generator.get_state(), self.np_rng.bit_generator.state)
        try:
            try:
                batch = self.rollout()
            except NonFiniteRewardError as exc:
                raise TrainingHalted(f"iteration {self.iteration + 1}: {exc}", phase="rollout") from exc
            t_rollout = time.perf_counter() - t0
            metrics = D.mean_metrics(self.rollout_metrics(batch))
            self.kl_over = check_rollout(metrics, batch.rewards, cfg, self.kl_over, self.iteration)
        except TrainingHalted:
            # the rollout drew random numbers: rewind them, so that a checkpoint written now is exactly the
            # state after the previous iteration and --resume repeats this iteration bit for bit
            self.generator.set_state(rng_before[0])
            self.np_rng.bit_generator.state = rng_before[1]
            raise
        t1 = time.perf_counter()
        metrics.update(D.mean_metrics(self.update(batch)))
        self.kl_ctl.update(metrics["objective/kl"], cfg.batch_size)
        # the last KLs, checkpointed: kl.stop_window's budget reads them after a resume
        self.recent_kls = [*self.recent_kls, float(metrics["objective/kl"])][-RECENT_KLS:]
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
        if self.scaler.is_enabled():  # fp16: the loss scale and the steps skipped on overflow so far
            metrics.update(
                {"fp16/loss_scale": self.scaler.get_scale(), "fp16/skipped_steps": self.skipped_steps}
            )
        self.last_batch = batch
        return metrics

    # ------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue bit for bit: trainable weights, optimiser, KL
        controller, RNG states and counters (the frozen rest is rebuilt from the model spec)."""
        return {
            "iteration": self.iteration,
            "trainable": {  # FSDP: the whole tensors, gathered (every rank calls this)
                n: D.full(p.detach()).clone() for n, p in self.policy.named_parameters() if p.requires_grad
            },
            "optimizer": D.local_state(self.optimizer.state_dict()),  # FSDP: this rank's shards
            "kl_ctl": self.kl_ctl.state_dict(),
            "kl_over": self.kl_over,
            "recent_kls": list(self.recent_kls),
            "generator": self.generator.get_state(),
            "np_rng": self.np_rng.bit_generator.state,
            "rank": self.rank,
            "world": self.world,
            "engine": self.engine.mode,
            **({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("world", 1) != self.world:
            raise D.ResumeMismatch(
                f"the checkpoint was written by {state.get('world', 1)} process(es) and this run has {self.world}; "
                f"resume it on {state.get('world', 1)} (each process's random streams and, under FSDP, "
                "optimiser shards are its own)."
            )
        saved_engine = state.get("engine", "plain")
        if (saved_engine == "fsdp") != (self.engine.mode == "fsdp"):
            raise D.ResumeMismatch(
                f"the checkpoint was written with run.parallel = {saved_engine!r} (its optimiser state "
                f"{'sharded' if saved_engine == 'fsdp' else 'whole'}); resume it with the same, not "
                f"{self.engine.mode!r}."
            )
        named = dict(self.policy.named_parameters())
        missing = [n for n in state["trainable"] if n not in named]
        if missing:
            raise ValueError(
                f"checkpoint tensors {missing[:3]} are not in this policy; was it built the same way?"
            )
        with torch.no_grad():
            for n, t in state["trainable"].items():
                D.copy_full_(named[n], t)
        self.optimizer.load_state_dict(D.sharded_state(state["optimizer"], self.optimizer))
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        if self.scaler.is_enabled() and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.kl_over = int(state.get("kl_over", 0))
        self.recent_kls = [float(k) for k in state.get("recent_kls", [])]
        self.generator.set_state(state["generator"])
        self.np_rng.bit_generator.state = state["np_rng"]
        self.iteration = int(state["iteration"])
