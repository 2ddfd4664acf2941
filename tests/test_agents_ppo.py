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
    for key in (
        "objective/kl",
        "objective/kl_coef",
        "objective/score",
        "objective/score_total",
        "objective/entropy",
        "ppo/policy/approxkl",
        "ppo/policy/clipfrac",
        "ppo/val/error",
        "ppo/val/clipfrac",
        "ppo/val/var_explained",
        "ppo/loss/policy",
        "ppo/loss/value",
        "time/rollout",
    ):
        assert key in m and np.isfinite(m[key]), key
    assert m["objective/kl"] == pytest.approx(0.0, abs=1e-4)  # must-have 1: pi == rho on the first batch
    assert m["ppo/lr"] == agent.config.optim.lr
    assert agent.optimizer.state[next(iter(agent.optimizer.state))]["step"] == 4  # epochs x minibatches


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
