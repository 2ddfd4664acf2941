"""rewards/losses.py and rewards/optim.py beyond one step and one-element batches (issue 20)."""

import copy
import math

import numpy as np
import pytest
import torch

from rewards.losses import best_of_n_loss, pairwise_loss, scalar_compare_loss, scalar_rating_loss
from rewards.optim import AdamTF, linear_decay, make_optimizer


def test_best_of_n_on_a_batch_against_a_hand_computation():
    r = torch.tensor([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]])
    best = torch.tensor([2, 0])
    ref = np.mean(
        [-(2.0 - np.log(np.exp([0.0, 1.0, 2.0]).sum())), -(3.0 - np.log(np.exp([3.0, -1.0, 0.5]).sum()))]
    )
    assert best_of_n_loss(r, best).item() == pytest.approx(ref, rel=1e-6)
    # the first and the last index are valid
    assert best_of_n_loss(r, torch.tensor([0, 2])).item() > 0


@pytest.mark.parametrize(
    "rewards, best, match",
    [
        (torch.zeros(3), torch.tensor([0, 1, 2]), "must be"),  # rank 1 rewards, matching best
        (torch.zeros(2, 3, 1), torch.tensor([0, 1]), "must be"),  # rank 3 rewards
        (torch.zeros(2, 3), torch.tensor([0, 1, 2]), "must be"),  # best of the wrong length
        (torch.zeros(2, 3), torch.tensor([[0], [1]]), "must be"),  # best of the wrong rank
        (torch.zeros(2, 3), torch.tensor([0, -1]), r"best indices \[0, -1\] must lie in \[0, 3\)"),
        (torch.zeros(2, 3), torch.tensor([3, 0]), r"best indices \[3, 0\]"),
        (torch.zeros(2, 3), torch.tensor([4, 0]), r"best indices \[4, 0\]"),  # past N, not only at N
        (torch.zeros(2, 3), torch.tensor([0]), r"best \(B,\), got \(2, 3\) and \(1,\)"),  # too short
    ],
)
def test_best_of_n_rejects_one_bad_condition_at_a_time(rewards, best, match):
    with pytest.raises(ValueError, match=match):
        best_of_n_loss(rewards, best)


def test_pairwise_and_scalar_losses_on_batches():
    c, r = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.0, 0.5, 2.0])
    ref = np.mean([np.log1p(np.exp(-d)) for d in (1.0, -1.0, 0.0)])
    assert pairwise_loss(c, r).item() == pytest.approx(ref, rel=1e-6)
    assert scalar_rating_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 5.0])).item() == pytest.approx(5.0)
    # difference = r1 - r0: (1 - (3 - 1))^2 = 1, (0 - (0 - 2))^2 = 4
    loss = scalar_compare_loss(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(2.5)
    # one pair where the square is not the same as adding 2: (4 - (1 - 0))^2 = 9
    assert scalar_compare_loss(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([4.0])).item() == 9.0


def tf_adam_reference(grads, lr, b1, b2, eps):
    """theta after each step of TF1's Adam, from the closed form."""
    theta, m, v, out = np.zeros_like(grads[0]), np.zeros_like(grads[0]), np.zeros_like(grads[0]), []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        theta = theta - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
        out.append(theta.copy())
    return out


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("lr, betas, eps", [(1e-3, (0.9, 0.999), 1e-5), (0.05, (0.5, 0.8), 1e-3)])
def test_tf_adam_matches_the_closed_form_at_every_step(lr, betas, eps, fused):
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=4) * s for s in (1.0, 0.1, 3.0, 0.5, 1e-3, 2.0)]
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = AdamTF([p], lr=lr, betas=betas, eps=eps, fused=fused)
    for step, (g, ref) in enumerate(zip(grads, tf_adam_reference(grads, lr, *betas, eps), strict=True), 1):
        p.grad = torch.tensor(g)
        assert opt.step() is None
        np.testing.assert_allclose(p.detach().numpy(), ref, rtol=1e-10, atol=1e-14, err_msg=f"step {step}")
        assert opt.state[p]["step"] == step


def test_fused_tf_adam_equals_the_loop_within_float_rounding_and_shares_its_state():
    """``fused=True`` (PyTorch's kernel with epsilon ``eps / sqrt(1 - beta2^t)``) against the per-tensor
    loop, float32, over steps where one tensor sits some out (so the group holds two step counts), and a
    state written by either continues in the other."""
    torch.manual_seed(0)
    shapes = [(7, 5), (5,), (3, 2, 4)]
    loop = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    fused = [torch.nn.Parameter(p.detach().clone()) for p in loop]
    a, b = AdamTF(loop, lr=1e-2, eps=1e-5), AdamTF(fused, lr=1e-2, eps=1e-5, fused=True)
    for step in range(12):
        for i, (p, q) in enumerate(zip(loop, fused)):
            if i == 1 and step % 3 == 0:  # no gradient: this tensor's step count falls behind
                p.grad = q.grad = None
                continue
            g = torch.randn(p.shape) * 10.0 ** (step % 4 - 2)
            p.grad, q.grad = g.clone(), g.clone()
        a.step(), b.step()
        for p, q in zip(loop, fused):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    steps = [int(b.state[q]["step"]) for q in fused]
    assert steps == [int(a.state[p]["step"]) for p in loop] == [12, 8, 12]
    assert all(torch.is_tensor(b.state[q]["step"]) for q in fused)
    # the moments and step counts move between the two paths
    a2, b2 = AdamTF(loop, lr=1e-2, fused=True), AdamTF(fused, lr=1e-2, fused=False)
    a2.load_state_dict(a.state_dict()), b2.load_state_dict(b.state_dict())
    for p, q in zip(loop, fused):
        g = torch.randn(p.shape)
        p.grad, q.grad = g.clone(), g.clone()
    a2.step(), b2.step()
    for p, q in zip(loop, fused):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    assert (
        [int(a2.state[p]["step"]) for p in loop] == [int(b2.state[q]["step"]) for q in fused] == [13, 9, 13]
    )


