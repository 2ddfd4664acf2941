"""textenv/kl.py: argument checks one condition at a time, controllers with non-default settings (issue 20)."""

import pytest
import torch

from textenv.kl import AdaptiveKLController, FixedKLController, kl_per_token, shaped_rewards


def test_kl_per_token_default_is_k1_and_shapes_must_match():
    lp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -0.5]])
    torch.testing.assert_close(kl_per_token(lp, ref), lp - ref)
    with pytest.raises(ValueError, match=r"logprobs \(1, 2\) and ref_logprobs \(1, 1\) differ"):
        kl_per_token(lp, ref[:, :1])
    with pytest.raises(ValueError, match="differ in shape"):  # the smaller one first, too
        kl_per_token(lp[:, :1], ref)
    # an estimator name built at run time (as read from a config file) is not an interned literal
    k3 = "".join(["k", "3"])
    torch.testing.assert_close(kl_per_token(lp, ref, k3), kl_per_token(lp, ref, "k3"))
    torch.testing.assert_close(kl_per_token(lp, ref, "".join(["k", "1"])), lp - ref)


def test_shaped_rewards_checks_each_condition_and_keeps_k3_and_dtype():
    lp, ref = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]]), torch.tensor([[-1.5, -0.5], [-0.5, -1.0]])
    with pytest.raises(ValueError, match="scores must be"):  # right batch size, wrong rank
        shaped_rewards(torch.zeros(2, 1), lp, ref, 0.1)
    with pytest.raises(ValueError, match=r"B = 2, got \(3,\)"):  # right rank, wrong batch size
        shaped_rewards(torch.zeros(3), lp, ref, 0.1)
    scores = torch.tensor([1, -2], dtype=torch.int64)
    rewards, non_score = shaped_rewards(scores, lp, ref, 0.5, estimator="k3")
    k3 = kl_per_token(lp, ref, "k3")
    torch.testing.assert_close(non_score, -0.5 * k3)
    torch.testing.assert_close(rewards[:, 0], -0.5 * k3[:, 0])
    torch.testing.assert_close(rewards[:, 1], -0.5 * k3[:, 1] + torch.tensor([1.0, -2.0]))
    assert rewards.dtype == torch.float32
    rewards, non_score = shaped_rewards(torch.tensor([3.0, 4.0]), lp, ref, 0.0)
    torch.testing.assert_close(rewards, torch.tensor([[0.0, 3.0], [0.0, 4.0]]))


def test_fixed_controller_accepts_zero_rejects_negative_and_round_trips():
    assert FixedKLController(0).update(5.0, 10) == 0.0
    with pytest.raises(ValueError, match=r"kl_coef must be >= 0, got -0\.01"):
        FixedKLController(-0.01)
    a = FixedKLController(0.2)
    b = FixedKLController(0.9)
    b.load_state_dict(a.state_dict())
    assert b.value == 0.2 and b.state_dict() == {"type": "fixed", "value": 0.2}
    assert isinstance(b.value, float) and isinstance(FixedKLController(1).value, float)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(init_kl_coef=0.0, target=6.0, horizon=10),
        dict(init_kl_coef=-1.0, target=6.0, horizon=10),
        dict(init_kl_coef=0.1, target=0.0, horizon=10),
        dict(init_kl_coef=0.1, target=-6.0, horizon=10),
        dict(init_kl_coef=0.1, target=6.0, horizon=0),
        dict(init_kl_coef=0.1, target=6.0, horizon=-5),
    ],
)
def test_adaptive_controller_rejects_each_non_positive_setting(kwargs):
    with pytest.raises(ValueError, match="must all be > 0"):
        AdaptiveKLController(**kwargs)


def test_adaptive_controller_defaults_and_smallest_valid_settings():
    c = AdaptiveKLController(1e-9, target=1e-9, horizon=1)
    assert c.value == 1e-9 and c.horizon == 1
    d = AdaptiveKLController(0.15, 6.0)
    assert d.state_dict() == {
        "type": "adaptive",
        "value": 0.15,
        "target": 6.0,
        "horizon": 10_000,
        "form": "horizon",
        "k_beta": 0.1,
    }
    with pytest.raises(ValueError, match="form must be 'horizon'"):
        AdaptiveKLController(0.1, 6.0, form="Paper")


