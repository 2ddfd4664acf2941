"""Environment overhead vs one decode step of the embedded model.

For B in (1, 8, 64, 256): the time per token of the single env (stepped B times) and of the vector env
(one batched step), with a trivial reward, and, in the same run, the time of one KV-cached decode step
of the embedded SmolLM2-135M at batch B. The goal: the vector env's overhead per token is under 5% of a
decode step.

    python -m benchmarks.bench_env [--batch-sizes 1 8 64 256] [--model smollm2-135m] [--device cpu]
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import textenv  # noqa: F401  (registers the ids)
from benchmarks.common import RESULTS, emit, metadata


def trivial_reward(queries, responses):
    return np.zeros(len(responses))


def time_vector_env(batch: int, repeats: int) -> float:
    """Seconds per env step (one token for every row), averaged over whole episodes incl. reset."""
    envs = gym.make_vec(
        "BookSentiment-v0", num_envs=batch, vectorization_mode="vector_entry_point", reward_fn=trivial_reward
    )
    length = envs.unwrapped.config.response_length
    rng = np.random.default_rng(0)
    actions = rng.integers(0, envs.unwrapped.task.vocab_size, size=(length, batch))
    envs.reset(seed=0)
    for a in actions:  # warm-up episode
        envs.step(a)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        envs.reset(seed=r + 1)
        for a in actions:
            envs.step(a)
        times.append((time.perf_counter() - t0) / length)
    return statistics.median(times)


def time_single_env(repeats: int) -> float:
    env = gym.make("BookSentiment-v0", reward_fn=trivial_reward)
    length = env.unwrapped.config.response_length
    actions = np.random.default_rng(0).integers(0, env.unwrapped.task.vocab_size, size=length)
    times = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        env.reset(seed=r)
        for a in actions:
            env.step(int(a))
        times.append((time.perf_counter() - t0) / length)
    return statistics.median(times[1:])


def time_decode_step(model, batch: int, context: int, device: str, steps: int = 6) -> float:
    """Seconds of one KV-cached decode step (1 new token per row) after a ``context``-token prefill."""
    import torch

    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, context), device=device)
    times = []
    # transformers >= 5.2x names the KV cache `cache` (formerly `past_key_values`)
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        past = out[key]
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(steps):
            if device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model(input_ids=token, use_cache=True, **{key: past})
            if device != "cpu":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            past = out[key]
            token = out.logits[:, -1].argmax(-1, keepdim=True)
    return statistics.median(times[1:])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "bench_env.jsonl"))
    args = parser.parse_args(argv)

    from textenv.models import load_causal_lm

    model, _ = load_causal_lm(args.model, device=args.device)
    meta = metadata(args.device)
    single = time_single_env(args.repeats)
    for batch in args.batch_sizes:
        vec = time_vector_env(batch, args.repeats)
        decode = time_decode_step(model, batch, context=64 + 12, device=args.device)
        emit(
            {
                "bench": "env",
                "batch": batch,
                "single_env_s_per_token_x_B": single * batch,
                "single_env_steps_per_s": 1.0 / single,
                "vector_env_s_per_step": vec,
                "vector_env_tokens_per_s": batch / vec,
                "decode_step_s": decode,
                "vector_overhead_pct_of_decode": 100.0 * vec / decode,
                "single_overhead_pct_of_decode": 100.0 * single * batch / decode,
                "model": args.model,
                **meta,
            },
            out=Path(args.out),
        )


if __name__ == "__main__":
    main()
