"""Data-parallel helpers: the same PPO code on 1 process or under ``accelerate launch`` / ``torchrun``.

Each rank holds ``batch_size / world`` envs with its own seeds (``seed + rank * 100003``, PAPER.md §1.8);
gradients are all-reduced (averaged) before every optimiser step and whitening uses global moments, so
an update on 2 ranks equals the single-process update on the union of their batches within float
tolerance (tested with 2 gloo processes). On one process every helper is the identity.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist

RANK_SEED_STRIDE = 100003


def init_from_env() -> tuple[int, int]:
    """Join the process group that ``accelerate launch`` / ``torchrun`` describe in the environment.

    Returns ``(rank, world_size)``; ``(0, 1)`` when not launched that way. gloo on CPU, nccl on GPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = (
            "nccl" if torch.cuda.is_available() and os.environ.get("TEXTENV_BACKEND") != "gloo" else "gloo"
        )
        dist.init_process_group(backend=backend)
    return rank(), world_size()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over every element of ``x`` on every rank (equal shard sizes are not required)."""
    if world_size() == 1:
        return x.mean()
    total = all_reduce_sum(torch.stack([x.sum().double(), torch.tensor(x.numel(), dtype=torch.float64)]))
    return (total[0] / total[1]).to(x.dtype)


def global_whiten(x: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """:func:`agents.core.whiten` with moments over all ranks (biased variance, two passes)."""
    from agents.core import whiten

    if world_size() == 1:
        return whiten(x, shift_mean=shift_mean, eps=eps)
    mean = global_mean(x)
    var = global_mean((x - mean) ** 2)
    out = (x - mean) * torch.rsqrt(var + eps)
    return out + mean if not shift_mean else out


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce and average ``.grad`` of ``params`` across ranks (one flat buffer per dtype)."""
    world = world_size()
    if world == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def mean_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over ranks (same keys on every rank)."""
    if world_size() == 1:
        return metrics
    keys = sorted(metrics)
    values = all_reduce_sum(torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64))
    return {k: float(v) / world_size() for k, v in zip(keys, values)}
