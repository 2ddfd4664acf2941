"""Float32 linear layers on the CPU through oneDNN instead of the BLAS (``TEXTENV_CPU_MATMUL``).

PyTorch's CPU wheels send a float32 ``nn.Linear`` to MKL's ``sgemm``. On an AMD EPYC with AVX-512 (this
project's CI machine) that runs at about 190 GFLOP/s on 2 cores for the training shapes of SmolLM2-135M
(704 x 576 x 1536), while oneDNN, which PyTorch also ships (the kernel ``torch.ops.mkldnn._linear_pointwise``
that ``torch.compile`` uses for CPU inference), runs the same products at 310-430 GFLOP/s forward and
backward; for most 8-row products of a decode step it is 1.3-3x faster too, and reads a step's weights
from memory 1.8x faster (``python -m benchmarks.bench_cpu_linear`` measures both side by side). Both are float32 with float32 accumulation: they
differ only in summation order (the last bits), never in precision.

:func:`use_onednn` turns the ``nn.Linear`` modules of a model (and GPT-2's ``transformers`` ``Conv1D``)
into :class:`OneDNNLinear` (``OneDNNConv1D``), a subclass whose ``forward`` runs the product (and, in
training, both products of the backward pass) through oneDNN when the call is a plain float32 CPU one,
and is the parent's ``forward`` otherwise (CUDA, autocast to bf16/fp16, other dtypes, sparse or DTensor
tensors, ``torch.compile`` tracing with gradient, ``torch.func`` transforms, forward-mode AD, a 1-D
input, oneDNN disabled by ``torch.backends.mkldnn.flags``, and products under :data:`MIN_PRODUCT`
multiply-adds, where the BLAS is faster). Traced by ``torch.compile`` without gradient (the compiled
static sampler), a call becomes the custom operator :data:`COMPILED_OP` (``textenv::onednn_linear``). Parameters, state dicts, ``isinstance(m, nn.Linear)``, deep copies, pickling and LoRA
wrapping are unchanged; tools that match the exact class (``torch.ao.quantization.quantize_dynamic(m,
{nn.Linear})``) skip these layers: call ``use_onednn(model, enabled=False)`` first.

:func:`~textenv.models.load_causal_lm` applies it to every model it loads, per ``TEXTENV_CPU_MATMUL``:

* ``auto`` (default): oneDNN on x86-64 when this PyTorch has the kernel, else the BLAS;
* ``onednn``: oneDNN (an error where the kernel is missing);
* ``blas``: PyTorch's own path, bit for bit the behaviour before this option.
"""

from __future__ import annotations

import functools
import os
import platform

import torch
import torch.nn.functional as F
from torch import nn

ENV = "TEXTENV_CPU_MATMUL"
CHOICES = ("auto", "onednn", "blas")


@functools.cache
def onednn_available() -> bool:
    """Whether this PyTorch has oneDNN's linear kernel and it gives float32 products on this CPU."""
    if not torch.backends.mkldnn.is_available():
        return False
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None:
        return False
    try:
        x, w = torch.ones(2, 3), torch.ones(4, 3)
        out = op(x, w, None, "none", [], "")
    except RuntimeError:
        return False
    return out.dtype == torch.float32 and bool((out == 3).all())


def setting() -> str:
    """``TEXTENV_CPU_MATMUL`` (default ``auto``); any other value is an error naming it and the choices."""
    value = os.environ.get(ENV, "auto").strip().lower()
    if value not in CHOICES:
        raise ValueError(
            f"{ENV}={os.environ[ENV]!r}: use 'auto' (the default: oneDNN on x86-64 CPUs), 'onednn' or "
            "'blas' (PyTorch's own float32 matmul)."
        )
    return value


