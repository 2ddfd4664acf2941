"""TF1-style Adam and the linear learning-rate decay of the reference code (PAPER.md §4.2; must-have 22).

PyTorch's Adam adds epsilon to the bias-corrected ``sqrt(v_hat)``; TF1's adds ``eps_hat`` to the raw
``sqrt(v)`` and folds the bias corrections into the step size:

    theta <- theta - lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps_hat)

With the same eps = 1e-5, PyTorch's effective epsilon ``eps * sqrt(1 - beta2^t)`` is much smaller early in
training, so its first updates are larger ([H]: about 6x the approxkl). Shared by the reward model and
the PPO agent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch


class AdamTF(torch.optim.Optimizer):
    """Adam with TF1's epsilon placement (no weight decay, no AMSGrad)."""

    def __init__(
        self, params: Iterable, lr: float = 1e-5, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-5
    ):
        if lr < 0 or eps < 0 or not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid AdamTF settings lr={lr}, betas={betas}, eps={eps}.")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                step_size = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size)
        return loss


def make_optimizer(
    params: Iterable, lr: float, kind: Literal["tf_adam", "torch_adam"] = "tf_adam", eps: float = 1e-5
) -> torch.optim.Optimizer:
    """``tf_adam`` (the reference code's, default) or ``torch_adam`` (an option), both with ``eps``."""
    if kind == "tf_adam":
        return AdamTF(params, lr=lr, eps=eps)
    if kind == "torch_adam":
        return torch.optim.Adam(params, lr=lr, eps=eps)
    raise ValueError(f"Unknown optimizer {kind!r}; use 'tf_adam' or 'torch_adam'.")


def linear_decay(base_lr: float, done: int, total: int) -> float:
    """``base_lr * (1 - done / total)``: the reference code's linear anneal to 0 (§1.3, §1.8)."""
    if total <= 0:
        raise ValueError(f"total must be > 0, got {total}.")
    return base_lr * max(0.0, 1.0 - done / total)
