"""The SB3 policy's acting KV cache and prefix-shared evaluation equal the plain per-row full pass: actions,
log-probs, values, entropies and gradients, across episode boundaries, with several env rows, with rows
that reset on their own, after weight changes, and inside SB3's PPO with shuffled minibatches."""

import copy
from functools import cache

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from agents.sb3 import KLPenaltyCallback, TransformerPolicy, prefix_groups
from textenv.models import load_causal_lm
from textenv.wrappers import LMLogProbs

SMALL = dict(query_length=8, response_length=4, min_query_length=1, truncate_token=None, truncate_after=0)
PROMPTS = ["The weather today is", "Once upon a time", "My favourite food", "In the city of", "Hello"]
TOL = dict(atol=2e-5, rtol=2e-5)


def tiny_env(**kw):
    return gym.make("BookSentiment-v0", tokenizer="tiny-gpt2", prompts=PROMPTS, **SMALL, **kw)


def token_reward(queries, responses):
    """A reward that varies with the tokens (VADER scores the tiny model's random tokens 0 throughout): the
    advantages are real, not float noise that SB3's advantage normalisation would blow up to unit size."""
    return (responses % 7).mean(axis=1).astype(float) - 3.0


@cache
def _lm():
    return load_causal_lm("tiny-gpt2", seed=0)


def lm_kwargs():
    lm, tok = _lm()
    return dict(model=copy.deepcopy(lm), pad_id=tok.pad_token_id)


def policies(env):
    """A cached and a plain policy with the same weights, and a non-zero value head."""
    out = []
    for kv_cache in (True, False):
        p = TransformerPolicy(
            env.observation_space,
            env.action_space,
            lambda _: 1e-3,
            temperature=0.7,
            kv_cache=kv_cache,
            **lm_kwargs(),
        )
        torch.manual_seed(5)
        torch.nn.init.normal_(p.value_net.weight, std=0.5)
        out.append(p)
    out[1].load_state_dict(out[0].state_dict())
    for p in out:
        p.set_training_mode(False)
    return out


def count_prefills(policy):
    calls = []
    prefill = policy._prefill

    def counted(ids):
        calls.append(len(ids))
        return prefill(ids)

    policy._prefill = counted
    return calls


def act_both(cached, plain, obs, seed):
    obs = torch.as_tensor(obs).float()  # SB3 hands floats over
    out = []
    for p in (cached, plain):
        torch.manual_seed(seed)
        with torch.no_grad():
            out.append(p(obs))
    (a1, v1, l1), (a2, v2, l2) = out
    assert torch.equal(a1, a2)
    torch.testing.assert_close(v1, v2, **TOL)
    torch.testing.assert_close(l1, l2, **TOL)
    return a1


def test_prefix_groups_by_content_in_any_order():
    pad = 99
    rows = torch.tensor(
        [
            [pad, 5, 6, 7, pad, pad],  # a prefix of row 2
            [pad, pad, 1, 2, 3, pad],  # its own group
            [pad, 5, 6, 7, 8, 9],  # leader
            [5, 6, 7, 8, pad, pad],  # same real tokens as a prefix of row 2, other padding
            [pad, 5, 6, 7, 8, 9],  # identical to row 2
            [pad, pad, 1, 2, 4, pad],  # shares a prefix with row 1 but extends neither way
        ]
    )
    leaders, group, column = prefix_groups(rows, pad)
    lead = leaders[group]
    assert lead.tolist() == [2, 1, 2, 2, 2, 5]
    assert column.tolist() == [3, 4, 5, 4, 5, 4]  # the row's last real token inside its leader's row
    assert prefix_groups(torch.tensor([[pad, pad], [1, 2]]), pad) is None  # a row without a real token


