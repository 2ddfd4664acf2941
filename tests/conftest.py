"""Shared fixtures: tiny random models (milliseconds), the real embedded model only where needed."""

from __future__ import annotations

import os

import pytest

from textenv.assets import SETUP_COMMAND

# the CLI's glibc setting (agents.allocator) is process-wide and cannot be undone: tests that call the CLI
# in-process must not change it for the whole session (tests/test_allocator.py checks it in subprocesses)
os.environ.setdefault("TEXTENV_MALLOC", "default")


@pytest.fixture(scope="session")
def tiny_gpt2():
    from textenv.models import load_causal_lm

    return load_causal_lm("tiny-gpt2", seed=0)


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    from textenv.models.tokenization import load_gpt2_tokenizer

    return load_gpt2_tokenizer()


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M; skipped (naming the set-up command) when it is not in the cache."""
    from textenv.models import embedded_available, load_causal_lm

    if not embedded_available():
        pytest.skip(f"embedded model not in the cache: run {SETUP_COMMAND}")
    return load_causal_lm("smollm2-135m")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """Point TEXTENV_CACHE at an empty folder."""
    monkeypatch.setenv("TEXTENV_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def normalisation_events(monkeypatch):
    """Record, in order, each reward-model normalisation's samples as ``("normalize", seed, queries,
    responses)`` and each training as ``("train",)`` (spies on :mod:`rewards.train`)."""
    import rewards.train

    events = []
    samples, train = rewards.train.policy_samples, rewards.train.train_reward_model

    def spy_samples(task, model, tokenizer, n, *, seed=0, **kw):
        q, r = samples(task, model, tokenizer, n, seed=seed, **kw)
        events.append(("normalize", seed, q, r))
        return q, r

    def spy_train(*args, **kw):
        events.append(("train",))
        return train(*args, **kw)

    monkeypatch.setattr(rewards.train, "policy_samples", spy_samples)
    monkeypatch.setattr(rewards.train, "train_reward_model", spy_train)
    return events
