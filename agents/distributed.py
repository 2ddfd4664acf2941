"""Data-parallel training on PyTorch's own engines: the same agent code on 1 process, or on several under
``torchrun`` / ``accelerate launch`` with DistributedDataParallel (``run.parallel = "ddp"``) or FSDP2
(``"fsdp"``, :func:`torch.distributed.fsdp.fully_shard`).

Each rank holds ``batch_size / world`` envs with its own seeds (``seed + rank * 100003``, PAPER.md §1.8);
the engine averages the gradients during the backward pass (DDP: bucketed all-reduce overlapped with the
backward; FSDP: reduce-scatter of sharded gradients) and whitening uses global moments
(:func:`global_whiten`), so an update on N ranks equals the single-process update on the union of their
batches within float tolerance (tested with 2 gloo processes). On one process every helper is the
identity and :func:`wrap` returns the plain path: the policy's own methods, nothing wrapped.

The policy's work lives in methods (``forward_stats``, ``sample``, ``features``) rather than in
``forward``, while DDP and FSDP hook their communication into ``forward``: :class:`_Call` is the module
whose ``forward(method, *args)`` runs ``policy.method(*args)``, and the engine wraps that. DDP wraps only
the loss forward (sampling and the reference use the policy itself); FSDP shards every transformer block
and the rest of the policy (and a copied reference the same way), so every call that touches the weights
goes through the sharded root (:meth:`Engine.call`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

RANK_SEED_STRIDE = 100003
PARALLEL = ("none", "ddp", "fsdp")


class ResumeMismatch(ValueError):
    """A checkpoint written by another number of processes, or by another engine (FSDP or not)."""


def init_from_env(device: str = "auto") -> tuple[int, int]:
    """Join the process group that ``accelerate launch`` / ``torchrun`` describe in the environment.

    Returns ``(rank, world_size)``; ``(0, 1)`` when not launched that way. ``device`` is the run's
    (``run.device``): nccl when it is CUDA (``"cuda"``, or ``"auto"`` on a machine with a GPU; each rank
    then uses the GPU ``LOCAL_RANK``; a fixed ``"cuda:N"`` is refused), gloo otherwise (``"cpu"`` on a GPU
    machine too: nccl cannot carry CPU tensors), or
    whatever ``TEXTENV_BACKEND=gloo`` forces.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and device.startswith("cuda:"):
        raise ValueError(
            f"run.device={device!r} would put all {world} processes of this launch on one GPU; use "
            "run.device='cuda' or 'auto' (each process takes the GPU LOCAL_RANK), and choose the GPUs with "
            "CUDA_VISIBLE_DEVICES."
        )
    if world > 1 and not dist.is_initialized():
        on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        nccl = on_cuda and torch.cuda.is_available() and os.environ.get("TEXTENV_BACKEND") != "gloo"
        if nccl:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if nccl else "gloo")
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


def mean_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over ranks (same keys on every rank)."""
    if world_size() == 1:
        return metrics
    keys = sorted(metrics)
    values = all_reduce_sum(torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64))
    return {k: float(v) / world_size() for k, v in zip(keys, values)}


# ------------------------------------------------------------------------------------ engines
class _Call(nn.Module):
    """``forward(method, *args, **kwargs)`` runs ``module.method(*args, **kwargs)``: the one entry point
    through which DDP and FSDP see the policy's work (their hooks sit on ``forward``)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, method)(*args, **kwargs)


def is_dtensor(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded (FSDP) one, gathered (a collective: every rank calls it); else ``t``."""
    return t.full_tensor() if is_dtensor(t) else t


def local(t: Any) -> Any:
    """This rank's shard of a sharded (FSDP) tensor; anything else unchanged."""
    return t.to_local() if is_dtensor(t) else t


def _map(obj: Any, fn) -> Any:
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(v, fn) for v in obj)
    return fn(obj)


def local_state(state: dict) -> dict:
    """An optimiser's ``state_dict()`` with every sharded (FSDP) tensor replaced by this rank's shard."""
    return _map(state, local)


def sharded_state(state: dict, optimizer: torch.optim.Optimizer) -> dict:
    """:func:`local_state`'s inverse for ``optimizer``: the shards of its sharded (FSDP) parameters'
    state become DTensors like the parameters again; the state of plain parameters is unchanged."""
    from torch.distributed.tensor import DTensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    ids = [i for group in state.get("param_groups", []) for i in group["params"]]
    if not any(is_dtensor(p) for p in params) or len(ids) != len(params):
        return state
    out = dict(state, state=dict(state["state"]))
    for i, p in zip(ids, params):
        if is_dtensor(p) and i in out["state"]:
            shard = p.to_local().shape
            out["state"][i] = {
                k: DTensor.from_local(
                    v.to(p.device), p.device_mesh, p.placements, shape=p.shape, stride=p.stride()
                )
                if isinstance(v, torch.Tensor) and v.shape == shard and v.dim() > 0
                else v
                for k, v in out["state"][i].items()
            }
    return out