def test_acting_cache_equals_the_full_pass_across_episodes_with_several_rows():
    venv = make_vec_env(tiny_env, n_envs=3, seed=0)
    cached, plain = policies(venv)
    prefills = count_prefills(cached)
    obs = venv.reset()
    for step in range(10):  # episodes of 4 steps: resets after steps 3 and 7
        actions = act_both(cached, plain, obs, seed=step)
        obs, *_ = venv.step(actions.numpy())
    with torch.no_grad():  # the last observation's values, as SB3 asks after a rollout
        t = torch.as_tensor(obs).float()
        torch.testing.assert_close(cached.predict_values(t), plain.predict_values(t), **TOL)
        one = t[:1]  # a single terminal observation must not evict the cache
        torch.testing.assert_close(cached.predict_values(one), plain.predict_values(one), **TOL)
    assert prefills == [3, 3, 3]  # one full pass per episode start; every other step ran one token


def test_rows_that_reset_alone_repeat_or_skip_fall_back_or_extend_exactly():
    env = tiny_env()
    cached, plain = policies(env)
    prefills = count_prefills(cached)
    pad = cached.pad_id
    rows = []
    for seed in range(3):
        o, _ = env.reset(seed=seed)
        rows.append(o)
    obs = np.stack(rows)
    ctx = obs.shape[1] - 4
    act_both(cached, plain, obs, seed=0)
    obs = obs.copy()
    obs[:, ctx] = [300, 301, 302]  # every row extends by one
    act_both(cached, plain, obs, seed=1)
    obs = obs.copy()
    obs[0, ctx + 1] = 303  # row 0 extends, row 1 repeats its observation, row 2 extends by two
    obs[2, ctx + 1 : ctx + 3] = [304, 305]
    act_both(cached, plain, obs, seed=2)
    assert prefills == [3]
    act_both(cached, plain, obs, seed=3)  # nothing changed: the stored states, no pass
    assert prefills == [3]
    obs = obs.copy()
    obs[1] = env.reset(seed=7)[0]  # row 1 starts a new episode alone: one full pass for all rows
    obs[0, ctx + 2] = 306
    act_both(cached, plain, obs, seed=4)
    assert prefills == [3, 3]
    gap = obs.copy()
    gap[0, ctx + 3] = 307  # written past a pad: not an extension of the real tokens
    gap[0, ctx + 2] = pad
    act_both(cached, plain, gap, seed=5)
    assert prefills == [3, 3, 3]
    act_both(cached, plain, obs[:2], seed=6)  # another batch size
    assert prefills == [3, 3, 3, 2]


def test_weight_changes_and_training_mode_never_use_a_stale_cache():
    env = tiny_env()
    cached, plain = policies(env)
    obs = np.stack([env.reset(seed=s)[0] for s in range(2)])
    act_both(cached, plain, obs, seed=0)
    # an optimiser step changes the weights in place: the next acting call must not reuse the old cache
    for p in (cached, plain):
        torch.manual_seed(1)
        p.optimizer.zero_grad()
        v, logp, _ = p.evaluate_actions(torch.as_tensor(obs).float(), torch.tensor([300, 301]))
        (v.sum() + logp.sum()).backward()
        p.optimizer.step()
    assert cached._acting is not None
    act_both(cached, plain, obs, seed=1)
    with torch.no_grad():
        for p in cached.lm.parameters():
            p.mul_(1.01)
        for p in plain.lm.parameters():
            p.mul_(1.01)
    act_both(cached, plain, obs, seed=2)
    cached.set_training_mode(True)
    assert cached._acting is None
    with torch.no_grad():  # training mode: the shared pass, no cache built
        cached(torch.as_tensor(obs).float())
    assert cached._acting is None


def test_predict_loops_keep_the_cache():
    venv = make_vec_env(tiny_env, n_envs=2, seed=0)
    cached, plain = policies(venv)
    prefills = count_prefills(cached)
    obs = venv.reset()
    for _ in range(6):
        a1, _ = cached.predict(obs, deterministic=True)
        a2, _ = plain.predict(obs, deterministic=True)
        np.testing.assert_array_equal(a1, a2)
        obs, *_ = venv.step(a1)
    assert prefills == [2, 2]  # predict() sets eval mode every call; only a new episode runs in full