def horizon_step(value, kl, target, n, horizon):
    return value * (1 + min(max(kl / target - 1, -0.2), 0.2) * n / horizon)


def test_adaptive_controller_error_is_proportional_inside_the_clip_and_clipped_outside():
    c = AdaptiveKLController(0.5, target=4.0, horizon=100)
    expected = 0.5
    for kl, n in [(4.4, 10), (3.8, 7), (100.0, 3), (0.0, 20), (4.8, 1), (3.2, 50)]:  # +-0.2 boundaries too
        expected = horizon_step(expected, kl, 4.0, n, 100)
        assert c.update(kl, n) == pytest.approx(expected, rel=1e-12)
        assert c.value == pytest.approx(expected, rel=1e-12)
    p = AdaptiveKLController(0.5, target=4.0, form="paper", k_beta=0.3)
    expected = 0.5
    for kl in (4.4, 3.8, 100.0, 0.0):
        expected *= 1 + 0.3 * min(max(kl / 4.0 - 1, -0.2), 0.2)
        assert p.update(kl, 999) == pytest.approx(expected, rel=1e-12)  # n_steps does not matter here


def test_adaptive_controller_state_round_trip_with_non_default_settings():
    a = AdaptiveKLController(0.3, target=2.5, horizon=700, form="paper", k_beta=0.25)
    a.update(5.0, 64)
    state = a.state_dict()
    assert state == {
        "type": "adaptive",
        "value": a.value,
        "target": 2.5,
        "horizon": 700,
        "form": "paper",
        "k_beta": 0.25,
    }
    b = AdaptiveKLController(1.0, target=9.0)  # every setting different
    b.load_state_dict(state)
    assert b.state_dict() == state
    for kl in (1.0, 2.6, 40.0):
        assert b.update(kl, 64) == a.update(kl, 64)
    h = AdaptiveKLController(0.3, target=2.5, horizon=700)
    h.update(3.0, 64)
    b.load_state_dict(h.state_dict())
    assert b.state_dict() == h.state_dict() and b.form == "horizon"
    assert b.update(2.7, 64) == h.update(2.7, 64)


@pytest.mark.parametrize("name", ["a", "k0", "k1 ", "k2", "k4", "z", "K1"])
def test_every_unknown_estimator_is_refused(name):
    # names on both sides of "k1" and "k3" in string order: a comparison that is not an equality fails here
    lp = torch.zeros(1, 2)
    with pytest.raises(ValueError, match=f"Unknown KL estimator {name!r}"):
        kl_per_token(lp, lp, name)


def test_shaped_rewards_score_checks_one_condition_at_a_time():
    lp = torch.zeros(2, 5)
    with pytest.raises(ValueError, match=r"scores must be \(B,\) with B = 2, got \(3,\)"):
        shaped_rewards(torch.zeros(3), lp, lp, 0.1)  # B differs from L too: the message names B
    with pytest.raises(ValueError, match=r"scores must be \(B,\) with B = 2, got \(\)"):
        shaped_rewards(torch.tensor(1.0), lp, lp, 0.1)  # a 0-dim score
    big = torch.zeros(300, 2)  # B past CPython's small-int cache: equal sizes that are not the same object
    rewards, _ = shaped_rewards(torch.ones(300), big, big, 0.1)
    assert rewards.shape == (300, 2) and float(rewards[:, -1].sum()) == 300.0


def test_adaptive_controller_form_read_from_a_config_is_compared_by_value():
    form = "".join(["hori", "zon"])  # built at run time, as a TOML value is: not the interned literal
    a = AdaptiveKLController(0.2, target=6.0, horizon=100, form=form)
    # n_steps = horizon: the horizon form moves beta by e = 0.2, the paper form by K_beta e = 0.02
    assert a.update(12.0, 100) == pytest.approx(0.2 * (1 + 0.2))
