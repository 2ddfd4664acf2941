"""The value-free group algorithms' shared part: ``k`` responses per prompt, one sequence reward and one
advantage per response (RLOO, GRPO)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch

from agents.loop import Agent, Samples
from textenv.kl import kl_per_token
from textenv.models.trunk import Features


@dataclasses.dataclass
class SequenceBatch:
    """A batch of a value-free algorithm: one sequence reward and one advantage per response."""

    context: torch.Tensor  # (B, Lc)
    responses: torch.Tensor  # (B, Lr)
    logprobs: torch.Tensor  # (B, Lr) sampling-time tempered log-probs
    ref_logprobs: torch.Tensor  # (B, Lr)
    scores: torch.Tensor  # (B,)
    rewards: torch.Tensor  # (B,) sequence rewards
    advantages: torch.Tensor  # (B,)
    valid: np.ndarray
    texts: list[str]
    features: Features | None = None


class GroupAgent(Agent):
    """An algorithm over ``config.k`` responses per prompt with one advantage per response and no value
    function (RLOO, GRPO): subclasses give :meth:`advantages` and :meth:`minibatch_loss`, and may change
    :meth:`sequence_rewards` (default: the score minus ``beta`` x the summed KL, PAPER.md §1.4)."""

    prefix: ClassVar[str]  # the metrics' prefix, the algorithm's name

    @property
    def group(self) -> int:
        return self.config.k

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.policy.named_parameters() if p.requires_grad and "value" not in n]

    def sequence_rewards(self, s: Samples) -> torch.Tensor:
        kl = kl_per_token(s.logprobs, s.ref_logprobs, self.config.kl.estimator).sum(1)  # (B,)
        return s.scores - self.kl_ctl.value * kl  # §1.4, the KL summed into the sequence reward

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def minibatch_loss(self, stats, batch: SequenceBatch, idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    @torch.no_grad()
    def rollout(self) -> SequenceBatch:
        s = self.sample_and_score()
        rewards = self.sequence_rewards(s)
        return SequenceBatch(
            s.context,
            s.responses,
            s.logprobs,
            s.ref_logprobs,
            s.scores,
            rewards,
            self.advantages(rewards),
            s.valid,
            s.texts,
            s.features,
        )

    def update(self, batch: SequenceBatch) -> dict:
        return self.minibatch_update(batch, self.minibatch_loss, self.prefix)

    def rollout_metrics(self, batch: SequenceBatch) -> dict:
        """The ``objective/*`` keys (``score_total``: the mean sequence reward) and the advantages' spread."""
        return {
            **super().rollout_metrics(batch),
            "objective/score_total": float(batch.rewards.mean()),
            f"{self.prefix}/advantage_std": float(batch.advantages.std(unbiased=False)),
        }