def test_evaluate_actions_of_shuffled_minibatches_equal_the_per_row_pass_with_gradients():
    venv = make_vec_env(tiny_env, n_envs=3, seed=1)
    cached, plain = policies(venv)
    obs, rows, acts = venv.reset(), [], []
    for step in range(7):
        a = act_both(cached, plain, obs, seed=step)
        rows.append(obs)
        acts.append(a.numpy())
        obs, *_ = venv.step(a.numpy())
    obs_b = torch.as_tensor(np.concatenate(rows)).float()
    act_b = torch.as_tensor(np.concatenate(acts)).float()[:, None]
    perm = torch.randperm(len(obs_b), generator=torch.Generator().manual_seed(0))[:15]
    grads = []
    for p in (cached, plain):
        p.set_training_mode(True)
        p.optimizer.zero_grad()
        values, logp, ent = p.evaluate_actions(obs_b[perm], act_b[perm])
        (values.square().sum() + logp.sum() + ent.sum()).backward()
        grads.append([q.grad.clone() for q in p.parameters() if q.grad is not None])
        p.last = (values, logp, ent)
    for x, y in zip(cached.last, plain.last):
        torch.testing.assert_close(x, y, **TOL)
    assert len(grads[0]) == len(grads[1]) > 0
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2, atol=1e-4, rtol=1e-4)


def test_kl_callback_reference_logprobs_equal_the_per_row_pass():
    env = tiny_env()
    lm = lm_kwargs()["model"]
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ref = LMLogProbs(lm.eval(), env.unwrapped.pad_token_id, 0.7)
    cb = KLPenaltyCallback(reference=ref)
    obs = np.stack([env.reset(seed=s)[0] for s in range(2)])
    steps = [obs.copy()]
    ctx = obs.shape[1] - 4
    for t in range(3):
        obs = obs.copy()
        obs[:, ctx + t] = [400 + t, 500 + t]
        steps.append(obs)
    rows = torch.as_tensor(np.concatenate(steps)[::-1].copy())
    actions = torch.arange(len(rows)) + 600
    torch.testing.assert_close(
        cb._reference_logprobs(rows, actions), ref.token_logprobs(rows, actions), **TOL
    )


class KeepBuffers(KLPenaltyCallback):
    def _on_rollout_end(self):
        super()._on_rollout_end()
        buf = self.model.rollout_buffer
        self.seen = getattr(self, "seen", [])
        self.seen.append((buf.actions.copy(), buf.log_probs.copy(), buf.values.copy(), buf.rewards.copy()))


def test_sb3_ppo_learns_the_same_with_and_without_the_cache(n_steps=6):
    """Whole PPO runs (rollouts crossing episode ends, shuffled minibatches, a rollout after an update, the
    KL callback) give the same buffers and weights with the cache as with the per-row pass. The reward is
    never zero, so the update follows a real signal, not rounding noise."""
    runs = []
    for kv_cache in (True, False):
        venv = make_vec_env(lambda: tiny_env(reward_fn=token_reward), n_envs=2, seed=0)
        model = PPO(
            TransformerPolicy,
            venv,
            n_steps=n_steps,
            batch_size=6,
            n_epochs=1,
            learning_rate=1e-3,
            seed=0,
            policy_kwargs=dict(temperature=0.7, kv_cache=kv_cache, **lm_kwargs()),
        )
        keep = KeepBuffers(kl_coef=0.2)
        model.learn(2 * 2 * n_steps, callback=keep)
        runs.append((keep.seen, [p.detach().clone() for p in model.policy.parameters()]))
    (seen1, w1), (seen2, w2) = runs
    assert len(seen1) == len(seen2) == 2
    for r1, r2 in zip(seen1, seen2):
        np.testing.assert_array_equal(r1[0], r2[0])  # the same actions sampled
        for x, y in zip(r1[1:], r2[1:]):
            np.testing.assert_allclose(x, y, atol=1e-4, rtol=1e-4)
    for a, b in zip(w1, w2):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
