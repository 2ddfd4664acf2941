"""Pure reward-side math against hand-computed values and plain loops (PAPER.md must-haves 7, 13, 14, 22)."""

import math

import numpy as np
import pytest
import torch

from rewards.losses import best_of_n_loss, pairwise_loss, scalar_compare_loss, scalar_rating_loss
from rewards.optim import AdamTF, linear_decay, make_optimizer
from textenv.kl import AdaptiveKLController, FixedKLController, kl_per_token, shaped_rewards


def test_best_of_4_loss_paper_example():
    loss = best_of_n_loss(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([3]))
    assert loss.item() == pytest.approx(0.4402, abs=1e-4)
    # batch mean of -log softmax, against a loop
    r = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    b = torch.tensor([0, 3, 1, 2, 2])
    expected = np.mean([-(r[i, b[i]] - torch.logsumexp(r[i], 0)).item() for i in range(5)])
    assert best_of_n_loss(r, b).item() == pytest.approx(expected, rel=1e-6)


def test_pairwise_equals_best_of_two():
    chosen, rejected = torch.tensor([0.3, -1.0]), torch.tensor([0.1, 2.0])
    pair = pairwise_loss(chosen, rejected)
    bo2 = best_of_n_loss(torch.stack([chosen, rejected], 1), torch.tensor([0, 0]))
    assert pair.item() == pytest.approx(bo2.item(), rel=1e-6)
    assert pair.item() == pytest.approx(
        np.mean([math.log1p(math.exp(-0.2)), math.log1p(math.exp(3.0))]), rel=1e-6
    )


def test_scalar_losses_hand_values():
    assert scalar_rating_loss(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 0.0])).item() == pytest.approx(
        (1 + 4) / 2
    )
    # difference - (r1 - r0): (1 - (3 - 1))^2 = 1, (0 - (0 - 2))^2 = 4
    loss = scalar_compare_loss(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(2.5)


def test_best_of_n_rejects_bad_input():
    with pytest.raises(ValueError, match=r"best indices \[4\]"):
        best_of_n_loss(torch.zeros(1, 4), torch.tensor([4]))
    with pytest.raises(ValueError, match="must be"):
        best_of_n_loss(torch.zeros(4), torch.tensor([0]))


def test_kl_estimators_against_loops():
    g = torch.Generator().manual_seed(1)
    lp, ref = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    k1 = kl_per_token(lp, ref, "k1")
    k3 = kl_per_token(lp, ref, "k3")
    for i in range(3):
        for t in range(5):
            assert k1[i, t].item() == pytest.approx((lp[i, t] - ref[i, t]).item(), rel=1e-6)
            r = math.exp(ref[i, t].item() - lp[i, t].item())
            assert k3[i, t].item() == pytest.approx(r - 1 - math.log(r), rel=1e-5, abs=1e-6)
    assert (k3 >= 0).all()
    with pytest.raises(ValueError, match="Unknown KL estimator 'k2'"):
        kl_per_token(lp, ref, "k2")


def test_shaped_rewards_must_have_13():
    g = torch.Generator().manual_seed(2)
    lp, ref = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    scores, beta = torch.tensor([1.0, -1.0, 0.5, 2.0]), 0.15
    rewards, non_score = shaped_rewards(scores, lp, ref, beta)
    torch.testing.assert_close(rewards.sum(1), scores - beta * (lp - ref).sum(1))
    torch.testing.assert_close(rewards[:, :-1], -beta * (lp - ref)[:, :-1])
    torch.testing.assert_close(rewards[:, -1], -beta * (lp - ref)[:, -1] + scores)
    torch.testing.assert_close(non_score, -beta * (lp - ref))
    with pytest.raises(ValueError, match="scores must be"):
        shaped_rewards(torch.zeros(3), lp, ref, beta)


def test_adaptive_kl_controller_must_have_14():
    c = AdaptiveKLController(0.15, target=6.0, horizon=10_000)
    assert c.update(12.0, 512) == pytest.approx(0.151536)
    c2 = AdaptiveKLController(0.15, target=6.0)
    assert c2.update(6.0, 512) == pytest.approx(0.15)
    c3 = AdaptiveKLController(0.15, target=6.0)
    assert c3.update(0.0, 512) == pytest.approx(0.15 * (1 - 0.2 * 512 / 10_000))  # error clipped at -0.2
    paper = AdaptiveKLController(0.15, target=6.0, form="paper")
    assert paper.update(12.0, 512) == pytest.approx(0.15 * 1.02)
    state = c.state_dict()
    fresh = AdaptiveKLController(1.0, target=1.0)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    with pytest.raises(ValueError, match="form must be"):
        AdaptiveKLController(0.1, 6.0, form="pid")


def test_fixed_kl_controller():
    c = FixedKLController(0.03)
    assert c.update(100.0, 512) == 0.03
    c.load_state_dict({"value": 0.01})
    assert c.value == 0.01 and c.state_dict() == {"type": "fixed", "value": 0.01}
    with pytest.raises(ValueError):
        FixedKLController(-1)


def test_tf_adam_first_step_matches_formula_and_differs_from_torch():
    lr, eps, b1, b2 = 1e-3, 1e-5, 0.9, 0.999
    g = torch.tensor([0.5, -2.0, 1e-4])
    p_tf = torch.nn.Parameter(torch.zeros(3))
    opt = AdamTF([p_tf], lr=lr, eps=eps)
    p_tf.grad = g.clone()
    opt.step()
    m, v = (1 - b1) * g, (1 - b2) * g * g
    expected = -lr * math.sqrt(1 - b2) / (1 - b1) * m / (v.sqrt() + eps)
    torch.testing.assert_close(p_tf.data, expected)
    p_pt = torch.nn.Parameter(torch.zeros(3))
    opt2 = make_optimizer([p_pt], lr=lr, kind="torch_adam", eps=eps)
    p_pt.grad = g.clone()
    opt2.step()
    # torch: -lr * m_hat / (sqrt(v_hat) + eps), m_hat = g, sqrt(v_hat) = |g|
    torch.testing.assert_close(p_pt.data, -lr * g / (g.abs() + eps))
    # for the tiny gradient the effective epsilons differ most: TF's update is much smaller
    assert abs(p_tf.data[2]) < abs(p_pt.data[2]) / 3
    with pytest.raises(ValueError, match="Unknown optimizer"):
        make_optimizer([p_pt], lr=1.0, kind="sgd")


def test_linear_decay():
    assert linear_decay(1.0, 0, 10) == 1.0
    assert linear_decay(1.0, 5, 10) == 0.5
    assert linear_decay(1.0, 10, 10) == 0.0
