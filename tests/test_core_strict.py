"""agents/core.py against reference loops on the cases that mutation testing found untested (issue 20).

Masks, constant tensors, gamma < 1, length-1 responses, entropy on random logits at T != 1.
"""

import math

import numpy as np
import pytest
import torch

from agents.core import (
    compute_gae,
    entropy_from_logits,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    ppo_loss,
    whiten,
)


def test_masked_mean_and_var_use_only_the_masked_entries():
    x = torch.tensor([[1.0, 2.0, 30.0], [4.0, -5.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    kept = np.array([1.0, 2.0, 4.0, -5.0])
    assert masked_mean(x, mask).item() == pytest.approx(kept.mean())
    assert masked_var(x, mask).item() == pytest.approx(kept.var())  # biased, like tf.nn.moments
    assert masked_mean(x).item() == pytest.approx(x.numpy().mean())
    assert masked_var(x).item() == pytest.approx(x.numpy().var(), rel=1e-6)
    # one kept entry: its value; no kept entry: 0 (the denominator is clamped at 1, never nan)
    one = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert masked_mean(x, one).item() == 30.0
    assert masked_mean(x, torch.zeros_like(x)).item() == 0.0


def test_whiten_of_a_constant_is_finite_and_masked_whitening_uses_masked_moments():
    c = torch.full((2, 3), 5.0)
    assert torch.equal(whiten(c), torch.zeros(2, 3))  # eps keeps 0/0 away
    assert torch.equal(whiten(c, shift_mean=False), c)
    x = torch.tensor([[1.0, 2.0, 30.0], [4.0, -5.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    kept = np.array([1.0, 2.0, 4.0, -5.0])
    mu, var = kept.mean(), kept.var()
    ref = (x.numpy() - mu) / np.sqrt(var + 1e-8)
    np.testing.assert_allclose(whiten(x, mask=mask).numpy(), ref, rtol=1e-5)
    np.testing.assert_allclose(whiten(x, shift_mean=False, mask=mask).numpy(), ref + mu, rtol=1e-5)
    # eps is added to the variance, not the standard deviation: visible on a small variance
    s = torch.tensor([0.0, 1e-4])
    expected = (np.array([0.0, 1e-4]) - 5e-5) / np.sqrt(2.5e-9 + 1e-8)
    np.testing.assert_allclose(whiten(s).numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(
        whiten(s, eps=0.5).numpy(), (s.numpy() - 5e-5) / np.sqrt(2.5e-9 + 0.5), rtol=1e-4
    )


def gae_loop(r, v, gamma, lam):
    B, L = r.shape
    adv = np.zeros((B, L))
    for b in range(B):
        last = 0.0
        for t in reversed(range(L)):
            nv = v[b, t + 1] if t + 1 < L else 0.0
            delta = r[b, t] + gamma * nv - v[b, t]
            last = delta + gamma * lam * last
            adv[b, t] = last
    return adv


@pytest.mark.parametrize("gamma, lam", [(0.9, 0.95), (0.5, 0.8), (0.99, 1.0)])
@pytest.mark.parametrize("length", [1, 2, 6, 300])  # 300: past CPython's small-int cache (`is` vs `<`)
def test_gae_with_gamma_below_one_and_short_responses_matches_a_loop(gamma, lam, length):
    g = torch.Generator().manual_seed(length)
    r, v = (
        torch.randn(3, length, generator=g, dtype=torch.float64),
        torch.randn(3, length, generator=g, dtype=torch.float64),
    )
    adv, ret = compute_gae(r, v, gamma=gamma, lam=lam)
    ref = gae_loop(r.numpy(), v.numpy(), gamma, lam)
    np.testing.assert_allclose(adv.numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ret.numpy(), ref + v.numpy(), rtol=1e-10, atol=1e-12)


def test_gae_refuses_shapes_that_differ_either_way():
    r = torch.zeros(2, 4)
    for values in (torch.zeros(2, 3), torch.zeros(2, 5), torch.zeros(3, 4), torch.zeros(1, 4)):
        with pytest.raises(ValueError, match=r"rewards \(2, 4\) and values .* must have the same shape"):
            compute_gae(r, values)


def test_gae_defaults_are_gamma_1_and_lam_095():
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.2, 0.1]])
    adv, _ = compute_gae(r, v)
    np.testing.assert_allclose(adv.numpy(), gae_loop(r.numpy(), v.numpy(), 1.0, 0.95), rtol=1e-6)


def ppo_reference(lp, old, adv, val, old_val, ret, cliprange, cliprange_value, vf_coef, mask):
    m = mask.numpy()
    lp, old, adv, val, old_val, ret = (
        t.numpy().astype(np.float64) for t in (lp, old, adv, val, old_val, ret)
    )
    ratio = np.exp(lp - old)
    p1, p2 = -adv * ratio, -adv * np.clip(ratio, 1 - cliprange, 1 + cliprange)
    vc = old_val + np.clip(val - old_val, -cliprange_value, cliprange_value)
    v1, v2 = (val - ret) ** 2, (vc - ret) ** 2

    def mm(a):
        return (a * m).sum() / max(m.sum(), 1)

    pg, vf = mm(np.maximum(p1, p2)), 0.5 * mm(np.maximum(v1, v2))
    return {
        "loss": pg + vf_coef * vf,
        "pg_loss": pg,
        "vf_loss": vf,
        "pg_clipfrac": mm((p2 > p1).astype(float)),
        "vf_clipfrac": mm((v2 > v1).astype(float)),
        "approxkl": 0.5 * mm((lp - old) ** 2),
    }


def test_ppo_loss_with_a_mask_and_non_default_clipranges_matches_numpy():
    g = torch.Generator().manual_seed(3)
    lp, old = torch.randn(3, 5, generator=g) * 0.5, torch.randn(3, 5, generator=g) * 0.5
    adv, val, old_val, ret = (torch.randn(3, 5, generator=g) for _ in range(4))
    mask = (torch.rand(3, 5, generator=g) > 0.4).float()
    out = ppo_loss(
        lp, old, adv, val, old_val, ret, cliprange=0.1, cliprange_value=0.3, vf_coef=0.7, mask=mask
    )
    ref = ppo_reference(lp, old, adv, val, old_val, ret, 0.1, 0.3, 0.7, mask)
    for key, value in ref.items():
        assert getattr(out, key).item() == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert 0 < ref["pg_clipfrac"] < 1 and 0 < ref["vf_clipfrac"] < 1  # both branches are exercised
    # the defaults: cliprange 0.2, cliprange_value 0.2, vf_coef 0.1, no mask
    out = ppo_loss(lp, old, adv, val, old_val, ret)
    ref = ppo_reference(lp, old, adv, val, old_val, ret, 0.2, 0.2, 0.1, torch.ones(3, 5))
    for key, value in ref.items():
        assert getattr(out, key).item() == pytest.approx(value, rel=1e-5, abs=1e-6), key
    torch.testing.assert_close(out.ratio, torch.exp(lp - old))


def test_entropy_and_logprobs_on_random_logits_at_a_temperature():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 7, generator=g) * 3
    for temperature in (0.5, 1.0, 1.7):
        logp = torch.log_softmax(logits.double() / temperature, dim=-1)
        ref = -(logp.exp() * logp).sum(-1)
        ent = entropy_from_logits(logits, temperature=temperature)
        assert ent.shape == (2, 3)
        np.testing.assert_allclose(ent.numpy(), ref.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        entropy_from_logits(logits).numpy(), entropy_from_logits(logits, temperature=1.0).numpy()
    )
    tokens = torch.randint(0, 7, (2, 3), generator=g)
    lp = logprobs_from_logits(logits, tokens)  # default T = 1
    ref = torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]
    torch.testing.assert_close(lp, ref)
    # half-precision logits are upcast before the softmax
    assert logprobs_from_logits(logits.half(), tokens).dtype == torch.float32
    assert entropy_from_logits(logits.half()).dtype == torch.float32
    assert math.isclose(
        entropy_from_logits(torch.zeros(1, 4), temperature=0.3).item(), math.log(4), rel_tol=1e-6
    )
