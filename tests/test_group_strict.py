"""agents/grpo.py and agents/rloo.py: defaults pinned, config checks one condition at a time, metric values
and the KL placement (issue 20: tests that kill every non-equivalent mutant)."""

import math
from types import SimpleNamespace

import pytest
import torch

from agents.grpo import GRPOAgent, GRPOConfig, group_relative_advantages, grpo_loss
from agents.rloo import RLOOAgent, RLOOConfig, rloo_loss


@pytest.mark.parametrize("cls", [GRPOConfig, RLOOConfig])
def test_group_defaults_are_pinned(cls):
    c = cls()
    assert (c.epochs, c.k, c.cliprange, c.batch_size, c.minibatches) == (1, 4, 0.2, 512, 1)
    if cls is GRPOConfig:
        assert c.kl_in == "reward" and c.scale_rewards is True
    else:
        assert c.normalize_advantages is False


@pytest.mark.parametrize("cls", [GRPOConfig, RLOOConfig])
def test_group_smallest_settings_are_accepted_and_one_below_refused(cls):
    c = cls(batch_size=6, k=2, epochs=1, cliprange=1e-6, minibatches=3)  # 3 prompts in 3 minibatches
    assert (c.epochs, c.k, c.minibatches) == (1, 2, 3)
    assert cls(batch_size=8, k=8).k == 8  # batch_size == k: one prompt
    for bad in (dict(epochs=0, k=2), dict(k=1), dict(cliprange=0.0, k=2)):
        with pytest.raises(ValueError):
            cls(batch_size=8, **bad)


@pytest.mark.parametrize("cls", [GRPOConfig, RLOOConfig])
def test_group_batch_must_split_into_prompts_and_minibatches(cls):
    with pytest.raises(ValueError, match="batch_size=10"):
        cls(batch_size=10, k=4)  # not prompts x k
    # 3 prompts do not split into 2 minibatches (though 12 episodes and 12 x 4 would)
    message = "the 3 queries per batch must divide" if cls is RLOOConfig else "minibatches=2"
    with pytest.raises(ValueError, match=message):
        cls(batch_size=12, k=4, minibatches=2)
    assert cls(batch_size=12, k=4, minibatches=3).minibatches == 3


def test_grpo_loss_metrics_by_hand():
    lp = torch.tensor([[0.0, -0.5], [-1.0, -1.0]])
    old = torch.tensor([[-0.1, -0.5], [-0.5, -1.2]])
    adv = torch.tensor([1.0, -2.0])
    loss, m = grpo_loss(lp, old, old, adv, cliprange=0.2, kl_coef=0.0)
    log_ratio = lp - old
    assert float(m["policy/approxkl"]) == pytest.approx(float(0.5 * (log_ratio**2).mean()))
    assert float(m["policy/approxkl"]) > 0
    assert float(m["policy/clipfrac"]) == pytest.approx(0.5)  # |ratio - 1| > 0.2 at 2 of 4 tokens
    assert float(m["kl_loss"]) == 0.0
    _, with_kl = grpo_loss(lp, old, old - 0.3, adv, cliprange=0.2, kl_coef=0.5)
    k3 = torch.expm1(-0.3 - log_ratio) - (-0.3 - log_ratio)  # ref - lp = (old - 0.3) - lp
    assert float(with_kl["kl_loss"]) == pytest.approx(float(0.5 * k3.mean()), rel=1e-6)


def test_rloo_loss_metrics_by_hand():
    lp = torch.tensor([[0.0, -0.5], [-1.0, -1.0]])
    old = torch.tensor([[-0.1, -0.5], [-0.5, -1.2]])
    loss, clipfrac, approxkl = rloo_loss(lp, old, torch.tensor([1.0, -2.0]), cliprange=0.2)
    assert float(approxkl) == pytest.approx(float(0.5 * ((lp - old) ** 2).mean()))
    assert float(clipfrac) == pytest.approx(0.5)


@pytest.mark.parametrize("kl_in", ["reward", "loss"])
def test_grpo_puts_the_kl_where_configured(kl_in):
    kl_in = "".join(kl_in)  # a copy built at run time, as a TOML value is: compared by value
    config = GRPOConfig(batch_size=2, k=2, kl_in=kl_in)
    agent = SimpleNamespace(config=config, kl_ctl=SimpleNamespace(value=0.5))
    lp = torch.tensor([[-1.0, -1.0], [-1.0, -1.0]])
    batch = SimpleNamespace(logprobs=lp, ref_logprobs=lp - 0.4, advantages=torch.tensor([1.0, -1.0]))
    _, m = GRPOAgent.minibatch_loss(agent, SimpleNamespace(logprobs=lp), batch, torch.arange(2))
    k3 = torch.expm1(torch.tensor(-0.4)) + 0.4
    assert float(m["kl_loss"]) == (pytest.approx(0.5 * float(k3)) if kl_in == "loss" else 0.0)
    scores = torch.tensor([1.0, 2.0])
    samples = SimpleNamespace(scores=scores)
    if kl_in == "loss":  # the sequence reward is the score alone
        assert GRPOAgent.sequence_rewards(agent, samples) is scores


