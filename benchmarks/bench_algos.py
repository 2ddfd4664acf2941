"""Episodes per second of the built-in PPO, RLOO, GRPO and stable-baselines3 PPO on the same model and env.

All of them train ``--model`` (a tiny GPT-2 by default: random weights, the GPT-2 vocabulary) on
``BookSentiment-v0`` with the VADER score, ``--batch`` episodes of ``--response-length`` tokens per iteration, ``--epochs`` passes over
each batch, in one process, one after the other. SB3 PPO uses :class:`agents.sb3.TransformerPolicy`
with the KL callback, ``n_envs = batch`` (a ``DummyVecEnv``) and ``n_steps = response_length`` so that a
rollout holds the same episodes, and ``batch_size = n_envs * n_steps`` (one minibatch per epoch, as the
built-in PPO's default). ``sb3`` is the policy with its acting KV cache and prefix-shared evaluation
(``kv_cache=True``), ``sb3-nocache`` the per-row full pass (the path before issue 17), so one run shows
both. For SB3 the run also splits the time into the transformer forward passes while acting, the env
steps and the rest of rollout collection, and training.

    python -m benchmarks.bench_algos [--model tiny-gpt2] [--batch 32] [--iterations 5]
    python -m benchmarks.bench_algos --model smollm2-135m --batch 4 --query-length 16 --response-length 8 \
        --epochs 2 --iterations 2 --algos ppo,sb3-nocache,sb3 --threads 2
"""

from __future__ import annotations

import time

import gymnasium as gym
import torch

import textenv  # noqa: F401
from benchmarks.common import RESULTS, arg_parser, emit, metadata, out_path

TASK = "BookSentiment-v0"


def env_overrides(args) -> dict:
    return dict(
        query_length=args.query_length,
        response_length=args.response_length,
        min_query_length=min(8, args.query_length),
        truncate_token=None,
        truncate_after=0,
    )


def run_builtin(algo: str, args) -> dict:
    import dataclasses

    from agents.algos import ALGOS
    from agents.policy import PolicyWithValue
    from agents.sections import OptimConfig
    from textenv.vector import TextVectorEnv

    policy = PolicyWithValue.from_spec(args.model, temperature=0.7, seed=0)
    envs = TextVectorEnv(TASK, num_envs=args.batch, tokenizer=policy.tokenizer, **env_overrides(args))
    entry = ALGOS[algo]
    common = dict(batch_size=args.batch, total_episodes=args.batch * 1000, epochs=args.epochs, seed=0)
    if "k" in {f.name for f in dataclasses.fields(entry.config)}:
        common["k"] = 4  # group algorithms: 4 responses per prompt
    agent = entry.agent(policy, envs, entry.config(**common, optim=OptimConfig(lr=1e-4)))
    agent.step()  # warm-up
    t0 = time.perf_counter()
    phases: dict[str, float] = {}
    for _ in range(args.iterations):
        m = agent.step()
        for key in ("time/rollout", "time/update"):
            phases[key] = phases.get(key, 0.0) + m[key]
    seconds = time.perf_counter() - t0
    return {
        "algo": f"textenv {algo}",
        "episodes_per_s": args.iterations * args.batch / seconds,
        "rollout_share": phases["time/rollout"] / seconds,
        "update_share": phases["time/update"] / seconds,
    }


