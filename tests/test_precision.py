"""Devices, mixed precision and the static-shape sampler (issue 17), on tiny models on the CPU."""

import pytest
import torch

from agents.config import ConfigError, load_config
from agents.policy import PolicyWithValue
from textenv.models.tokenization import pad_sequences

TEXTS = ["It was a dark and stormy night;", "Call me", "The sea was calm"]
# stated tolerance: bf16 autocast moves tempered log-probs by at most this much on the tiny models
BF16_LOGP_ATOL = 0.02


def _policy(spec):
    policy = PolicyWithValue.from_spec(spec, temperature=0.7, seed=0)
    tok = policy.tokenizer
    ctx = torch.as_tensor(pad_sequences([tok.encode(t) for t in TEXTS], tok.pad_token_id, side="left"))
    return policy, ctx


def static_draws_as_dynamic(policy, ctx, length):
    """The dynamic draws of ``length`` tokens (seeded), checked against the static sampler's (the same
    tokens, log-probs within 1e-5) and against the recomputed log-probs (1e-4)."""
    a, la = policy.sample(ctx, length, generator=torch.Generator().manual_seed(0))
    policy.sampler = "static"
    b, lb = policy.sample(ctx, length, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)
    stats = policy.forward_stats(torch.cat([ctx, b], 1), ctx.shape[1])
    torch.testing.assert_close(stats.logprobs, lb, atol=1e-4, rtol=1e-4)
    return a


@pytest.mark.parametrize("spec", ["tiny-gpt2", "tiny-llama"])
def test_the_static_sampler_draws_what_the_dynamic_one_draws(spec):
    policy, ctx = _policy(spec)
    # padded rows: the recomputed log-probs check padding invariance through the preallocated mask
    static_draws_as_dynamic(policy, ctx, 8)


@pytest.mark.parametrize("spec", ["tiny-gpt2", "tiny-llama"])
def test_a_batch_without_padding_samples_without_a_mask_and_the_same_tokens(spec, monkeypatch):
    """No pad in the batch: the dynamic sampler passes no attention mask (none is built per step), and
    draws what the static sampler (always a full mask) draws, with the recomputed log-probs."""
    policy, _ = _policy(spec)
    ctx = torch.as_tensor([policy.tokenizer.encode(t)[:2] for t in TEXTS])  # 2 real tokens per row
    masks = []
    forward = type(policy.lm).forward

    def spy(self, *args, **kwargs):
        masks.append(kwargs.get("attention_mask"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(policy.lm), "forward", spy)
    policy.sample(ctx, 6, generator=torch.Generator().manual_seed(0))
    assert len(masks) == 6 and all(m is None for m in masks)  # the prefill and 5 decode steps
    static_draws_as_dynamic(policy, ctx, 6)


@pytest.mark.parametrize("spec", ["tiny-gpt2", "tiny-llama"])
def test_bf16_logprobs_agree_with_fp32_and_stay_float32(spec):
    policy, ctx = _policy(spec)
    responses, _ = policy.sample(ctx, 8, generator=torch.Generator().manual_seed(1))
    full = torch.cat([ctx, responses], 1)
    fp32 = policy.forward_stats(full, ctx.shape[1])
    policy.set_precision("bf16")
    bf16 = policy.forward_stats(full, ctx.shape[1])
    assert bf16.logprobs.dtype == bf16.values.dtype == bf16.entropy.dtype == torch.float32
    assert (bf16.logprobs - fp32.logprobs).abs().max() < BF16_LOGP_ATOL
    assert not torch.equal(bf16.logprobs, fp32.logprobs)  # autocast really ran in bf16
    assert all(p.dtype == torch.float32 for p in policy.parameters())  # float32 master weights
    bf16.logprobs.sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in policy.parameters() if p.grad is not None)
    _, lp = policy.sample(ctx, 4, generator=torch.Generator().manual_seed(1))
    assert lp.dtype == torch.float32