def test_rloo_minibatch_loss_reports_its_metrics():
    agent = SimpleNamespace(config=RLOOConfig(batch_size=2, k=2, cliprange=0.2))
    lp = torch.tensor([[0.0, -0.5], [-1.0, -1.0]])
    old = torch.tensor([[-0.1, -0.5], [-0.5, -1.2]])
    batch = SimpleNamespace(logprobs=old, advantages=torch.tensor([1.0, -2.0]))
    loss, m = RLOOAgent.minibatch_loss(agent, SimpleNamespace(logprobs=lp), batch, torch.arange(2))
    ref_loss, clipfrac, approxkl = rloo_loss(lp, old, torch.tensor([1.0, -2.0]), 0.2)
    assert float(loss) == float(ref_loss) and set(m) == {"policy/clipfrac", "policy/approxkl"}
    assert float(m["policy/clipfrac"]) == float(clipfrac) and float(m["policy/approxkl"]) == float(approxkl)


def test_group_relative_advantages_scale_by_default():
    r = torch.tensor([1.0, 3.0, 0.0, 4.0])
    scaled = group_relative_advantages(r, 2)
    assert scaled.tolist() == group_relative_advantages(r, 2, scale=True).tolist()
    assert scaled.tolist() != group_relative_advantages(r, 2, scale=False).tolist()


def clipped_loop(lp, old, adv, cliprange):
    """Per token max(-A r, -A clip(r, 1 - eps, 1 + eps)), as a plain loop: (B, L) nested lists."""
    out = []
    for b in range(len(lp)):
        row = []
        for t in range(len(lp[b])):
            r = math.exp(lp[b][t] - old[b][t])
            clipped = min(max(r, 1 - cliprange), 1 + cliprange)
            row.append(max(-adv[b] * r, -adv[b] * clipped))
        out.append(row)
    return out


def test_rloo_and_grpo_losses_clip_both_ways_like_a_loop():
    # ratios 0.5, 0.9, 1.1, 1.6 against advantages of both signs: every branch of the clip is taken
    old = [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    lp = [[math.log(0.5), math.log(0.9), math.log(1.1), math.log(1.6)]] * 2
    adv = [1.5, -0.5]
    ref = clipped_loop(lp, old, adv, 0.2)
    t = torch.tensor
    loss, clipfrac, _ = rloo_loss(t(lp), t(old), t(adv), 0.2)
    assert float(loss) == pytest.approx(sum(sum(r) for r in ref) / 2, rel=1e-6)  # summed over tokens
    assert float(clipfrac) == pytest.approx(0.5)
    g_loss, m = grpo_loss(t(lp), t(old), t(old), t(adv), 0.2)
    assert float(g_loss) == pytest.approx(sum(sum(r) / 4 for r in ref) / 2, rel=1e-6)  # averaged over tokens
    assert float(m["policy/clipfrac"]) == pytest.approx(0.5)


def test_a_ratio_exactly_on_the_clip_boundary_is_not_counted_as_clipped():
    lp = torch.zeros(1, 3)
    _, clipfrac, _ = rloo_loss(lp, lp, torch.ones(1), cliprange=0.0)  # ratio 1: |r - 1| = 0, not > 0
    _, m = grpo_loss(lp, lp, lp, torch.ones(1), cliprange=0.0)
    assert float(clipfrac) == 0.0 and float(m["policy/clipfrac"]) == 0.0


def test_grpo_sums_the_kl_into_the_reward_only_in_reward_mode():
    lp = torch.tensor([[-1.0, -1.0], [-2.0, -1.0]])
    samples = SimpleNamespace(scores=torch.tensor([1.0, 2.0]), logprobs=lp, ref_logprobs=lp - 0.25)
    for kl_in, expected in (("reward", [1.0 - 0.5 * 0.5, 2.0 - 0.5 * 0.5]), ("loss", [1.0, 2.0])):
        agent = object.__new__(GRPOAgent)
        agent.config, agent.kl_ctl = GRPOConfig(batch_size=2, k=2, kl_in=kl_in), SimpleNamespace(value=0.5)
        assert agent.sequence_rewards(samples).tolist() == pytest.approx(expected)


def test_rloo_normalizes_advantages_only_when_asked():
    r = torch.tensor([1.0, 3.0, 0.0, 4.0])
    for normalize in (False, True):
        agent = object.__new__(RLOOAgent)
        agent.config = RLOOConfig(batch_size=4, k=2, normalize_advantages=normalize)
        plain = torch.tensor([-2.0, 2.0, -4.0, 4.0])  # R_i - R_j within each pair of 2
        expected = plain / plain.std(unbiased=False) if normalize else plain
        assert agent.advantages(r).tolist() == pytest.approx(expected.tolist(), rel=1e-4)
