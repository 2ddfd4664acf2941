"""``make demo`` / ``textenv demo``: the embedded default end to end, offline.

Loads the embedded SmolLM2-135M twice (the second load is timed: the safetensors cache makes it take
about a second), builds the ``BookSentiment-v0`` vector environment, samples fixed-length responses at
the task's temperature (pure ancestral sampling: no top-k/top-p, no EOS stop), steps the environment one
token column at a time, and prints each episode's truncated response and score: the mock sentiment
labeler's score, or the -1 penalty when there is no period at index >= 16 (PAPER.md §1.6).
"""

from __future__ import annotations

import time

import numpy as np


def run_demo(model: str = "smollm2-135m", episodes: int = 4, seed: int = 0) -> int:
    import gymnasium as gym

    import textenv  # noqa: F401
    from textenv.models import load_causal_lm
    from textenv.models.sampling import hf_sample_fn

    t0 = time.perf_counter()
    lm, tok = load_causal_lm(model)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    lm, tok = load_causal_lm(model)
    second = time.perf_counter() - t0
    print(f"[demo] model {model!r}: first load {first:.1f}s (includes imports), second load {second:.2f}s")

    envs = gym.make_vec(
        "BookSentiment-v0", num_envs=episodes, vectorization_mode="vector_entry_point", tokenizer=tok
    )
    cfg, task = envs.unwrapped.config, envs.unwrapped.task
    obs, _ = envs.reset(seed=seed)
    t0 = time.perf_counter()
    sample_fn = hf_sample_fn(lm, task.pad_id, cfg.temperature, task.vocab_size)
    responses = sample_fn(obs[:, : task.context_length], cfg.response_length, seed)
    print(
        f"[demo] sampled {episodes} x {cfg.response_length} tokens at T={cfg.temperature} in {time.perf_counter() - t0:.1f}s"
    )
    for t in range(cfg.response_length):
        obs, rewards, terminated, _, info = envs.step(responses[:, t])
    assert terminated.all()
    for i in range(episodes):
        print("-" * 100)
        print(f"QUERY    ...{task.decode(obs[i, : task.context_length])[-160:]}")
        print(f"RESPONSE {info['truncated_text'][i]!r}")
        note = "" if info["valid"][i] else "  (penalty: no period at index >= 16)"
        print(f"REWARD   {rewards[i]:+.3f}{note}")
    print("-" * 100)
    print(
        f"[demo] mean reward {np.mean(rewards):+.3f} over {episodes} episodes; valid {info['valid'].mean():.0%}"
    )
    return 0
