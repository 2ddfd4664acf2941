"""The configuration sections every algorithm shares, declared once, and the registry's entry type.

``[optim]`` (:class:`OptimConfig`), ``[kl]`` (:class:`KLConfig`, PAPER.md §1.4-1.5) and ``[halt]``
(:class:`HaltConfig`, the andon cord) are their own TOML tables and are composed into every algorithm's
config; :class:`AlgoConfig` holds the fields every algorithm has, and an algorithm's config subclasses it
with only its own. Every section refuses NaN/inf, unknown keys and values of the wrong type (pydantic).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from textenv.kl import AdaptiveKLController, FixedKLController

# Every config refuses NaN/inf, unknown keys and values of the wrong type (pydantic).
STRICT = ConfigDict(allow_inf_nan=False, extra="forbid", strict=True)


@dataclass(frozen=True, config=STRICT)
class OptimConfig:
    """``[optim]``: Adam and its schedule, shared by every algorithm.

    Attributes:
        lr: Adam learning rate (1e-5 books, 2e-6 summarization in the reference code).
        lr_decay: linear decay to 0 over ``total_episodes`` (the reference code).
        optimizer: ``tf_adam`` (the reference code's epsilon placement) or ``torch_adam``.
        adam_eps: Adam's epsilon (1e-5).
        fused: ``tf_adam`` through PyTorch's fused Adam kernel (TF1's epsilon mapped onto PyTorch's, see
            :mod:`rewards.optim`): one pass over the parameters and moments instead of about 18, equal to
            the per-tensor loop within float rounding. False: the loop, bit for bit what versions before
            it ran. May change on resume (the optimiser state is the same).
    """

    lr: float = Field(1e-5, gt=0)
    lr_decay: bool = True
    optimizer: Literal["tf_adam", "torch_adam"] = "tf_adam"
    adam_eps: float = Field(1e-5, gt=0)
    fused: bool = True


RECENT_KLS = 32  # the agent checkpoints its last 32 KLs: the largest kl.stop_window


@dataclass(frozen=True, config=STRICT)
class KLConfig:
    """``[kl]``: the KL penalty to the reference and its controller (PAPER.md §1.4-1.5).

    Attributes:
        coef: beta (its start value when adaptive): 0.15 books, 0.03 TL;DR, 0.01 CNN/DM.
        adaptive: proportional control of beta towards ``target`` (§1.5); False: fixed beta.
        target: the target KL in nats per response (6 books, 8 mock sentiment).
        horizon: the controller's horizon in episodes (10,000).
        form: ``horizon`` (the reference code) or ``paper`` (``K_beta = 0.1``).
        estimator: ``k1`` (the paper's ``log pi - log rho``) or ``k3``.
        stop_at_target: end the run (a success, not a halt) after the first iteration whose KL (the mean
            of the last ``stop_window``) reaches ``target``: a KL budget, for comparing policies at the same KL (the paper's Figure 2 and
            experiment 2 compare at equal KL). Off (the paper): the run goes on for ``run.iterations``.
            In a short run the controller cannot move beta far enough to land on the target (at most
            ``(1 + 0.2 n / horizon)`` per iteration), so this is how the demo ends near it.
        stop_window: with ``stop_at_target``, the number of latest iterations whose mean KL must reach
            ``target`` (1: this iteration's KL alone, as before). One batch's KL is a noisy estimate (a
            32-episode batch's can sit half a nat above the policy's): a window of 3 stops on a smoothed KL
            and ends nearer the target. A deviation from nothing in the paper (the paper has no budget).
            At most 32; the agent checkpoints its last KLs, so a resumed run stops where it would have.
    """

    coef: float = Field(0.15, ge=0)
    adaptive: bool = True
    target: float = Field(6.0, gt=0)
    horizon: int = Field(10_000, gt=0)
    form: Literal["horizon", "paper"] = "horizon"
    estimator: Literal["k1", "k3"] = "k1"
    stop_at_target: bool = False
    stop_window: int = Field(1, ge=1, le=RECENT_KLS)

    def controller(self) -> AdaptiveKLController | FixedKLController:
        if self.adaptive:
            return AdaptiveKLController(self.coef, self.target, self.horizon, form=self.form)
        return FixedKLController(self.coef)


@dataclass(frozen=True, config=STRICT)
class HaltConfig:
    """``[halt]``: the andon cord's KL runaway rule (NaN/inf always halt).

    Attributes:
        kl_threshold: halt when the KL (nats per response) stays above this; ``None``: ``kl_factor x
            kl.target``. Give it explicitly for fixed-beta runs, whose KL has no target to track.
        kl_factor: the multiple of ``kl.target`` used when ``kl_threshold`` is None (3).
        kl_patience: consecutive iterations above the threshold before the halt; 0 turns the rule off.
    """

    kl_threshold: float | None = Field(None, gt=0)
    kl_factor: float = Field(3.0, gt=0)
    kl_patience: int = Field(3, ge=0)

    def threshold(self, kl: KLConfig) -> float:
        return self.kl_threshold if self.kl_threshold is not None else self.kl_factor * kl.target


@dataclass(frozen=True, config=STRICT)
class AlgoConfig:
    """The fields every algorithm has; an algorithm's config subclasses it and adds its own.

    Attributes:
        total_episodes: episodes over the run (1M in the code, 2M in the paper); sets the LR schedule.
        batch_size: episodes per iteration over all processes.
        minibatches: minibatches per epoch.
        epochs: passes over each batch.
        seed: base seed; rank r uses ``seed + r * 100003`` (§1.8).
        optim, kl, halt: the shared sections (``[optim]``, ``[kl]``, ``[halt]`` in a TOML config).
    """

    total_episodes: int = Field(1_000_000, gt=0)
    batch_size: int = Field(512, gt=0)
    minibatches: int = Field(1, gt=0)
    epochs: int = Field(4, gt=0)
    seed: int = Field(0, ge=0)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    kl: KLConfig = dataclasses.field(default_factory=KLConfig)
    halt: HaltConfig = dataclasses.field(default_factory=HaltConfig)

    @property
    def num_updates(self) -> int:
        """ceil(total_episodes / batch_size), as the reference code (§4.5 (c))."""
        return math.ceil(self.total_episodes / self.batch_size)

    # the sections that are shared between algorithms and live in their own TOML tables
    SHARED: ClassVar[tuple[str, ...]] = ("optim", "kl", "halt")


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """A registry entry (:data:`agents.algos.ALGOS`): what the config, the CLI and the plots need."""

    name: str
    config: type[AlgoConfig]
    agent: Callable[..., Any]  # an agents.loop.Agent subclass
    curves: tuple[tuple[str, str], ...]
    summary: str = ""


OBJECTIVE_CURVES = (
    ("objective/score", "score"),
    ("objective/kl", "KL (nats)"),
    ("objective/kl_coef", "beta"),
    ("objective/entropy", "entropy"),
)
