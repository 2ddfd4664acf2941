"""TF1-style Adam and the linear learning-rate decay of the reference code (PAPER.md §4.2; must-have 22).

PyTorch's Adam adds epsilon to the bias-corrected ``sqrt(v_hat)``; TF1's adds ``eps_hat`` to the raw
``sqrt(v)`` and folds the bias corrections into the step size:

    theta <- theta - lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps_hat)

With the same eps = 1e-5, PyTorch's effective epsilon ``eps * sqrt(1 - beta2^t)`` is much smaller early in
training, so its first updates are larger ([H]: about 6x the approxkl). Shared by the reward model and
the PPO agent.

The same step is PyTorch's with the epsilon ``eps / sqrt(1 - beta2^t)``:

    lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)
      = lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps / sqrt(1 - beta2^t))

so ``AdamTF(fused=True)`` hands each group's tensors at the same step count to PyTorch's fused Adam
kernel with that epsilon: one pass that reads the parameter, gradient and both moments and writes three of
them, where the per-tensor loop makes about 18 passes over memory. Equal to the loop within float
rounding (not bit for bit: the kernel orders the operations differently).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch.optim.adam import adam

FUSED_DEVICES = ("cpu", "cuda")  # where PyTorch's fused Adam kernel is known to exist


def _fusable(p: torch.Tensor) -> bool:
    """PyTorch has a fused Adam kernel for this tensor's device and dtype (CPU and CUDA floats)."""
    return p.device.type in FUSED_DEVICES and p.dtype in (
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
    )


class AdamTF(torch.optim.Optimizer):
    """Adam with TF1's epsilon placement (no weight decay, no AMSGrad).

    ``fused=True``: PyTorch's fused kernel with the epsilon mapped as the module docstring shows, for
    the tensors whose device and dtype it supports (the rest, and ``fused=False``, take the per-tensor
    loop, the reference). The state (``step``, ``exp_avg``, ``exp_avg_sq``) is the same in both, so a
    checkpoint from either resumes in the other.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-5,
        fused: bool = False,
    ):
        if lr < 0 or eps < 0 or not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid AdamTF settings lr={lr}, betas={betas}, eps={eps}.")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self.fused = bool(fused)
        # each parameter's step count on the host: reading the state's (a device tensor on the fused
        # path) would synchronise with a GPU once per parameter and step
        self._steps: dict[torch.Tensor, int] = {}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._steps = {}  # read again from the loaded state at the next step

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            at_step: dict[int, list[torch.Tensor]] = {}  # the fused path's tensors by their step count
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                done = self._steps.get(p)
                if done is None:
                    done = int(state["step"])
                self._steps[p] = done + 1
                if self.fused and _fusable(p):
                    at_step.setdefault(done, []).append(p)
                    continue
                state["step"] = t = done + 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                step_size = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size)
            for done, ps in at_step.items():
                self._fused_step(ps, group, done + 1)
        return loss

    def _fused_step(self, ps: list[torch.Tensor], group: dict, t: int) -> None:
        """PyTorch's fused Adam over ``ps`` (all at step ``t - 1``), with TF1's epsilon as PyTorch's."""
        beta1, beta2 = group["betas"]
        states = [self.state[p] for p in ps]
        for p, state in zip(ps, states):
            step = state["step"]  # the kernel counts in a float32 tensor on the parameter's device
            if not torch.is_tensor(step) or step.device != p.device or step.dtype != torch.float32:
                state["step"] = torch.tensor(float(step), dtype=torch.float32, device=p.device)
        adam(
            ps,
            [p.grad for p in ps],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            fused=True,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=0.0,
            eps=group["eps"] / math.sqrt(1 - beta2**t),
            maximize=False,
        )


def make_optimizer(
    params: Iterable,
    lr: float,
    kind: Literal["tf_adam", "torch_adam"] = "tf_adam",
    eps: float = 1e-5,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """``tf_adam`` (the reference code's, default) or ``torch_adam`` (an option), both with ``eps``;
    ``fused``: ``tf_adam`` through PyTorch's fused kernel (:class:`AdamTF`); ``torch_adam`` takes
    PyTorch's own default implementation whatever ``fused`` says."""
    if kind == "tf_adam":
        return AdamTF(params, lr=lr, eps=eps, fused=fused)
    if kind == "torch_adam":
        return torch.optim.Adam(params, lr=lr, eps=eps)
    raise ValueError(f"Unknown optimizer {kind!r}; use 'tf_adam' or 'torch_adam'.")


def linear_decay(base_lr: float, done: int, total: int) -> float:
    """``base_lr * (1 - done / total)``: the reference code's linear anneal to 0 (§1.3, §1.8)."""
    if total <= 0:
        raise ValueError(f"total must be > 0, got {total}.")
    return base_lr * max(0.0, 1.0 - done / total)
