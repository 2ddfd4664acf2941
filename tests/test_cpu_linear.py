"""textenv.models.cpu_linear: float32 CPU linear layers through oneDNN, against float64 reference loops."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from textenv.models import cpu_linear, load_causal_lm
from textenv.models.cpu_linear import OneDNNLinear, use_onednn

needs_kernel = pytest.mark.skipif(not cpu_linear.onednn_available(), reason="no oneDNN linear kernel")


@pytest.fixture(autouse=True)
def every_size(monkeypatch):
    """The tests' products are tiny: send them through oneDNN anyway (the default sends products under
    MIN_PRODUCT multiply-adds to the BLAS, which is faster there)."""
    monkeypatch.setattr(cpu_linear, "MIN_PRODUCT", 0)


def reference_linear(x, w, b):
    """y[..., o] = sum_i x[..., i] w[o, i] + b[o], as a plain loop in float64."""
    x2 = x.double().reshape(-1, x.shape[-1])
    out = torch.zeros(x2.shape[0], w.shape[0], dtype=torch.float64)
    for r in range(x2.shape[0]):
        for o in range(w.shape[0]):
            out[r, o] = (x2[r] * w[o].double()).sum() + (0.0 if b is None else float(b[o]))
    return out.reshape(*x.shape[:-1], w.shape[0])


def loss_and_grads_on_both_kernels(monkeypatch, spec, seed, shape, check=None):
    """``{kernel: (loss, {name: grad})}`` of ``spec``'s LM loss on seeded ids, loaded under each setting;
    ``check(lm, kernel)`` sees each model first."""
    out = {}
    for mode in ("blas", "onednn"):
        monkeypatch.setenv(cpu_linear.ENV, mode)
        lm, _ = load_causal_lm(spec, seed=seed)
        if check is not None:
            check(lm, mode)
        ids = torch.randint(0, 500, shape, generator=torch.Generator().manual_seed(0))
        loss = lm(input_ids=ids, labels=ids).loss
        loss.backward()
        out[mode] = (loss.detach(), {n: p.grad.clone() for n, p in lm.named_parameters()})
    torch.testing.assert_close(out["blas"][0], out["onednn"][0], rtol=1e-5, atol=1e-6)
    for name, g in out["blas"][1].items():
        torch.testing.assert_close(out["onednn"][1][name], g, rtol=1e-4, atol=1e-6, msg=name)
    return lm


@needs_kernel
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7), (3, 1, 7)])
def test_forward_and_gradients_match_a_float64_loop(bias, shape, monkeypatch):
    torch.manual_seed(0)
    layer = nn.Linear(7, 4, bias=bias)
    assert use_onednn(layer) == 1 and type(layer) is OneDNNLinear
    calls = []
    real = cpu_linear._linear
    monkeypatch.setattr(cpu_linear, "_linear", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(*shape, requires_grad=True)
    y = layer(x)
    assert len(calls) == 1  # the forward product ran in oneDNN
    assert y.dtype == torch.float32 and y.shape == (*shape[:-1], 4)
    bias_ = None if layer.bias is None else layer.bias.detach()
    torch.testing.assert_close(y.double(), reference_linear(x.detach(), layer.weight.detach(), bias_))
    g = torch.randn_like(y)
    y.backward(g)
    # dL/dx = g @ W, dL/dW = g^T x, dL/db = sum of g over rows (plain loops in float64)
    g2, x2 = g.double().reshape(-1, 4), x.detach().double().reshape(-1, 7)
    w = layer.weight.detach().double()
    gx = torch.stack([sum(g2[r, o] * w[o] for o in range(4)) for r in range(len(g2))])
    gw = torch.stack([sum(g2[r, o] * x2[r] for r in range(len(g2))) for o in range(4)])
    torch.testing.assert_close(x.grad.double().reshape(-1, 7), gx, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.weight.grad.double(), gw, rtol=1e-5, atol=1e-6)
    if bias:
        torch.testing.assert_close(layer.bias.grad.double(), g2.sum(0), rtol=1e-5, atol=1e-6)
    assert len(calls) == 3  # and both gradient products


@needs_kernel
def test_frozen_weight_and_input_without_grad():
    torch.manual_seed(0)
    layer = nn.Linear(6, 3)
    use_onednn(layer)
    layer.weight.requires_grad_(False)
    x = torch.randn(4, 6, requires_grad=True)
    layer(x).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is not None and x.grad is not None
    layer.weight.requires_grad_(True)
    x = torch.randn(4, 6)  # no input gradient wanted
    layer(x).sum().backward()
    assert layer.weight.grad is not None


@needs_kernel
def test_falls_back_to_pytorch_where_onednn_does_not_apply():
    torch.manual_seed(0)
    layer = nn.Linear(8, 5)
    use_onednn(layer)
    x = torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast keeps its dtype
        assert layer(x).dtype == torch.bfloat16
    one_d = torch.randn(8)
    torch.testing.assert_close(layer(one_d), nn.functional.linear(one_d, layer.weight, layer.bias))
    double = copy.deepcopy(layer).double()
    assert double(x.double()).dtype == torch.float64
    assert layer(torch.randn(0, 8)).shape == (0, 5)


@needs_kernel
def test_module_identity_is_kept():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    keys = list(model.state_dict())
    assert use_onednn(model) == 2
    assert all(isinstance(m, nn.Linear) for m in (model[0], model[2]))
    assert list(model.state_dict()) == keys
    clone = copy.deepcopy(model)
    assert type(clone[0]) is OneDNNLinear
    x = torch.randn(3, 4)
    torch.testing.assert_close(clone(x), model(x))
    assert torch.equal(model(x), model(x))  # deterministic
    assert use_onednn(model, enabled=False) == 2 and type(model[0]) is nn.Linear


@needs_kernel
def test_subclasses_with_their_own_forward_are_left_alone():
    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(Scaled(3, 3), nn.Linear(3, 3))
    assert use_onednn(model) == 1 and type(model[0]) is Scaled


def test_setting_names_a_bad_value(monkeypatch):
    monkeypatch.setenv(cpu_linear.ENV, "mkl")
    with pytest.raises(ValueError, match=r"TEXTENV_CPU_MATMUL='mkl': use 'auto'.*'onednn' or 'blas'"):
        cpu_linear.setting()


def test_onednn_requested_without_the_kernel(monkeypatch):
    monkeypatch.setenv(cpu_linear.ENV, "onednn")
    monkeypatch.setattr(cpu_linear, "onednn_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"TEXTENV_CPU_MATMUL=onednn, but this PyTorch has no usable"):
        cpu_linear.wanted()
    with pytest.raises(RuntimeError, match=r"TEXTENV_CPU_MATMUL=blas"):
        use_onednn(nn.Linear(2, 2))


@needs_kernel
@pytest.mark.parametrize("mode", ["blas", "onednn"])
def test_load_causal_lm_follows_the_setting(monkeypatch, mode):
    monkeypatch.setenv(cpu_linear.ENV, mode)
    lm, _ = load_causal_lm("tiny-llama")
    kinds = {type(m) for m in lm.modules() if isinstance(m, nn.Linear)}
    assert kinds == ({nn.Linear} if mode == "blas" else {OneDNNLinear})


@needs_kernel
def test_a_tiny_model_trains_the_same_on_both_kernels(monkeypatch):
    """Loss and every gradient of a tiny Llama agree between oneDNN and PyTorch's BLAS within float32
    rounding (the two differ only in summation order)."""
    loss_and_grads_on_both_kernels(monkeypatch, "tiny-llama", 3, (3, 12))


def test_a_training_command_refuses_a_bad_setting_as_a_usage_error(monkeypatch, capsys):
    from agents.cli import main

    monkeypatch.setenv(cpu_linear.ENV, "fast")
    with pytest.raises(SystemExit) as exc:
        main(["train-policy", "--config", "does-not-matter.toml"])
    assert exc.value.code == 2
    assert "TEXTENV_CPU_MATMUL='fast': use 'auto'" in capsys.readouterr().err


@needs_kernel
def test_the_output_can_be_edited_in_place_like_f_linear():
    """TRL divides a slice of the logits by the temperature in place: allowed on F.linear's output, so on
    ours too (a custom Function returning the kernel's view would refuse it)."""
    torch.manual_seed(0)
    layer = nn.Linear(4, 6)
    use_onednn(layer)
    x = torch.randn(2, 5, 4, requires_grad=True)
    logits = layer(x)[:, 1:-1]
    logits /= 0.7
    logits.sum().backward()
    expected = torch.zeros(2, 5, 4)
    expected[:, 1:-1] = layer.weight.detach().sum(0) / 0.7
    torch.testing.assert_close(x.grad, expected)


@needs_kernel
def test_gpt2_conv1d_layers_match_the_blas(monkeypatch):
    """GPT-2's Conv1D (weight stored (in, out)) gets the oneDNN path too; loss and gradients of a tiny
    GPT-2 agree with PyTorch's own path within float32 rounding."""
    from transformers.pytorch_utils import Conv1D

    def conv1d_kind(lm, mode):
        convs = [m for m in lm.modules() if isinstance(m, Conv1D)]
        assert convs and all((type(m) is Conv1D) == (mode == "blas") for m in convs)

    lm = loss_and_grads_on_both_kernels(monkeypatch, "tiny-gpt2", 1, (2, 9), check=conv1d_kind)
    convs = [m for m in lm.modules() if isinstance(m, Conv1D)]
    assert use_onednn(lm, enabled=False) > len(convs) - 1
    assert all(type(m) is Conv1D for m in lm.modules() if isinstance(m, Conv1D))


@needs_kernel
def test_saves_what_the_backward_needs_only_as_f_linear_does():
    """With a frozen weight the input is not saved: editing it in place after the forward is allowed (as
    with F.linear), and a LoRA-style frozen layer keeps no activation for its backward."""
    torch.manual_seed(0)
    layer = nn.Linear(6, 3)
    use_onednn(layer)
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    x = torch.randn(4, 6, requires_grad=True)
    h = x * 2
    y = layer(h)
    h.add_(1.0)  # F.linear allows this: its backward needs only the weight
    y.sum().backward()
    torch.testing.assert_close(x.grad, 2 * layer.weight.sum(0).expand(4, 6))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        layer(torch.randn(5, 6, requires_grad=True))
    assert saved == [(3, 6)]  # the weight only


@needs_kernel
def test_double_backward_matches_f_linear():
    torch.manual_seed(0)
    ref = nn.Linear(5, 3)
    layer = copy.deepcopy(ref)
    use_onednn(layer)
    x = torch.randn(4, 5)
    second = []
    for m in (ref, layer):
        xi = x.clone().requires_grad_()
        (g,) = torch.autograd.grad((m(xi) ** 2).sum(), xi, create_graph=True)
        (gg,) = torch.autograd.grad(g.pow(2).sum(), m.weight)
        second.append(gg)
    torch.testing.assert_close(second[1], second[0])


@needs_kernel
def test_torch_func_and_forward_ad_take_pytorch_path():
    import torch.autograd.forward_ad as fwAD
    from torch.func import functional_call, grad, jvp, vmap

    torch.manual_seed(0)
    ref = nn.Linear(7, 4)
    layer = copy.deepcopy(ref)
    use_onednn(layer)
    x, t = torch.randn(3, 5, 7), torch.randn(3, 5, 7)

    def weight_grad(m):
        return grad(lambda p: functional_call(m, p, (x,)).sum())(dict(m.named_parameters()))["weight"]

    torch.testing.assert_close(weight_grad(layer), weight_grad(ref))
    torch.testing.assert_close(vmap(layer)(x), ref(x))
    torch.testing.assert_close(jvp(layer, (x,), (t,))[1], jvp(ref, (x,), (t,))[1])
    with torch.no_grad(), fwAD.dual_level():
        tangent = fwAD.unpack_dual(layer(fwAD.make_dual(x, t))).tangent
        expected = fwAD.unpack_dual(ref(fwAD.make_dual(x, t))).tangent
    assert tangent is not None
    torch.testing.assert_close(tangent, expected)


@needs_kernel
def test_small_products_sparse_inputs_and_disabled_onednn_use_f_linear(monkeypatch):
    torch.manual_seed(0)
    layer = nn.Linear(8, 5)
    use_onednn(layer)
    x = torch.randn(3, 8)
    expected = nn.functional.linear(x, layer.weight, layer.bias)
    calls = []
    real = cpu_linear._linear
    monkeypatch.setattr(cpu_linear, "_linear", lambda *a: calls.append(1) or real(*a))
    layer(x)
    assert calls == [1]  # MIN_PRODUCT = 0 here: oneDNN
    monkeypatch.setattr(cpu_linear, "MIN_PRODUCT", 3 * 8 * 5 + 1)  # one multiply-add short
    assert torch.equal(layer(x), expected) and calls == [1]
    monkeypatch.setattr(cpu_linear, "MIN_PRODUCT", 0)
    with torch.backends.mkldnn.flags(enabled=False):
        assert torch.equal(layer(x), expected) and calls == [1]
    sparse = x.to_sparse()
    torch.testing.assert_close(layer(sparse), expected)
    assert calls == [1]


@needs_kernel
def test_models_holding_the_layers_pickle(monkeypatch, tmp_path):
    import io

    monkeypatch.setenv(cpu_linear.ENV, "onednn")
    lm, _ = load_causal_lm("tiny-gpt2")
    buffer = io.BytesIO()
    torch.save(lm, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded.transformer.h[0].attn.c_attn).__name__ == "OneDNNConv1D"
    ids = torch.randint(0, 400, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, lm(input_ids=ids).logits)


@needs_kernel
def test_torch_compile_traces_pytorch_path_without_graph_breaks():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    model = copy.deepcopy(ref)
    use_onednn(model)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(5, 6, requires_grad=True)
    torch.testing.assert_close(compiled(x), ref(x))
    compiled(x).sum().backward()
    assert model[0].weight.grad is not None


def recording_backend(graphs):
    """A ``torch.compile`` backend that keeps each traced graph and runs it as traced (no code generation)."""

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    return backend


def custom_op_calls(graphs) -> int:
    op = cpu_linear.COMPILED_OP
    return sum(n.target is op for gm in graphs for n in gm.graph.nodes if n.op == "call_function")


@needs_kernel
def test_compiled_calls_without_gradient_keep_the_onednn_kernel_as_one_custom_op():
    """Traced by torch.compile without gradient (the compiled sampler), every linear layer becomes
    ``textenv::onednn_linear`` (opaque to the compiler, the eager loop's kernel); with gradient the
    trace is PyTorch's own product, so a compiled training step still backpropagates."""
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    model = copy.deepcopy(ref)
    use_onednn(model)
    graphs = []
    compiled = torch.compile(model, backend=recording_backend(graphs), fullgraph=True)
    x = torch.randn(5, 6)
    with torch.no_grad():
        out = compiled(x)
    torch.testing.assert_close(out, ref(x))
    assert custom_op_calls(graphs) == 2
    graphs.clear()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=recording_backend(graphs), fullgraph=True)
    compiled(x.requires_grad_()).sum().backward()
    assert custom_op_calls(graphs) == 0 and model[0].weight.grad is not None


@needs_kernel
@pytest.mark.parametrize("spec", ["tiny-gpt2", "tiny-llama"])
def test_the_compiled_static_sampler_runs_the_onednn_op_and_draws_what_the_eager_one_draws(monkeypatch, spec):
    from agents import policy as P
    from agents.policy import PolicyWithValue
    from textenv.models.tokenization import pad_sequences

    policy = PolicyWithValue.from_spec(spec, temperature=0.7, seed=0)
    tok = policy.tokenizer
    texts = ["It was a dark and stormy night;", "Call me"]
    ctx = torch.as_tensor(pad_sequences([tok.encode(t) for t in texts], tok.pad_token_id, side="left"))
    eager, eager_logp = policy.sample(ctx, 5, generator=torch.Generator().manual_seed(0))
    graphs = []
    torch._dynamo.reset()
    monkeypatch.setattr(
        P, "_COMPILED_DECODE", [torch.compile(P._decode_step, backend=recording_backend(graphs))]
    )
    policy.compile_sampler = True
    compiled, compiled_logp = policy.sample(ctx, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(compiled, eager)
    torch.testing.assert_close(compiled_logp, eager_logp, atol=1e-5, rtol=1e-5)
    assert custom_op_calls(graphs) > 0
