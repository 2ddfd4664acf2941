"""PPO math against plain reference loops (PAPER.md must-haves 2, 16-19)."""

import math

import numpy as np
import pytest
import torch

from agents.core import compute_gae, entropy_from_logits, logprobs_from_logits, ppo_loss, whiten


def test_whiten_uses_biased_variance_and_shift_mean():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 7.0], [0.5, -1.0, 2.0]])
    arr = x.numpy().astype(np.float64)
    ref = (arr - arr.mean()) / np.sqrt(arr.var() + 1e-8)  # numpy var is biased, like tf.nn.moments
    np.testing.assert_allclose(whiten(x).numpy(), ref, rtol=1e-5)
    w = whiten(x, shift_mean=False)
    assert w.mean().item() == pytest.approx(x.mean().item(), rel=1e-5)
    assert w.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-4)


def test_gae_matches_reference_loop():
    g = torch.Generator().manual_seed(0)
    r, v = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    adv, ret = compute_gae(r, v, gamma=1.0, lam=0.95)
    for b in range(4):
        last = 0.0
        for t in reversed(range(7)):
            nv = v[b, t + 1].item() if t < 6 else 0.0
            delta = r[b, t].item() + nv - v[b, t].item()
            last = delta + 0.95 * last
            assert adv[b, t].item() == pytest.approx(last, rel=1e-5, abs=1e-5)
    torch.testing.assert_close(ret, adv + v)
    with pytest.raises(ValueError, match="same shape"):
        compute_gae(r, v[:, :3])


def test_ppo_loss_on_a_hand_computed_2x3_batch():
    lp = torch.tensor([[-1.0, -0.5, -2.0], [-0.1, -3.0, -1.0]])
    old = torch.tensor([[-1.0, -1.0, -1.5], [-0.5, -3.0, -1.2]])
    adv = torch.tensor([[1.0, -1.0, 0.5], [2.0, 0.0, -0.5]])
    val = torch.tensor([[0.5, 0.1, -0.3], [1.0, 0.0, 0.6]])
    old_val = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.5, 0.2]])
    ret = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    out = ppo_loss(lp, old, adv, val, old_val, ret)
    pg, vf, pgc, vfc, kl = [], [], [], [], []
    for i in range(2):
        for j in range(3):
            ratio = math.exp(lp[i, j] - old[i, j])
            a = adv[i, j].item()
            p1, p2 = -a * ratio, -a * min(max(ratio, 0.8), 1.2)
            pg.append(max(p1, p2))
            pgc.append(float(p2 > p1))
            vc = old_val[i, j].item() + min(max(val[i, j].item() - old_val[i, j].item(), -0.2), 0.2)
            v1, v2 = (val[i, j].item() - ret[i, j].item()) ** 2, (vc - ret[i, j].item()) ** 2
            vf.append(max(v1, v2))
            vfc.append(float(v2 > v1))
            kl.append((lp[i, j] - old[i, j]).item() ** 2)
    assert out.pg_loss.item() == pytest.approx(np.mean(pg), abs=1e-6)
    assert out.vf_loss.item() == pytest.approx(0.5 * np.mean(vf), abs=1e-6)
    assert out.loss.item() == pytest.approx(np.mean(pg) + 0.1 * 0.5 * np.mean(vf), abs=1e-6)
    assert out.pg_clipfrac.item() == pytest.approx(np.mean(pgc))
    assert out.vf_clipfrac.item() == pytest.approx(np.mean(vfc))
    assert out.approxkl.item() == pytest.approx(0.5 * np.mean(kl), abs=1e-7)


def test_ratio_one_gives_zero_approxkl_and_no_clipping():
    lp = torch.randn(3, 4)
    out = ppo_loss(lp, lp.clone(), torch.randn(3, 4), torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 4))
    assert out.approxkl.item() == 0.0 and out.pg_clipfrac.item() == 0.0
    torch.testing.assert_close(out.ratio, torch.ones(3, 4))


def test_temperature_inside_logprobs():
    logits = torch.randn(2, 5, 11)
    tokens = torch.randint(0, 11, (2, 5))
    lp = logprobs_from_logits(logits, tokens, temperature=0.7)
    ref = torch.log_softmax(logits / 0.7, -1).gather(-1, tokens[..., None])[..., 0]
    torch.testing.assert_close(lp, ref)
    assert not torch.allclose(lp, logprobs_from_logits(logits, tokens, temperature=1.0))
    ent = entropy_from_logits(torch.zeros(1, 4))
    assert ent.item() == pytest.approx(math.log(4))