def copy_full_(param: torch.Tensor, whole: torch.Tensor) -> None:
    """``param.copy_(whole)``; for a sharded (FSDP) parameter, its shard of ``whole`` (no communication)."""
    if not is_dtensor(param):
        param.copy_(whole)
        return
    from torch.distributed.tensor import distribute_tensor

    mine = distribute_tensor(whole.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
    param.to_local().copy_(mine.to_local())


class Engine:
    """How the agent runs its policy: the plain path (one process), DDP or FSDP (several).

    * :meth:`call` (``"sample"``, ``"features"``, ``"forward_stats"`` without gradient): the policy's
      method; under FSDP through the sharded root.
    * :meth:`forward_stats`: the loss forward, whose backward averages the gradients over ranks.
    * :meth:`no_sync`: around the backward passes of all but the last micro-batch of an accumulated step.
    """

    mode: str = "plain"

    def __init__(self, policy: nn.Module) -> None:
        self.policy = policy

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.policy, method)(*args, **kwargs)

    def forward_stats(self, *args: Any) -> Any:
        return self.policy.forward_stats(*args)

    def no_sync(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def reference(self, reference: Any) -> Any:
        """The frozen reference as this engine runs it (plain and DDP: unchanged)."""
        return reference


class DDPEngine(Engine):
    """DistributedDataParallel around the loss forward only: gradients of the parameters in ``trainable``
    are all-reduced in buckets while the backward pass runs (no extra flat copy: the ``.grad`` tensors
    are views of the buckets). Parameters that require a gradient but that the agent does not train (a
    group algorithm's value head) are left out of the reduction."""

    mode = "ddp"

    def __init__(self, policy: nn.Module, trainable: list[nn.Parameter]) -> None:
        from torch.nn.parallel import DistributedDataParallel

        super().__init__(policy)
        call = _Call(policy)
        ids = {id(p) for p in trainable}
        ignore = [n for n, p in call.named_parameters() if p.requires_grad and id(p) not in ids]
        if ignore:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(call, ignore)
        self.ddp = DistributedDataParallel(
            call,
            device_ids=None,
            broadcast_buffers=False,  # no trained buffers; do not broadcast them on every forward
            find_unused_parameters=False,
            gradient_as_bucket_view=True,
        )

    def forward_stats(self, *args: Any) -> Any:
        return self.ddp("forward_stats", *args)

    def no_sync(self) -> contextlib.AbstractContextManager:
        return self.ddp.no_sync()


def mixed_precision(precision: str):
    """FSDP2's :class:`~torch.distributed.fsdp.MixedPrecisionPolicy` for the transformer blocks under
    ``run.precision``: with ``"bf16"`` a block's weights are gathered in bfloat16 (half the all-gather
    traffic and half the memory of the unsharded block; its matmuls run in bfloat16 under autocast
    anyway), while the shards the optimiser steps stay float32 and gradients are reduce-scattered in
    float32. Inside the blocks the residual stream is bfloat16 too (a block's inputs are cast to its
    weights' dtype: CPU layer norms refuse float32 inputs with bfloat16 weights). ``None``
    (gather the float32 shards) for ``"fp32"``, and for ``"fp16"``, whose dynamic loss scaling unscales
    float32 gradients."""
    if precision != "bf16":
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def _shard(module: nn.Module, precision: str = "fp32") -> nn.Module:
    """FSDP2: every transformer block of ``module``'s LMs (the policy's, a separate value model's) its own
    unit, gathered in the dtype of :func:`mixed_precision`; the rest (embeddings, final norm, heads) in
    the float32 root unit (a :class:`_Call`, returned), so log-probs, values and KL stay float32."""
    from torch.distributed.fsdp import fully_shard

    from textenv.models.trunk import blocks_of

    kwargs = {"mp_policy": mp} if (mp := mixed_precision(precision)) is not None else {}
    for lm in (getattr(module, "hf", None), getattr(getattr(module, "value_model", None), "lm", None)):
        if lm is not None:
            for block in blocks_of(lm.base_model):
                fully_shard(block, **kwargs)
    root = _Call(module)
    fully_shard(root)
    return root


class FSDPEngine(Engine):
    """FSDP2: parameters, gradients and optimiser state sharded over the ranks; a block's weights are
    gathered only while it runs. Parameters become DTensors: build the optimiser after :func:`wrap`."""

    mode = "fsdp"

    def __init__(self, policy: nn.Module) -> None:
        super().__init__(policy)
        self.root = _shard(policy, getattr(policy, "precision", "fp32"))

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.root(method, *args, **kwargs)

    def forward_stats(self, *args: Any) -> Any:
        return self.root("forward_stats", *args)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        self.root.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.root.set_requires_gradient_sync(True)

    def reference(self, reference: Any) -> Any:
        if getattr(reference, "policy", None) is self.policy:  # LoRA: the policy with adapters disabled
            return _AdapterDisabled(self)
        return _ShardedReference(_shard(reference, getattr(reference, "precision", "fp32")))


class _ShardedReference:
    def __init__(self, root: nn.Module) -> None:
        self.root = root

    @torch.no_grad()
    def forward_stats(self, *args: Any) -> Any:
        return self.root("forward_stats", *args)

    def eval(self) -> _ShardedReference:
        return self


class _AdapterDisabled(_ShardedReference):
    def __init__(self, engine: FSDPEngine) -> None:
        super().__init__(engine.root)
        self.policy = engine.policy

    @torch.no_grad()
    def forward_stats(self, query_responses: torch.Tensor, context_length: int, features: Any = None) -> Any:
        with self.policy.lm.disable_adapter():
            return self.root("forward_stats", query_responses, context_length)


def wrap(policy: nn.Module, parallel: str, trainable: list[nn.Parameter]) -> Engine:
    """The engine for ``parallel`` (``run.parallel``) on this process group: the plain path on one
    process whatever ``parallel`` says; on several, DDP or FSDP (``"none"`` is refused there)."""
    if parallel not in PARALLEL:
        raise ValueError(f"run.parallel = {parallel!r}: choose one of {list(PARALLEL)}.")
    world = world_size()
    if world == 1:
        return Engine(policy)
    if parallel == "none":
        raise ValueError(
            f'run.parallel = "none", but this run was launched on {world} processes; use "ddp" (or "fsdp" '
            "for a model that does not fit one device), or launch one process."
        )
    return DDPEngine(policy, trainable) if parallel == "ddp" else FSDPEngine(policy)
