"""Experiment 2 (paper Fig. 3): reward versus KL. PPO directly on the mock sentiment reward at several KL
targets, against the optimal frontier for the same reward estimated from samples of the initial policy.

For each beta the KL-regularised optimum is pi*(y|x) ∝ rho(y|x) exp(r(x,y)/beta); self-normalised
importance weights over ``--samples`` responses of rho per prompt estimate its reward and KL
(:func:`textenv.metrics.optimal_frontier`). Each PPO point is its final policy's KL to rho and mean
mock reward on the frontier's own prompts (``--final-samples`` responses each), with its win rate over
the initial policy on ``--eval-prompts`` held-out prompts judged by the labeler.

    python -m benchmarks.exp_reward_vs_kl                        # small: targets 1 and 4, minutes
    python -m benchmarks.exp_reward_vs_kl --full                 # more targets, samples and episodes
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, arg_parser, emit, metadata, out_path
from benchmarks.experiments import (
    fixed_length_overrides,
    plot,
    ppo_config,
    run_ppo,
    win_rate_vs_initial,
    write_rows,
)

TASK = "MockSentiment-v0"


def frontier(lm, tok, args, overrides: dict) -> tuple[list[dict], float]:
    """The frontier's points and rho's mean mock reward on the same samples (the frontier at KL 0)."""
    from textenv.metrics import optimal_frontier
    from textenv.models.sampling import hf_sample_fn
    from textenv.sampler import sample_task
    from textenv.scorers import MockSentimentScore
    from textenv.task import make_task

    task = make_task(TASK, tok, **overrides)
    # a prompt's samples share one prefill (they are consecutive rows), in batches of 512 rows
    sample_fn = hf_sample_fn(lm, task.pad_id, args.temperature, task.vocab_size, share_prefix="auto")
    drawn = sample_task(task, sample_fn, args.prompts, k=args.samples, seed=args.seed, batch_size=512)
    gold = MockSentimentScore(tok)
    rewards = gold(None, drawn.responses).reshape(args.prompts, args.samples)
    betas = np.geomspace(0.05, 20, 40)
    return optimal_frontier(rewards, betas), float(rewards.mean())


def parse_args(argv=None) -> argparse.Namespace:
    p = arg_parser(__doc__)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--targets", type=float, nargs="+", default=[1.0, 4.0])
    p.add_argument("--full", action="store_true")
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument(
        "--horizon", type=int, default=None, help="the KL controller's horizon (default: half the episodes)"
    )
    p.add_argument(
        "--stop-at-target",
        action="store_true",
        help="end each PPO run once its KL reaches its target (kl.stop_at_target)",
    )
    p.add_argument(
        "--stop-window",
        type=int,
        default=1,
        help="with --stop-at-target: stop when the mean KL of the last N iterations reaches the target "
        "(kl.stop_window; 1: one iteration's KL)",
    )
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--samples", type=int, default=32, help="samples of rho per prompt for the frontier")
    p.add_argument(
        "--eval-prompts",
        type=int,
        default=64,
        help="held-out prompts for the win rate over the initial policy",
    )
    p.add_argument(
        "--final-samples",
        type=int,
        default=8,
        help="samples of each final PPO policy per frontier prompt (its KL and reward, where the frontier is)",
    )
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--query-length", type=int, default=32)
    p.add_argument("--response-length", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default="runs/exp_reward_vs_kl")
    p.add_argument("--plot", default=str(RESULTS / "exp_reward_vs_kl.png"))
    p.add_argument("--out", default=str(RESULTS / "exp_reward_vs_kl.jsonl"))
    args = p.parse_args(argv)
    if args.stop_window < 1:
        p.error(f"--stop-window {args.stop_window}: give a number of iterations, at least 1")
    if args.full:
        args.targets, args.iterations, args.batch, args.prompts, args.samples = (
            [0.5, 1, 2, 4, 8],
            40,
            64,
            64,
            256,
        )
    return args


def final_point(agent, lm, tok, args, overrides: dict) -> tuple[float, float]:
    """The final policy's (KL to rho, mean mock reward) on the frontier's own prompts (the same draw),
    ``--final-samples`` responses each: measured where the frontier is, so the two compare prompt for
    prompt, and on the policy PPO ended with (not the mix of the last iterations' rollouts)."""
    from agents.policy import KLRecordingSampler, PolicyWithValue
    from textenv.models.sampling import generator_sample_fn
    from textenv.sampler import sample_task
    from textenv.scorers import MockSentimentScore
    from textenv.task import make_task

    task = make_task(TASK, tok, **overrides)
    rho = PolicyWithValue(lm, task.pad_id, args.temperature, vocab_size=task.vocab_size)
    sample = KLRecordingSampler(agent.policy, rho)
    drawn = sample_task(
        task,
        generator_sample_fn(sample),
        args.prompts,
        k=args.final_samples,
        seed=args.seed,
        sample_seed=args.seed + 1,
    )
    rewards = MockSentimentScore(tok)(None, drawn.responses)
    return float(sample.kls.mean()), float(np.mean(rewards))


def ppo_point(
    args, target: float, gold, front: list[dict], rho_reward: float, final=None
) -> tuple[tuple[float, float], dict]:
    """PPO at KL target ``target``: the final policy's (KL, mean mock reward) on the frontier's prompts
    (:func:`final_point`, through ``final(agent)``, which also gives the win rate over rho on held-out
    prompts), and its result row: that point, the frontier's reward at that KL, ``frontier_fraction``
    (the share of the frontier's gain over rho that PPO got, ``(ppo - rho) / (frontier - rho)``), and
    the training rollouts' mean KL and reward over the last quarter of the iterations (``tail_kl``,
    ``tail_reward``: other prompts, several policies)."""
    cfg = ppo_config(
        Path(args.out_dir) / f"target-{target:g}",
        task=TASK,
        model=args.model,
        iterations=args.iterations,
        batch=args.batch,
        target_kl=target,
        lr=args.lr,
        horizon=args.horizon,
        stop_at_target=args.stop_at_target,
        stop_window=args.stop_window,
        seed=args.seed,
        extra=(f"--policy.temperature={args.temperature}",),
        query_length=args.query_length,
        response_length=args.response_length,
    )
    rows, agent = run_ppo(cfg, gold)
    write_rows(Path(args.out_dir) / f"target-{target:g}.jsonl", rows)
    tail = rows[-max(1, len(rows) // 4) :]
    tail_kl, tail_reward = np.mean([r["kl"] for r in tail]), np.mean([r["gold"] for r in tail])
    kl, reward, (win, win_se) = (
        final(agent) if final is not None else (float(tail_kl), float(tail_reward), (None, None))
    )
    # the frontier's reward at this KL (linear interpolation along the KL axis)
    ks, rs = zip(*sorted((f["kl"], f["reward"]) for f in front))
    at_kl = float(np.interp(kl, ks, rs))
    row = {
        "benchmark": "exp_reward_vs_kl",
        "target_kl": target,
        "ppo_kl": kl,
        "ppo_reward": reward,
        "ppo_point": "final policy, frontier prompts" if final is not None else "training tail",
        "tail_kl": float(tail_kl),
        "tail_reward": float(tail_reward),
        "initial_reward": rows[0]["gold"],
        "frontier_reward_at_ppo_kl": at_kl,
        "rho_reward": rho_reward,
        "frontier_fraction": (reward - rho_reward) / (at_kl - rho_reward) if at_kl > rho_reward else None,
        "iterations": len(rows),
        "episodes": rows[-1]["episodes"],
        "final_samples": args.final_samples if final is not None else None,
        # the paper's measure, as in every experiment: the final policy against rho on the same held-out
        # prompts, judged by the labeler (ties one half)
        "win_rate_vs_initial": win,
        "win_rate_se": win_se,
        "eval_prompts": args.eval_prompts if final is not None else None,
        "model": args.model,
        "seed": args.seed,
        "lr": args.lr,
        "batch": args.batch,
        "horizon": args.horizon,
        "stop_window": args.stop_window if args.stop_at_target else None,
        **metadata(),
    }
    return (kl, reward), row


def main(argv=None) -> list[dict]:
    args = parse_args(argv)

    from rewards.labelers import SentimentLabeler
    from textenv.models import load_causal_lm
    from textenv.scorers import MockSentimentScore

    t0 = time.perf_counter()
    lm, tok = load_causal_lm(args.model)
    overrides = fixed_length_overrides(args.query_length, args.response_length)
    front, rho_reward = frontier(lm, tok, args, overrides)
    gold = MockSentimentScore(tok).score_text
    points, results = {}, []

    labeler = SentimentLabeler()  # the mock reward's labeler: argmax of VADER = argmax of its log-odds

    def final(agent):
        kl, reward = final_point(agent, lm, tok, args, overrides)
        win = win_rate_vs_initial(
            agent, lm, tok, labeler, TASK, args.eval_prompts, args.seed + 7, **overrides
        )
        return kl, reward, win

    for target in args.targets:
        points[f"PPO, target {target:g}"], row = ppo_point(args, target, gold, front, rho_reward, final)
        results.append(row)
    plot(
        Path(args.plot),
        {"optimal frontier (importance-weighted)": [(f["kl"], f["reward"]) for f in front]},
        "KL(pi || rho), nats",
        "mock reward",
        f"reward vs KL ({args.model})",
        points=points,
    )
    for row in results:
        row["seconds"] = time.perf_counter() - t0
        emit(row, out_path(args.out))
    return results


if __name__ == "__main__":
    main()