def wanted() -> bool:
    """Whether :func:`~textenv.models.load_causal_lm` should apply :func:`use_onednn` (the setting)."""
    mode = setting()
    if mode == "blas":
        return False
    if mode == "onednn":
        if not onednn_available():
            raise RuntimeError(
                f"{ENV}=onednn, but this PyTorch has no usable oneDNN linear kernel "
                "(torch.ops.mkldnn._linear_pointwise); use TEXTENV_CPU_MATMUL=blas."
            )
        return True
    return platform.machine().lower() in ("x86_64", "amd64") and onednn_available()


def kernel() -> str:
    """The float32 CPU kernel models loaded now get: ``"onednn"`` or ``"blas"`` (runs record it)."""
    return "onednn" if wanted() else "blas"


# below this many multiply-adds per call (rows x in x out) the BLAS is faster (the kernel's fixed cost:
# 0.26x at 8 x 64 x 64, 0.84x at 1 x 576 x 1536, 1.35x at 8 x 576 x 1536 on 1 thread); tests lower it
MIN_PRODUCT = 2**20


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` for a 2-D ``x`` (the kernel returns a view for more dimensions, and a custom
    autograd Function must not: in-place edits of its output's slices would then be refused)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinearFn(torch.autograd.Function):
    """``x @ weight.T + bias`` (``x`` 2-D) with all three products (forward, input and weight gradients)
    in oneDNN. Saves what the backward needs only, as ``F.linear`` does: ``x`` when the weight needs a
    gradient, the weight when ``x`` does. A double backward (``create_graph=True``) runs differentiable
    PyTorch products instead."""

    @staticmethod
    def forward(x, weight, bias):
        return _linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.has_bias = bias is not None
        ctx.save_for_backward(
            x if ctx.needs_input_grad[1] else None, weight if ctx.needs_input_grad[0] else None
        )

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        differentiable = torch.is_grad_enabled()  # create_graph: the backward itself is recorded
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # grad @ W
            grad_x = grad @ weight if differentiable else _linear(grad, weight.t(), None)
        if ctx.needs_input_grad[1]:  # grad^T @ x
            grad_w = grad.t() @ x if differentiable else _linear(grad.t(), x.t(), None)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b


def _plain(t: torch.Tensor | None) -> bool:
    return t is None or (
        type(t) in (torch.Tensor, nn.Parameter) and t.dtype == torch.float32 and t.layout == torch.strided
    )


def _applies(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """A plain float32 CPU call, large enough, outside autocast, ``torch.compile``, ``torch.func``
    transforms and forward-mode AD, with oneDNN enabled (``torch.backends.mkldnn.flags``)."""
    return (
        not torch.compiler.is_compiling()  # first: nothing below is traced
        and x.device.type == "cpu"
        and x.dim() >= 2
        and _plain(x)
        and _plain(weight)
        and _plain(bias)
        and weight.device.type == "cpu"
        and x.numel() * weight.shape[0] >= MIN_PRODUCT
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
        and not torch._C._are_functorch_transforms_active()
        and torch.autograd.forward_ad._current_level < 0
    )


def _traced_applies(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Under ``torch.compile``, a float32 CPU call without gradient (the compiled static sampler's decode
    step), large enough, outside autocast, with oneDNN enabled: :func:`compiled_op` serves it."""
    return (
        COMPILED_OP is not None
        and torch.compiler.is_compiling()
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and weight.device.type == "cpu"
        and x.dim() >= 2
        and x.dtype == weight.dtype == torch.float32
        and (bias is None or bias.dtype == torch.float32)
        and x.numel() * weight.shape[0] >= MIN_PRODUCT
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
    )


def _register_compiled_op():
    """``torch.ops.textenv.onednn_linear(x, weight, bias)``: the oneDNN product as a custom operator
    without autograd. ``torch.compile`` keeps it one opaque kernel call (its own lowering of
    ``mkldnn._linear_pointwise`` fails) and fuses the small operations around it, so the compiled static
    sampler (``run.compile_sampler``) runs its decode steps' linear layers on the same kernel as the
    eager loop. Registered at import (tracing must not register operators); None without
    ``torch.library.custom_op``."""
    custom_op = getattr(torch.library, "custom_op", None)
    if custom_op is None:
        return None
    try:
        op = custom_op(
            "textenv::onednn_linear",
            mutates_args=(),
            schema="(Tensor x, Tensor weight, Tensor? bias) -> Tensor",
        )(_onednn_product)
    except RuntimeError:  # this module imported a second time: the operator exists
        return torch.ops.textenv.onednn_linear.default
    op.register_fake(lambda x, weight, bias: x.new_empty(*x.shape[:-1], weight.shape[0]))
    return op._opoverload


def _onednn_product(x, weight, bias):
    out = _linear(x.reshape(-1, x.shape[-1]), weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])


COMPILED_OP = _register_compiled_op()


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` through oneDNN (``weight`` (out, in), any strides)."""
    flat = x.reshape(-1, x.shape[-1])
    if torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    ):
        out = _OneDNNLinearFn.apply(flat, weight, bias)
    else:
        out = _linear(flat, weight, bias)
    return out if x.dim() == 2 else out.view(*x.shape[:-1], weight.shape[0])


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose plain float32 CPU calls run through oneDNN (see the module docstring)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if _applies(input, self.weight, self.bias):
            return _onednn_linear(input, self.weight, self.bias)
        if _traced_applies(input, self.weight, self.bias):
            return COMPILED_OP(input, self.weight, self.bias)
        return F.linear(input, self.weight, self.bias)


@functools.cache
def _conv1d_classes() -> tuple[type, type] | tuple[None, None]:
    """(Hugging Face's ``Conv1D``, its oneDNN subclass): GPT-2's linear layers store the weight (in, out).
    Built on first use (importing ``transformers`` is slow); ``textenv.models.cpu_linear.OneDNNConv1D``
    resolves to it, so models holding it pickle."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:
        return None, None

    class OneDNNConv1D(Conv1D):
        """``transformers``' ``Conv1D`` whose plain float32 CPU calls run through oneDNN."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if _applies(x, self.weight, self.bias):
                return _onednn_linear(x, self.weight.t(), self.bias)
            if _traced_applies(x, self.weight, self.bias):
                return COMPILED_OP(x, self.weight.t(), self.bias)
            return super().forward(x)

    OneDNNConv1D.__module__, OneDNNConv1D.__qualname__ = __name__, "OneDNNConv1D"
    return Conv1D, OneDNNConv1D


def __getattr__(name: str):  # PEP 562: OneDNNConv1D, built on first use
    if name == "OneDNNConv1D":
        cls = _conv1d_classes()[1]
        if cls is not None:
            return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def use_onednn(model: nn.Module, enabled: bool = True) -> int:
    """Turn every ``nn.Linear`` of ``model`` (and every ``transformers`` ``Conv1D``, GPT-2's) into its
    oneDNN subclass, or back with ``enabled=False``; exactly those classes, so subclasses with their own
    forward are left alone. Returns how many modules changed. Raises when ``enabled`` and this PyTorch
    lacks the kernel."""
    if enabled and not onednn_available():
        raise RuntimeError(
            "this PyTorch has no usable oneDNN linear kernel (torch.ops.mkldnn._linear_pointwise); "
            "keep PyTorch's own matmul (TEXTENV_CPU_MATMUL=blas)."
        )
    pairs = [(nn.Linear, OneDNNLinear)]
    conv1d, onednn_conv1d = _conv1d_classes()
    if conv1d is not None:
        pairs.append((conv1d, onednn_conv1d))
    swap = {plain: fast for plain, fast in pairs} if enabled else {fast: plain for plain, fast in pairs}
    changed = 0
    for module in model.modules():
        target = swap.get(type(module))
        if target is not None:
            module.__class__ = target
            changed += 1
    return changed
