"""PPO iteration on a tiny model: metrics, KL at the start, optimizer steps, learning a toy reward."""

import dataclasses

import numpy as np
import pytest
import torch

from agents.algos import ALGOS
from agents.policy import PolicyWithValue
from agents.ppo import PPOConfig
from agents.sections import HaltConfig, KLConfig, OptimConfig
from textenv.vector import TextVectorEnv

PROMPTS = ["The weather today is", "Once upon a time", "My favourite food", "In the city of"]


def linear_token_reward(policy):
    """Toy reward: the mean over response tokens of (initial embedding . v) for a fixed random v,
    standardised. A random policy scores ~0; pointing the final hidden state along v raises it."""
    emb = policy.lm.get_output_embeddings().weight.detach().numpy().copy()  # (V, d)
    v = np.random.default_rng(0).normal(size=emb.shape[1])
    table = emb @ (v / np.linalg.norm(v))
    table = (table - table.mean()) / table.std()

    def reward(queries, responses):
        return table[responses].mean(axis=1)

    return reward


def toy_agent(algo="ppo", batch=16, temperature=1.0, prompts=PROMPTS, optim=None, kl=None, halt=None, **cfg):
    """A registered algorithm's agent on a tiny GPT-2 and the linear toy reward (shared by the PPO, RLOO and
    GRPO tests); ``cfg`` holds the algorithm's own fields, ``optim``/``kl``/``halt`` the shared ones."""
    torch.manual_seed(0)
    policy = PolicyWithValue.from_spec("tiny-gpt2", temperature=temperature, seed=0)
    envs = TextVectorEnv(
        "BookSentiment-v0",
        num_envs=batch,
        tokenizer=policy.tokenizer,
        reward_fn=linear_token_reward(policy),
        prompts=prompts,
        response_length=6,
        truncate_token=None,
        truncate_after=0,
        query_length=8,
        min_query_length=1,
    )
    shared = dict(
        optim=OptimConfig(**(optim or {})), kl=KLConfig(**(kl or {})), halt=HaltConfig(**(halt or {}))
    )
    entry = ALGOS[algo]
    config = entry.config(batch_size=batch, total_episodes=batch * 1000, **shared, **cfg)
    return entry.agent(policy, envs, config)


def make_agent(**kwargs):
    return toy_agent("ppo", **kwargs)


def test_first_iteration_metrics_and_zero_kl():
    agent = make_agent(epochs=2, minibatches=2)
    m = agent.step()
    assert m["objective/kl"] == pytest.approx(0.0, abs=1e-4)  # must-have 1: pi == rho on the first batch
    assert m["ppo/lr"] == agent.config.optim.lr
    assert agent.optimizer.state[next(iter(agent.optimizer.state))]["step"] == 4  # epochs x minibatches
    assert 0.0 <= m["ppo/policy/clipfrac"] <= 1.0 and 0.0 <= m["ppo/val/clipfrac"] <= 1.0


