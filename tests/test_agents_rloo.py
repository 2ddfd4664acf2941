"""RLOO: leave-one-out advantages and the loss against hand computations, grouped prompts from the env,
the CLI choice with exact resume, and learning a toy reward."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.config import load_config
from agents.rloo import RLOOConfig, leave_one_out_advantages, rloo_loss
from agents.train import train_policy
from tests.test_agents_ppo import PROMPTS, toy_agent


def test_leave_one_out_advantages_match_a_loop():
    rewards = torch.tensor([1.0, 2.0, 4.0, 7.0, -1.0, 0.0, 3.0, 5.0])
    got = leave_one_out_advantages(rewards, 4)
    for i in range(8):
        g = i // 4 * 4
        others = [float(rewards[j]) for j in range(g, g + 4) if j != i]
        assert float(got[i]) == pytest.approx(float(rewards[i]) - sum(others) / 3)
    assert float(got[:4].sum()) == pytest.approx(0.0, abs=1e-6)  # the baseline keeps each group centred
    with pytest.raises(ValueError, match="greater than or equal to 2"):
        RLOOConfig(k=1, batch_size=4)
    with pytest.raises(ValueError, match="multiple of k"):
        RLOOConfig(k=4, batch_size=10)


def test_rloo_loss_on_a_hand_computed_batch():
    old = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]])
    new = torch.tensor([[-0.9, -2.0], [-0.5, -1.0]], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    loss, clipfrac, approxkl = rloo_loss(new, old, adv, cliprange=0.2)
    r = np.exp(np.array([[0.1, 0.0], [0.0, 0.5]]))  # ratios; 1.6487 is clipped to 1.2
    # episode 0 (A = 2): max(-2 r, -2 clip(r)) = -2 min(r, clip(r)) -> -2 * 1.10517 and -2 * 1
    # episode 1 (A = -1): max(r, clip(r)) -> 1 and 1.6487 (the unclipped ratio is the larger loss)
    expected = ((-2 * r[0, 0] - 2 * 1.0) + (1.0 + r[1, 1])) / 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert float(clipfrac) == pytest.approx(0.25)
    assert float(approxkl) == pytest.approx(0.5 * (0.01 + 0.25) / 4)
    # at ratio 1 the gradient is REINFORCE's: -A_i / B for every token of episode i
    same = old.clone().requires_grad_(True)
    rloo_loss(same, old, adv, 0.2)[0].backward()
    torch.testing.assert_close(same.grad, torch.tensor([[-1.0, -1.0], [0.5, 0.5]]))


def make_agent(**kwargs):
    return toy_agent("rloo", prompts=PROMPTS * 8, **kwargs)


def test_groups_share_a_prompt_and_the_first_step_is_reinforce():
    agent = make_agent(kl={"coef": 0.5})
    m = agent.step()
    batch = agent.last_batch
    ctx = batch.context.reshape(4, 4, -1)
    assert all(torch.equal(ctx[g, 0], ctx[g, j]) for g in range(4) for j in range(4))
    assert not all(torch.equal(ctx[0, 0], ctx[g, 0]) for g in range(4))  # different prompts across groups
    assert m["objective/kl"] == pytest.approx(0.0, abs=1e-4)  # pi == rho before the first step
    kl = (batch.logprobs - batch.ref_logprobs).sum(1)
    torch.testing.assert_close(batch.rewards, batch.scores - 0.5 * kl)  # KL inside the sequence reward
    torch.testing.assert_close(batch.advantages, leave_one_out_advantages(batch.rewards, 4))
    assert m["rloo/policy/clipfrac"] == 0.0 and m["rloo/policy/approxkl"] == pytest.approx(0.0, abs=1e-10)
    assert agent.policy.value_head.weight.abs().sum() == 0  # no value function: the head never trains


def test_cli_algo_rloo_runs_and_resumes_exactly(tmp_path):
    def cfg(out, *extra):
        return load_config(
            "tiny_toy",
            [f"--run.out_dir={out}", "--run.tensorboard=false", "--run.algo=rloo", "--lr=2e-3", *extra],
        )

    full = cfg(tmp_path / "a", "--run.plot=true")
    assert full.rloo.optim.lr == 2e-3 and full.ppo.optim.lr == 2e-3  # [optim] is shared by the algorithms
    other = cfg(tmp_path / "c", "--epochs=3")
    assert other.rloo.epochs == 3 and other.ppo.epochs == 2  # a bare key goes to the algorithm that runs
    out = train_policy(full, progress=False)
    assert out["iterations"] == 4 and (tmp_path / "a" / "curves.png").exists()
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert "rloo/loss" in rows[0] and "ppo/loss/total" not in rows[0]
    train_policy(cfg(tmp_path / "b", "--run.iterations=2", "--run.plot=false"), progress=False)
    train_policy(cfg(tmp_path / "b", "--run.plot=false"), resume=True, progress=False)

    def strip(folder):
        lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if not k.startswith("time/")} for x in lines]

    assert strip(tmp_path / "b") == strip(tmp_path / "a")


@pytest.mark.slow
def test_rloo_raises_a_toy_reward():
    agent = make_agent(
        batch=32,
        temperature=0.1,
        optim={"lr": 1e-2, "optimizer": "torch_adam"},
        kl={"coef": 0.01, "adaptive": False},
        halt={"kl_patience": 0},
    )
    scores = [agent.step()["objective/score"] for _ in range(8)]
    assert np.mean(scores[-3:]) > np.mean(scores[:3]) + 0.5, scores
