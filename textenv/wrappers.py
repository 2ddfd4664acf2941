"""Optional wrappers: the paper's KL penalty for algorithms that do not shape rewards themselves.

The environments return the score alone (0 on every step but the last). The paper's RL reward adds a
per-token KL penalty to the original model rho (PAPER.md §1.4)::

    R_t = -beta * (log pi(y_t | x, y_<t) - log rho(y_t | x, y_<t))      (+ score on the last token)

It needs the acting policy's log-probs, which only the agent has. There are three ways to get it:

1. the built-in agents (``agents.ppo``, ``agents.rloo``) shape rewards themselves with ``textenv.kl``;
2. ``agents.sb3.KLPenaltyCallback`` adds the penalty to a stable-baselines3 rollout buffer after each
   rollout (one batched reference pass; the policy log-probs are those SB3 recorded while acting);
3. :class:`KLPenalty` here, for any algorithm: it asks the policy and the reference for the log-prob of
   every action as it is taken (two extra forward passes per step, so it is the slowest of the three).

A "log-prob source" is anything with ``token_logprobs(obs, actions) -> (B,)`` (tempered log-probs of
``actions`` given the observation rows ``obs`` (B, T)) or a callable with that signature.
:class:`LMLogProbs` makes one from any Hugging Face causal LM; ``agents.sb3.TransformerPolicy`` is one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from textenv.kl import FixedKLController, kl_per_token
from textenv.models.tokenization import padded_inputs

__all__ = ["KLPenalty", "LMLogProbs", "LogProbSource", "last_hidden"]


class LogProbSource(Protocol):
    def token_logprobs(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor: ...


def last_hidden(base: torch.nn.Module, obs: torch.Tensor, pad_id: int) -> torch.Tensor:
    """The trunk's final hidden state at the last non-pad position of each observation row, (B, d).

    An observation is ``[left-padded context][response so far][pads]``, so that position is the state
    that predicts the next response token. Pads anywhere are invisible (:func:`padded_inputs`).
    """
    ids = obs.long()
    if ids.dim() == 1:
        ids = ids[None]
    inputs = padded_inputs(ids, pad_id)
    hidden = base(**inputs).last_hidden_state  # (B, T, d)
    mask = inputs["attention_mask"]
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (mask * positions).argmax(dim=1)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class LMLogProbs:
    """Next-token log-probs of a Hugging Face causal LM on observation rows (a :class:`LogProbSource`).

    Args:
        lm: the causal LM (e.g. a frozen copy of the initial policy: the paper's rho).
        pad_id: the environment's pad id (``env.unwrapped.pad_token_id``).
        temperature: divides the logits (use the policy's sampling temperature; §1.8).
        vocab_size: the action count; extra rows of a padded output layer are dropped.
    """

    def __init__(
        self, lm: torch.nn.Module, pad_id: int, temperature: float = 1.0, vocab_size: int | None = None
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.lm, self.pad_id, self.temperature, self.vocab_size = (
            lm,
            int(pad_id),
            float(temperature),
            vocab_size,
        )

    @torch.no_grad()
    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        """Tempered next-token logits, (B, V)."""
        h = last_hidden(self.lm.base_model, obs, self.pad_id)
        logits = self.lm.get_output_embeddings()(h).float()
        if self.vocab_size is not None:
            logits = logits[:, : self.vocab_size]
        if 0 <= self.pad_id < logits.shape[-1]:  # a pad inside the vocabulary is never an action
            logits = logits.index_fill(-1, torch.tensor([self.pad_id], device=logits.device), -1e9)
        return logits / self.temperature

    @torch.no_grad()
    def token_logprobs(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(self.logits(obs), dim=-1)
        return logp.gather(-1, actions.long().reshape(-1, 1)).squeeze(-1)


def _logprob_fn(source: Any, name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if hasattr(source, "token_logprobs"):
        return source.token_logprobs
    if callable(source):
        return source
    raise TypeError(
        f"{name} must have token_logprobs(obs, actions) or be such a callable, got {type(source).__name__}; "
        "wrap a Hugging Face LM with textenv.wrappers.LMLogProbs(lm, pad_id, temperature)."
    )


class KLPenalty(gym.Wrapper):
    """Adds the paper's per-token KL penalty to a text environment's rewards (PAPER.md §1.4).

    Every step's reward becomes ``reward - beta * KL_t`` with ``KL_t`` the k1 estimate
    ``log pi(a_t | s_t) - log rho(a_t | s_t)`` (or ``k3``), so the rewards an algorithm sees equal
    ``textenv.kl.shaped_rewards`` token by token. At the end of an episode ``info`` gains ``kl`` (the
    episode's summed estimate), ``kl_coef`` and ``non_score_reward``, and an adaptive controller is
    updated with that episode's KL (``n_steps = 1`` episode).

    Args:
        env: a textenv environment (single, not vectorised; wrap each copy of a vector env).
        policy: the acting policy's log-prob source; its weights must be those that chose the action.
        reference: the reference model's log-prob source (e.g. ``LMLogProbs(frozen_copy, pad_id, T)``).
        controller: a float (fixed beta) or a ``textenv.kl`` controller (``.value``, ``.update(kl, n)``).
        estimator: ``k1`` (the paper's) or ``k3``.
    """

    def __init__(
        self, env: gym.Env, policy: Any, reference: Any, controller: Any = 0.15, estimator: str = "k1"
    ) -> None:
        super().__init__(env)
        kl_per_token(torch.zeros(1), torch.zeros(1), estimator)  # refuses an unknown estimator by name
        self.policy_logprobs = _logprob_fn(policy, "policy")
        self.reference_logprobs = _logprob_fn(reference, "reference")
        self.controller = (
            FixedKLController(controller) if isinstance(controller, (int, float)) else controller
        )
        if not hasattr(self.controller, "value") or not hasattr(self.controller, "update"):
            raise TypeError("controller must be a float or have .value and .update(kl, n_steps).")
        self.estimator = estimator
        self._obs: np.ndarray | None = None
        self._kl_sum = 0.0
        self._penalty_sum = 0.0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._obs, self._kl_sum, self._penalty_sum = obs, 0.0, 0.0
        return obs, info

    def kl_estimate(self, obs: np.ndarray, action: int) -> float:
        """The per-token KL estimate for taking ``action`` in ``obs``."""
        device = _device_of(self.policy_logprobs)
        o = torch.as_tensor(np.asarray(obs)[None], device=device)
        a = torch.as_tensor([int(action)], device=device)
        with torch.no_grad():
            logp = self.policy_logprobs(o, a).reshape(-1)[:1].double()
            ref = self.reference_logprobs(o, a).reshape(-1)[:1].double()
        return float(kl_per_token(logp, ref, self.estimator)[0])

    def step(self, action):
        if self._obs is None:
            raise RuntimeError("step() called before reset(); call env.reset() first.")
        kl = self.kl_estimate(self._obs, action)
        beta = self.controller.value
        obs, reward, terminated, truncated, info = self.env.step(action)
        penalty = -beta * kl
        self._kl_sum += kl
        self._penalty_sum += penalty
        self._obs = obs
        if terminated or truncated:
            info = dict(info, kl=self._kl_sum, kl_coef=beta, non_score_reward=self._penalty_sum)
            self.controller.update(self._kl_sum, 1)
        return obs, float(reward) + penalty, terminated, truncated, info


def _device_of(fn: Callable) -> torch.device:
    owner = getattr(fn, "__self__", None)
    module = getattr(owner, "lm", owner)
    if isinstance(module, torch.nn.Module):
        for p in module.parameters():
            return p.device
    return torch.device("cpu")