def test_tf_adam_defaults_and_make_optimizer():
    p = torch.nn.Parameter(torch.zeros(2))
    assert AdamTF([p]).defaults == {"lr": 1e-5, "betas": (0.9, 0.999), "eps": 1e-5}
    opt = make_optimizer([p], lr=0.3)
    assert type(opt) is AdamTF and opt.defaults["lr"] == 0.3 and opt.defaults["eps"] == 1e-5
    opt = make_optimizer([p], lr=0.3, eps=1e-7)
    assert opt.defaults["eps"] == 1e-7 and opt.fused is False
    assert make_optimizer([p], lr=0.3, fused=True).fused is True
    t = make_optimizer([p], lr=0.2, kind="torch_adam", eps=1e-6)
    assert type(t) is torch.optim.Adam and t.defaults["lr"] == 0.2 and t.defaults["eps"] == 1e-6
    for kind in ("sgd", "torch_adamw", "zz"):  # names sorting before and after the valid ones
        with pytest.raises(ValueError, match=f"Unknown optimizer '{kind}'"):
            make_optimizer([p], lr=0.1, kind=kind)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=-1e-3),
        dict(eps=-1e-8),
        dict(betas=(-0.1, 0.999)),
        dict(betas=(1.0, 0.999)),
        dict(betas=(0.9, -0.1)),
        dict(betas=(0.9, 1.0)),
    ],
)
def test_tf_adam_rejects_each_bad_setting(kwargs):
    with pytest.raises(ValueError, match="invalid AdamTF settings"):
        AdamTF([torch.nn.Parameter(torch.zeros(1))], **kwargs)


def test_tf_adam_accepts_the_boundary_settings():
    p = torch.nn.Parameter(torch.ones(1))
    opt = AdamTF([p], lr=0.0, betas=(0.0, 0.0), eps=0.0)
    p.grad = torch.tensor([2.0])
    opt.step()
    assert p.item() == 1.0  # lr = 0 moves nothing


def test_tf_adam_closure_and_a_parameter_without_a_gradient():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = AdamTF([a, b], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (b * torch.tensor([1.0, -2.0])).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx(-1.0)
    assert a.grad is None and torch.equal(a.detach(), torch.ones(2)) and a not in opt.state
    ref = tf_adam_reference([np.array([1.0, -2.0])], 0.1, 0.9, 0.999, 1e-5)[0]
    np.testing.assert_allclose(b.detach().numpy(), 1.0 + ref, rtol=1e-6)
    assert not b.requires_grad or b.grad_fn is None  # the update itself is not recorded


def test_linear_decay_boundaries():
    assert linear_decay(2.0, 1, 4) == 1.5
    assert linear_decay(2.0, 0, 1) == 2.0 and linear_decay(2.0, 1, 1) == 0.0
    assert linear_decay(2.0, 9, 4) == 0.0  # never negative
    for total in (0, -3):
        with pytest.raises(ValueError, match=f"total must be > 0, got {total}"):
            linear_decay(1.0, 0, total)


@pytest.mark.parametrize(
    "betas", [(1.5, 0.999), (0.9, 1.5), (1.0, 0.999), (0.9, 1.0), (-0.1, 0.9), (0.9, -0.1)]
)
def test_adamtf_refuses_each_beta_out_of_range(betas):
    with pytest.raises(ValueError, match=r"invalid AdamTF settings lr=1e-05, betas=\("):
        AdamTF([torch.zeros(1, requires_grad=True)], betas=betas)


def test_make_optimizer_kind_read_from_a_config_is_compared_by_value():
    p = [torch.zeros(1, requires_grad=True)]
    # built at run time, as a TOML value is: not the interned literal
    assert type(make_optimizer(p, 1e-3, kind="".join(["tf_", "adam"]))) is AdamTF
    assert type(make_optimizer(p, 1e-3, kind="".join(["torch_", "adam"]))) is torch.optim.Adam


@pytest.mark.parametrize("fused", [False, True])
def test_tf_adam_reloading_an_earlier_state_continues_from_its_step_count(fused):
    """The step counts are kept on the host between steps; loading a state resets them from the state."""
    p = torch.nn.Parameter(torch.zeros(3))
    opt = AdamTF([p], lr=0.1, fused=fused)
    for _ in range(3):
        p.grad = torch.ones(3)
        opt.step()
    saved = copy.deepcopy(opt.state_dict())
    for _ in range(2):
        p.grad = torch.ones(3)
        opt.step()
    assert int(opt.state[p]["step"]) == 5
    opt.load_state_dict(saved)
    p.grad = torch.ones(3)
    opt.step()
    assert int(opt.state[p]["step"]) == 4
