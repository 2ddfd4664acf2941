"""GRPO: group-relative advantages and the loss against plain loops, both KL placements, the CLI choice
with exact resume, and learning a toy reward."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.config import ConfigError, load_config
from agents.grpo import GRPOConfig, group_relative_advantages, grpo_loss
from agents.train import train_policy
from tests.test_agents_ppo import PROMPTS, toy_agent


def test_group_relative_advantages_match_a_loop():
    rewards = torch.tensor([1.0, 2.0, 4.0, 7.0, -1.0, 0.0, 3.0, 3.0, 5.0, 5.0, 5.0, 5.0])
    for scale in (True, False):
        got = group_relative_advantages(rewards, 4, scale)
        for i in range(12):
            group = [float(rewards[j]) for j in range(i // 4 * 4, i // 4 * 4 + 4)]
            mean = sum(group) / 4
            std = math.sqrt(sum((x - mean) ** 2 for x in group) / 3)  # the sample std
            expected = (float(rewards[i]) - mean) / ((std + 1e-4) if scale else 1.0)
            assert float(got[i]) == pytest.approx(expected, rel=1e-5, abs=1e-6), (scale, i)
    assert torch.equal(group_relative_advantages(rewards, 4)[8:], torch.zeros(4))  # a tied group: no signal


def test_grpo_loss_matches_a_loop():
    gen = torch.Generator().manual_seed(0)
    old = -torch.rand(3, 5, generator=gen) * 2
    ref = -torch.rand(3, 5, generator=gen) * 2
    new = (old + 0.3 * torch.randn(3, 5, generator=gen)).requires_grad_(True)
    adv = torch.tensor([1.5, -0.5, -1.0])
    loss, logs = grpo_loss(new, old, ref, adv, cliprange=0.2, kl_coef=0.04)
    total, clipped = 0.0, 0
    for i in range(3):
        per_seq = 0.0
        for t in range(5):
            r = math.exp(float(new[i, t]) - float(old[i, t]))
            a = float(adv[i])
            pg = max(-a * r, -a * min(max(r, 0.8), 1.2))
            d = float(ref[i, t]) - float(new[i, t])
            per_seq += pg + 0.04 * (math.exp(d) - d - 1)  # k3 in the loss (DeepSeekMath)
            clipped += abs(r - 1) > 0.2
        total += per_seq / 5
    assert float(loss) == pytest.approx(total / 3, rel=1e-5)
    assert float(logs["policy/clipfrac"]) == pytest.approx(clipped / 15)
    assert float(logs["kl_loss"]) > 0
    # without the KL term and at ratio 1 the gradient is -A_i / (B L) for every token of response i
    same = old.clone().requires_grad_(True)
    grpo_loss(same, old, ref, adv, 0.2)[0].backward()
    torch.testing.assert_close(same.grad, (-adv / 15)[:, None].expand(3, 5))


def test_config_checks():
    with pytest.raises(ValueError, match="greater than or equal to 2"):
        GRPOConfig(k=1, batch_size=4)
    with pytest.raises(ValueError, match="prompts x k=4"):
        GRPOConfig(k=4, batch_size=10)
    with pytest.raises(ConfigError, match=r"grpo\.kl_in = 'both': input should be 'reward' or 'loss'"):
        load_config("tiny_toy", ["--algo=grpo", "--grpo.kl_in=both"])


def make_agent(**kwargs):
    return toy_agent("grpo", prompts=PROMPTS * 8, **kwargs)


@pytest.mark.parametrize("kl_in", ["reward", "loss"])
def test_groups_share_a_prompt_and_the_kl_goes_where_configured(kl_in):
    agent = make_agent(kl={"coef": 0.5}, kl_in=kl_in)
    m = agent.step()
    batch = agent.last_batch
    ctx = batch.context.reshape(4, 4, -1)
    assert all(torch.equal(ctx[g, 0], ctx[g, j]) for g in range(4) for j in range(4))
    kl = (batch.logprobs - batch.ref_logprobs).sum(1)
    expected = batch.scores - 0.5 * kl if kl_in == "reward" else batch.scores
    torch.testing.assert_close(batch.rewards, expected)
    torch.testing.assert_close(batch.advantages, group_relative_advantages(expected, 4))
    assert m["grpo/policy/clipfrac"] == 0.0  # one on-policy step: ratio 1
    assert m["grpo/kl_loss"] == pytest.approx(0.0, abs=1e-6)  # pi == rho before the first step
    second = agent.step()["grpo/kl_loss"]  # the policy has moved: k3 > 0, but only in the loss
    assert second > 0 if kl_in == "loss" else second == 0.0
    assert agent.policy.value_head.weight.abs().sum() == 0  # no value function


def test_cli_algo_grpo_runs_and_resumes_exactly(tmp_path):
    def cfg(out, *extra):
        base = ["--run.tensorboard=false", "--algo=grpo", "--grpo.batch_size=8", "--grpo.total_episodes=32"]
        return load_config("tiny_toy", [f"--run.out_dir={out}", *base, *extra])

    out = train_policy(cfg(tmp_path / "a", "--run.plot=true"), progress=False)
    assert out["iterations"] == 4 and (tmp_path / "a" / "curves.png").exists()
    train_policy(cfg(tmp_path / "b", "--run.iterations=2", "--run.plot=false"), progress=False)
    train_policy(cfg(tmp_path / "b", "--run.plot=false"), resume=True, progress=False)

    def strip(folder):
        lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if not k.startswith("time/")} for x in lines]

    rows = strip(tmp_path / "a")
    assert "grpo/loss" in rows[0] and "ppo/loss/total" not in rows[0]
    assert strip(tmp_path / "b") == rows


@pytest.mark.slow
@pytest.mark.parametrize("kl_in", ["reward", "loss"])
def test_grpo_raises_a_toy_reward(kl_in):
    agent = make_agent(
        batch=32,
        temperature=0.1,
        optim={"lr": 1e-2, "optimizer": "torch_adam"},
        kl={"coef": 0.01, "adaptive": False},
        halt={"kl_patience": 0},
        kl_in=kl_in,
    )
    scores = [agent.step()["objective/score"] for _ in range(8)]
    assert np.mean(scores[-3:]) > np.mean(scores[:3]) + 0.5, scores