def test_precision_and_device_are_validated():
    policy, _ = _policy("tiny-gpt2")
    with pytest.raises(ValueError, match=r"precision='fp8'; choose one of \['bf16', 'fp16', 'fp32'\]"):
        policy.set_precision("fp8")
    cfg = load_config(None, [])
    assert cfg.run.device == "auto" and cfg.run.precision == "fp32" and cfg.run.compile_sampler == "auto"
    assert cfg.run.torch_device == ("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(
        ConfigError, match=r"run.device='gpu' is not a device; use \"auto\", \"cpu\", \"cuda\""
    ):
        load_config(None, ["--run.device=gpu"])
    with pytest.raises(ConfigError, match=r"run.precision"):
        load_config(None, ["--run.precision=fp8"])


def test_run_settings_reach_the_policy():
    from agents.build import apply_run_settings

    policy, _ = _policy("tiny-gpt2")
    apply_run_settings(policy, load_config(None, ["--run.precision=bf16", "--run.compile_sampler=on"]).run)
    assert policy.precision == "bf16" and policy.compile_sampler
    apply_run_settings(policy, load_config(None, []).run)
    assert policy.precision == "fp32" and policy.compile_sampler == torch.cuda.is_available()
    assert policy.reference().precision == "fp32"  # the reference runs in the training precision


@pytest.mark.slow
def test_a_bf16_ppo_run_still_raises_the_toy_reward():
    """The settings of test_agents_ppo's toy-reward test, the whole run under bf16 autocast."""
    import numpy as np

    from tests.test_agents_ppo import make_agent

    agent = make_agent(
        batch=32,
        temperature=0.1,
        optim={"lr": 1e-2, "optimizer": "torch_adam"},
        kl={"coef": 0.01, "adaptive": False},
        halt={"kl_patience": 0},
    )
    agent.policy.set_precision("bf16")
    agent.reference.set_precision("bf16")
    scores = [agent.step()["objective/score"] for _ in range(8)]
    assert np.mean(scores[-3:]) > np.mean(scores[:3]) + 0.5, scores


def _fp16_agent():
    from agents.policy import PolicyWithValue as P
    from tests.test_agents_ppo import make_agent

    original = P.from_spec

    def fp16_spec(*a, **k):
        policy = original(*a, **k)
        policy.set_precision("fp16")
        return policy

    P.from_spec = fp16_spec
    try:
        return make_agent(batch=8, epochs=2, minibatches=2)
    finally:
        P.from_spec = original


def test_fp16_trains_with_a_loss_scaler_and_checkpoints_it():
    from tests.test_agents_ppo import make_agent

    plain = make_agent(batch=8, epochs=1, minibatches=1)
    assert not plain.scaler.is_enabled() and "scaler" not in plain.state_dict()
    agent = _fp16_agent()
    assert agent.policy.precision == agent.reference.precision == "fp16" and agent.scaler.is_enabled()
    before = [p.detach().clone() for p in agent.params]
    metrics = agent.step()
    assert all(p.dtype == torch.float32 for p in agent.params)
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.params))
    assert all(torch.isfinite(p).all() for p in agent.params)
    assert metrics["objective/kl"] == pytest.approx(0.0, abs=1e-2)
    state = agent.state_dict()
    assert state["scaler"]["scale"] > 0
    agent.load_state_dict(state)


def test_fp16_still_halts_on_a_nan_loss_and_on_endless_overflow(monkeypatch):
    from agents import ppo
    from agents.loop import TrainingHalted

    agent = _fp16_agent()
    real = ppo.ppo_loss

    def nan_loss(*a, **k):
        out = real(*a, **k)
        return out._replace(loss=out.loss * float("nan"))

    monkeypatch.setattr(ppo, "ppo_loss", nan_loss)
    with pytest.raises(TrainingHalted, match=r"non-finite gradient \(norm nan, loss nan\)"):
        agent.step()
    monkeypatch.setattr(ppo, "ppo_loss", real)

    agent = _fp16_agent()
    agent.step()
    agent.scaler.update(new_scale=3e38)  # every scaled loss overflows: a finite loss, infinite gradients
    agent.MAX_CONSECUTIVE_SKIPS = 3
    with pytest.raises(TrainingHalted, match=r"fp16 gradients overflowed 3 steps in a row \(loss scale now"):
        agent.step()
    assert agent.skipped_steps == 3
