"""stable-baselines3 on the text envs: the transformer policy, KL shaping (callback and wrapper) equal to
``textenv.kl.shaped_rewards``, smoke runs on every registered id, save/load, and learning a toy reward."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env

import textenv
from agents.policy import PolicyWithValue
from agents.sb3 import KLPenaltyCallback, TransformerPolicy
from textenv.kl import AdaptiveKLController, shaped_rewards
from textenv.models import load_causal_lm
from textenv.wrappers import KLPenalty, LMLogProbs

SMALL = dict(query_length=8, response_length=4, min_query_length=1, truncate_token=None, truncate_after=0)
PROMPTS = ["The weather today is", "Once upon a time", "My favourite food", "In the city of"]


def tiny_env(**kw):
    return gym.make("BookSentiment-v0", tokenizer="tiny-gpt2", prompts=PROMPTS, **{**SMALL, **kw})


def policy_for(env, temperature=1.0, **kw):
    return TransformerPolicy(
        env.observation_space,
        env.action_space,
        lambda _: 1e-3,
        model="tiny-gpt2",
        temperature=temperature,
        **kw,
    )


def other_lm(seed=1):
    """A reference model different from the policy, so that the KL terms are not all zero."""
    lm, _ = load_causal_lm("tiny-gpt2", seed=seed)
    return lm.eval()


def test_policy_uses_the_lm_head_with_temperature_and_no_new_vocab_layer():
    env = tiny_env()
    policy = policy_for(env, temperature=0.5)
    fresh, tok = load_causal_lm("tiny-gpt2", seed=0)
    # pretrained weights untouched (no orthogonal re-init); the only new parameters are the value head
    for (n, p), q in zip(policy.lm.named_parameters(), fresh.parameters()):
        assert torch.equal(p, q), n
    extra = sum(p.numel() for p in policy.parameters()) - sum(p.numel() for p in fresh.parameters())
    assert extra == fresh.config.hidden_size + 1
    obs, _ = env.reset(seed=0)
    for step in range(3):
        t = torch.as_tensor(obs)[None]
        real = t[t != tok.pad_token_id][None]  # the same tokens without pads
        with torch.no_grad():
            expected = torch.log_softmax(fresh(real).logits[0, -1].float() / 0.5, -1)
            got = policy.get_distribution(t.float()).distribution.logits[0]  # floats as SB3 may pass them
            values = policy.predict_values(t)
        torch.testing.assert_close(torch.log_softmax(got, -1), expected, atol=1e-5, rtol=1e-5)
        assert torch.all(values == 0)  # zero-initialised value head
        obs, *_ = env.step(step + 100)


def test_policy_rejects_a_mismatched_env():
    env = gym.make("BookSentiment-v0", **SMALL)  # the SmolLM2 tokenizer: 49,152 actions, another pad
    with pytest.raises(ValueError, match=r"pad id|output rows"):
        policy_for(env)


def _episode_table(buffer, response_length):
    """Rows of the buffer regrouped per complete episode: (obs of the last step, actions, logprobs, rewards)."""
    obs, act = buffer.observations, buffer.actions[..., 0]
    n_steps, n_envs = act.shape
    out = []
    for e in range(n_envs):
        starts = np.flatnonzero(buffer.episode_starts[:, e])
        for s in starts:
            if s + response_length <= n_steps:
                sl = slice(s, s + response_length)
                out.append((obs[s, e], act[sl, e], buffer.log_probs[sl, e], buffer.rewards[sl, e], (sl, e)))
    return out


def test_kl_callback_rewards_equal_the_papers_shaped_rewards():
    env = make_vec_env(tiny_env, n_envs=2, seed=0)
    model = PPO(
        TransformerPolicy,
        env,
        n_steps=8,
        batch_size=8,
        n_epochs=1,
        seed=0,
        policy_kwargs=dict(model="tiny-gpt2", temperature=0.7),
    )
    pad = model.policy.pad_id
    ref_lm = other_lm()
    raw = {}

    class Capture(KLPenaltyCallback):
        def _on_rollout_end(self):
            raw["rewards"] = self.model.rollout_buffer.rewards.copy()
            raw["policy"] = copy.deepcopy(self.model.policy.lm)
            super()._on_rollout_end()
            raw["shaped"] = self.model.rollout_buffer.rewards.copy()
            raw["buffer"] = copy.deepcopy(self.model.rollout_buffer)

    cb = Capture(reference=LMLogProbs(ref_lm, pad, 0.7), kl_coef=0.3)
    model.learn(16, callback=cb)
    buf = raw["buffer"]
    episodes = _episode_table(buf, 4)
    assert len(episodes) == 4
    pi = PolicyWithValue(raw["policy"], pad, temperature=0.7)
    rho = PolicyWithValue(ref_lm, pad, temperature=0.7)
    for first_obs, actions, _, shaped, (sl, e) in episodes:
        context = torch.as_tensor(first_obs[: len(first_obs) - 4])[None]  # the episode's context
        full = torch.cat([context, torch.as_tensor(actions)[None]], 1)
        with torch.no_grad():
            logp = pi.forward_stats(full, context.shape[1]).logprobs
            ref = rho.forward_stats(full, context.shape[1]).logprobs
        score = torch.tensor([raw["rewards"][sl, e][-1]])
        expected, _ = shaped_rewards(score, logp, ref, kl_coef=0.3)
        np.testing.assert_allclose(shaped, expected[0].numpy(), atol=1e-4)
        assert np.abs(shaped - raw["rewards"][sl, e]).max() > 1e-4  # the penalty is not zero here
    assert cb.history and "objective/kl" in cb.history[0]


def test_kl_wrapper_rewards_equal_the_papers_shaped_rewards_and_update_the_controller():
    env = tiny_env()
    policy = policy_for(env, temperature=0.7)
    pad = policy.pad_id
    ref_lm = other_lm()
    ctl = AdaptiveKLController(0.2, target=0.5, horizon=10)
    wrapped = KLPenalty(env, policy, LMLogProbs(ref_lm, pad, 0.7), ctl)
    obs, _ = wrapped.reset(seed=3)
    context = torch.as_tensor(obs[:8])[None]
    rewards, actions = [], []
    for a in [300, 301, 302, 303]:
        obs, r, term, trunc, info = wrapped.step(a)
        actions.append(a)
        rewards.append(r)
    assert term
    inner_score = info["score"]
    pi = PolicyWithValue(policy.lm, pad, temperature=0.7)
    rho = PolicyWithValue(ref_lm, pad, temperature=0.7)
    full = torch.cat([context, torch.tensor([actions])], 1)
    with torch.no_grad():
        logp = pi.forward_stats(full, 8).logprobs
        ref = rho.forward_stats(full, 8).logprobs
    expected, _ = shaped_rewards(torch.tensor([inner_score]), logp, ref, kl_coef=0.2)
    np.testing.assert_allclose(rewards, expected[0].numpy(), atol=1e-5)
    assert info["kl"] == pytest.approx(float((logp - ref).sum()), abs=1e-4) and info["kl_coef"] == 0.2
    assert ctl.value != 0.2  # updated with this episode's KL
    with pytest.raises(TypeError, match="token_logprobs"):
        KLPenalty(env, object(), LMLogProbs(ref_lm, pad))


@pytest.mark.parametrize("env_id", sorted(textenv.ENV_IDS))
@pytest.mark.parametrize("algo", [PPO, A2C])
def test_sb3_learns_on_every_registered_id(env_id, algo):
    env = gym.make(
        env_id,
        tokenizer="tiny-gpt2",
        query_length=16,
        response_length=4,
        min_query_length=1,
        truncate_after=0,
    )
    kwargs = dict(n_steps=8, batch_size=8, n_epochs=1) if algo is PPO else dict(n_steps=4)
    model = algo(TransformerPolicy, env, seed=0, policy_kwargs=dict(model="tiny-gpt2"), **kwargs)
    before = [p.detach().clone() for p in model.policy.parameters() if p.requires_grad]
    model.learn(16, callback=KLPenaltyCallback(kl_coef=0.1))
    assert model.num_timesteps == 16  # exactly the rollouts asked for
    after = [p.detach() for p in model.policy.parameters() if p.requires_grad]
    assert any(not torch.equal(b, a) for b, a in zip(before, after))  # the update reached the weights


def test_make_vec_env_save_and_load(tmp_path):
    env = make_vec_env(tiny_env, n_envs=2, seed=0)
    model = PPO(
        TransformerPolicy,
        env,
        n_steps=4,
        batch_size=8,
        n_epochs=1,
        seed=0,
        policy_kwargs=dict(model="tiny-gpt2"),
    )
    model.learn(8)
    model.save(tmp_path / "m.zip")
    again = PPO.load(tmp_path / "m.zip")
    obs = env.reset()
    np.testing.assert_array_equal(
        model.predict(obs, deterministic=True)[0], again.predict(obs, deterministic=True)[0]
    )
    for p, q in zip(model.policy.parameters(), again.policy.parameters()):
        assert torch.equal(p.cpu(), q.cpu())


def toy_reward(table):
    def reward(queries, responses):
        return table[responses].mean(axis=1)

    return reward


@pytest.mark.slow
def test_sb3_ppo_raises_a_toy_reward():
    """The same toy reward as the built-in PPO's learning test: a fixed random projection of each response
    token's output embedding, standardised; a random policy scores ~0."""
    lm, _ = load_causal_lm("tiny-gpt2", seed=0)
    emb = lm.get_output_embeddings().weight.detach().numpy()
    v = np.random.default_rng(0).normal(size=emb.shape[1])
    table = emb @ (v / np.linalg.norm(v))
    table = (table - table.mean()) / table.std()
    env = make_vec_env(lambda: tiny_env(reward_fn=toy_reward(table), response_length=6), n_envs=8, seed=0)
    model = PPO(
        TransformerPolicy,
        env,
        n_steps=24,
        batch_size=48,
        n_epochs=2,
        learning_rate=1e-2,
        seed=0,
        policy_kwargs=dict(model="tiny-gpt2", temperature=0.1),
    )
    scores = []

    class Scores(KLPenaltyCallback):
        def _on_rollout_end(self):
            buf = self.model.rollout_buffer
            scores.append(float(buf.rewards[buf.rewards != 0].mean()))
            super()._on_rollout_end()

    cb = Scores(kl_coef=0.0)
    model.learn(24 * 8 * 8, callback=cb)
    assert np.mean(scores[-3:]) > np.mean(scores[:3]) + 0.5, scores