def sb3_model(args, cache: bool = True):
    """SB3 PPO with :class:`agents.sb3.TransformerPolicy` on ``n_envs = batch`` envs: (model, vec env)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from agents.sb3 import TransformerPolicy

    def make():
        return gym.make(
            TASK, tokenizer=args.model if args.model.startswith("tiny") else None, **env_overrides(args)
        )

    envs = make_vec_env(make, n_envs=args.batch, seed=0)
    model = PPO(
        TransformerPolicy,
        envs,
        n_steps=args.response_length,
        batch_size=args.batch * args.response_length,
        n_epochs=args.epochs,
        learning_rate=1e-4,
        seed=0,
        policy_kwargs=dict(model=args.model, temperature=0.7, **({} if cache else {"kv_cache": False})),
    )
    return model, envs


def time_phases(model, envs, timer: dict):
    """Wrap the policy's forward and the env's step to add their seconds to ``timer``; returns the KL
    callback that adds each rollout's collection time."""
    from agents.sb3 import KLPenaltyCallback

    policy_forward = model.policy.forward
    env_step = envs.step

    def timed_forward(*a, **k):
        t = time.perf_counter()
        out = policy_forward(*a, **k)
        timer["forward"] += time.perf_counter() - t
        return out

    def timed_step(*a, **k):
        t = time.perf_counter()
        out = env_step(*a, **k)
        timer["env"] += time.perf_counter() - t
        return out

    class Phases(KLPenaltyCallback):
        def _on_rollout_start(self):
            self.t = time.perf_counter()

        def _on_rollout_end(self):
            super()._on_rollout_end()
            timer["collect"] += time.perf_counter() - self.t

    model.policy.forward = timed_forward
    envs.step = timed_step
    return Phases()


def run_sb3(args, cache: bool = True) -> dict:
    from agents.sb3 import KLPenaltyCallback

    model, envs = sb3_model(args, cache)
    timer = {"forward": 0.0, "collect": 0.0, "env": 0.0}
    per_rollout = args.batch * args.response_length
    model.learn(per_rollout, callback=KLPenaltyCallback())  # warm-up
    phases = time_phases(model, envs, timer)
    t0 = time.perf_counter()
    model.learn(per_rollout * args.iterations, callback=phases, reset_num_timesteps=False)
    seconds = time.perf_counter() - t0
    return {
        "algo": "sb3 ppo" if cache else "sb3 ppo (no cache)",
        "episodes_per_s": args.iterations * args.batch / seconds,
        "rollout_share": timer["collect"] / seconds,
        "update_share": 1 - timer["collect"] / seconds,
        "rollout_forward_share": timer["forward"] / seconds,
        "rollout_env_share": timer["env"] / seconds,
    }


def main(argv=None) -> None:
    p = arg_parser(__doc__)
    p.add_argument("--model", default="tiny-gpt2")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--query-length", type=int, default=16)
    p.add_argument("--response-length", type=int, default=16)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument(
        "--algos",
        default="ppo,rloo,grpo,sb3",
        help="comma-separated, run in this order: ppo, rloo, grpo, sb3, sb3-nocache (SB3 PPO with "
        "kv_cache=False: one full pass per observation row, the path before issue 17)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--out", default=str(RESULTS / "algos.jsonl"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    unknown = set(algos) - {"ppo", "rloo", "grpo", "sb3", "sb3-nocache"}
    if unknown or "ppo" not in algos:
        p.error(f"--algos: choose among ppo, rloo, grpo, sb3, sb3-nocache (ppo included); got {args.algos!r}")
    rows = [
        run_sb3(args, cache=name == "sb3") if name.startswith("sb3") else run_builtin(name, args)
        for name in algos
    ]
    base = next(r["episodes_per_s"] for r in rows if r["algo"] == "textenv ppo")
    meta = metadata()
    for row in rows:
        row["vs_textenv_ppo"] = row["episodes_per_s"] / base
        emit(
            {
                "benchmark": "algos",
                **row,
                "model": args.model,
                "batch": args.batch,
                "tokens": f"{args.query_length}+{args.response_length}",
                "epochs": args.epochs,
                "iterations": args.iterations,
                **meta,
            },
            out_path(args.out),
        )
    print(
        "\n".join(
            f"{r['algo']:14s} {r['episodes_per_s']:8.2f} episodes/s ({r['vs_textenv_ppo']:.2f}x textenv ppo)"
            for r in rows
        )
    )


if __name__ == "__main__":
    main()