def test_first_iteration_metrics_match_a_hand_computation():
    """One epoch, one minibatch: every logged value recomputed from the rollout by hand. On the first
    minibatch pi is the sampling policy, so ratio 1, approx-KL 0, nothing clipped, and the losses reduce
    to the plain formulas (PAPER.md §1.8)."""
    from agents.core import compute_gae, whiten

    agent = make_agent(epochs=1, minibatches=1)
    cfg = agent.config
    captured = {}
    rollout = agent.rollout

    def capture():
        captured["batch"] = rollout()
        return captured["batch"]

    agent.rollout = capture
    m = agent.step()
    b = captured["batch"]
    kl = (b.logprobs - b.ref_logprobs).sum(1)
    assert m["objective/kl"] == pytest.approx(float(kl.mean()), abs=1e-6)
    assert m["objective/kl_coef"] == pytest.approx(cfg.kl.coef)
    assert m["objective/score"] == pytest.approx(float(b.scores.mean()), rel=1e-6)
    assert m["objective/score_std"] == pytest.approx(float(b.scores.std(unbiased=False)), rel=1e-6)
    assert m["objective/entropy"] == pytest.approx(float(-b.logprobs.sum(1).mean()), rel=1e-6)
    total = b.scores.mean() + b.non_score_rewards.sum(1).mean()
    assert m["objective/score_total"] == pytest.approx(float(total), rel=1e-6, abs=1e-6)
    # rewards: the score on the last token, minus beta * KL on every token (§1.4 and §1.8)
    expected = -cfg.kl.coef * (b.logprobs - b.ref_logprobs)
    expected[:, -1] += b.scores
    assert torch.allclose(b.rewards, expected, atol=1e-6)
    rewards = whiten(b.rewards, shift_mean=False)
    _, returns = compute_gae(rewards, b.values, cfg.gamma, cfg.lam)
    error = float(((b.values - returns) ** 2).mean())
    assert m["ppo/returns/mean"] == pytest.approx(float(returns.mean()), rel=1e-5, abs=1e-6)
    assert m["ppo/returns/var"] == pytest.approx(float(returns.var(unbiased=False)), rel=1e-5)
    assert m["ppo/val/error"] == pytest.approx(error, rel=1e-5)
    assert m["ppo/loss/value"] == pytest.approx(0.5 * error, rel=1e-5)
    assert m["ppo/val/var_explained"] == pytest.approx(
        1 - error / float(returns.var(unbiased=False)), rel=1e-5
    )
    assert m["ppo/val/vpred"] == pytest.approx(float(b.values.mean()), rel=1e-5, abs=1e-6)
    assert m["ppo/val/mean"] == pytest.approx(float(b.values.mean()), rel=1e-6, abs=1e-7)
    assert m["ppo/val/var"] == pytest.approx(float(b.values.var(unbiased=False)), rel=1e-6)
    assert m["ppo/policy/ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert m["ppo/policy/approxkl"] == pytest.approx(0.0, abs=1e-8)
    assert m["ppo/policy/clipfrac"] == m["ppo/val/clipfrac"] == 0.0
    assert m["ppo/loss/policy"] == pytest.approx(0.0, abs=1e-5)  # -mean of whitened advantages
    assert m["ppo/loss/total"] == pytest.approx(
        m["ppo/loss/policy"] + cfg.vf_coef * m["ppo/loss/value"], rel=1e-5
    )
    assert m["ppo/policy/entropy"] == pytest.approx(float(b.entropy.mean()), rel=1e-4)  # same pi as sampling
    assert m["ppo/grad_norm"] > 0.0


def test_config_checks():
    with pytest.raises(ValueError, match="divisible"):
        PPOConfig(batch_size=10, minibatches=4)
    assert PPOConfig(total_episodes=1_000_000, batch_size=512).num_updates == 1954


@pytest.mark.slow
def test_ppo_raises_a_toy_reward():
    # T = 0.1 sharpens the near-uniform logits of the random tiny model so that a few updates show
    scores = [
        agent.step()["objective/score"]
        for agent in [
            make_agent(
                batch=32,
                temperature=0.1,
                optim={"lr": 1e-2, "optimizer": "torch_adam"},
                kl={"coef": 0.01, "adaptive": False},
                halt={"kl_patience": 0},
            )
        ]
        for _ in range(8)
    ]
    assert np.mean(scores[-3:]) > np.mean(scores[:3]) + 0.5


def test_first_minibatch_has_ratio_one_and_the_lr_decays_per_iteration():
    agent = make_agent(epochs=1, minibatches=1)
    agent.config = dataclasses.replace(agent.config, total_episodes=16 * 4)
    m = agent.step()
    # one epoch, one minibatch: the update's only forward sees pi_old == pi (must-have 1)
    assert m["ppo/policy/ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert m["ppo/policy/approxkl"] == pytest.approx(0.0, abs=1e-6)
    assert m["ppo/policy/clipfrac"] == 0.0
    assert m["ppo/lr"] == agent.config.optim.lr  # lr (1 - 0/4)
    assert agent.step()["ppo/lr"] == pytest.approx(agent.config.optim.lr * 0.75)  # lr (1 - 1/4)


@pytest.mark.parametrize("old_logprobs", ["sampling", "recompute"])
def test_the_rollout_runs_a_second_policy_pass_only_when_asked(old_logprobs):
    """``old_logprobs = "sampling"`` (the reference code): the old values and entropies come with the
    samples and the policy runs no second pass over the batch; ``"recompute"`` ([R] deviation (a)) runs
    it, and takes the log-probs from it too. Either way the values agree with that pass."""
    agent = make_agent(epochs=1, minibatches=1, old_logprobs=old_logprobs)
    with torch.no_grad():
        agent.policy.value_head.weight.normal_(generator=torch.Generator().manual_seed(0))
    calls = []
    forward_stats = agent.policy.forward_stats

    def spy(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return forward_stats(*args, **kwargs)

    agent.policy.forward_stats = spy
    batch = agent.rollout()
    assert calls == ([] if old_logprobs == "sampling" else [False])
    assert agent.timings["forward"] >= 0.0
    again = forward_stats(torch.cat([batch.context, batch.responses], 1), agent.context_length)
    torch.testing.assert_close(batch.values, again.values, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch.entropy, again.entropy, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch.logprobs, again.logprobs, atol=1e-4, rtol=1e-4)
    assert batch.values.abs().min() > 0
