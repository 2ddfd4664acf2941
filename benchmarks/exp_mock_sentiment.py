"""Experiment 1 (paper Fig. 2): RL directly on the mock reward versus RL on reward models learned from
N mock best-of-4 labels, on ``MockSentiment-v0`` with the embedded model.

The mock reward r_s is the log-odds of positive sentiment (VADER here; PAPER.md §1.10); the simulated
labeler picks the highest-r_s of four samples of the initial policy. Each setting trains the same PPO
(top-2 blocks, adaptive KL) and records, per iteration, the *mock* reward of its own responses, so the
curves share one y-axis. The win rate of each final policy over the initial one (judged by the labeler
on held-out prompts) is experiment 4's measure, reported here too.

    python -m benchmarks.exp_mock_sentiment                      # small: 64 and 256 labels, minutes
    python -m benchmarks.exp_mock_sentiment --full               # the paper's 500, 2,000 and 5,000 labels
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, add_rm_normalize_arg, arg_parser, emit, metadata, out_path
from benchmarks.experiments import (
    fixed_length_overrides,
    plot,
    ppo_config,
    run_ppo,
    win_rate_vs_initial,
    write_rows,
)

TASK = "MockSentiment-v0"


def reward_for(args, name: str, n: int, lm, tok, labeler, out: Path, overrides: dict):
    """The PPO reward of a setting: the built-in mock reward (``n = 0``) or a reward model learned from
    ``n`` mock labels, saved under ``out/name``: (reward spec, its held-out accuracy or ``None``)."""
    from rewards.pipeline import mock_reward_model

    if not n:
        return "builtin", None
    _, metrics = mock_reward_model(
        TASK,
        lm,
        tok,
        labeler,
        model_spec=args.model,
        questions=n,
        out_dir=out / name,
        heldout_questions=args.heldout,
        seed=args.seed,
        normalize=args.rm_normalize,
        layer=args.rm_layer,
        epochs=args.rm_epochs,
        **overrides,
    )
    return str(out / name / "reward_model"), metrics.get("eval/accuracy")


def run_setting(args, name: str, n: int, lm, tok, gold, labeler, overrides: dict) -> tuple[dict, list]:
    """One setting's PPO run: (its result row, its curve of (episodes, mock reward))."""
    out = Path(args.out_dir)
    t0 = time.perf_counter()
    reward, accuracy = reward_for(args, name, n, lm, tok, labeler, out, overrides)
    cfg = ppo_config(
        out / name / "ppo",
        task=TASK,
        model=args.model,
        reward=reward,
        iterations=args.iterations,
        batch=args.batch,
        target_kl=args.target_kl,
        lr=args.lr,
        horizon=args.horizon,
        stop_at_target=args.stop_at_target,
        seed=args.seed,
        query_length=args.query_length,
        response_length=args.response_length,
    )
    rows, agent = run_ppo(cfg, gold)
    write_rows(out / name / "curve.jsonl", rows)
    curve = [(r["episodes"], r["gold"]) for r in rows]
    win, win_se = win_rate_vs_initial(
        agent, lm, tok, labeler, TASK, args.eval_prompts, args.seed + 7, **overrides
    )
    first, last = np.mean([r["gold"] for r in rows[:2]]), np.mean([r["gold"] for r in rows[-2:]])
    row = {
        "benchmark": "exp_mock_sentiment",
        "setting": name,
        "labels": n,
        "rm_heldout_accuracy": accuracy,
        "mock_reward_first": float(first),
        "mock_reward_last": float(last),
        "kl_last": rows[-1]["kl"],
        "win_rate_vs_initial": win,
        "win_rate_se": win_se,
        "eval_prompts": args.eval_prompts,
        "episodes": rows[-1]["episodes"],
        "seconds": time.perf_counter() - t0,
        "model": args.model,
        "seed": args.seed,
        "rm_layer": args.rm_layer,
        "rm_epochs": args.rm_epochs,
        "target_kl": args.target_kl,
        "stopped_at_target": args.stop_at_target and rows[-1]["kl"] >= args.target_kl,
        **metadata(),
    }
    return row, curve


def run(args) -> list[dict]:
    from rewards.labelers import SentimentLabeler
    from textenv.models import load_causal_lm
    from textenv.scorers import MockSentimentScore

    lm, tok = load_causal_lm(args.model)
    gold = MockSentimentScore(tok).score_text
    labeler = SentimentLabeler()  # argmax of VADER = argmax of its log-odds
    overrides = fixed_length_overrides(args.query_length, args.response_length)
    settings = [("direct", 0)] + [(f"rm-{n}", n) for n in args.labels]
    results, curves = [], {}
    for name, n in settings:
        row, curves[name] = run_setting(args, name, n, lm, tok, gold, labeler, overrides)
        results.append(row)
    plot(
        Path(args.plot),
        curves,
        "episodes",
        "mock reward of the policy's responses",
        f"{TASK}: direct vs reward models ({args.model})",
    )
    return results


def parser() -> argparse.ArgumentParser:
    p = arg_parser(__doc__)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--labels", type=int, nargs="+", default=[64, 256])
    p.add_argument(
        "--full", action="store_true", help="the paper's label counts 500, 2000, 5000 and longer runs"
    )
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--query-length", type=int, default=32)
    p.add_argument("--response-length", type=int, default=16)
    p.add_argument("--heldout", type=int, default=32)
    p.add_argument("--eval-prompts", type=int, default=32)
    p.add_argument("--target-kl", type=float, default=3.0)
    p.add_argument(
        "--horizon", type=int, default=None, help="the KL controller's horizon (default: half the episodes)"
    )
    p.add_argument(
        "--stop-at-target",
        action="store_true",
        help="end each PPO run once its KL reaches --target-kl (kl.stop_at_target: compare at equal KL)",
    )
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    add_rm_normalize_arg(p)
    p.add_argument(
        "--rm-layer",
        type=int,
        default=None,
        help="the reward head reads this block's output (the demo's 2; default: the final layer, the paper's)",
    )
    p.add_argument("--rm-epochs", type=int, default=10, help="epochs of the reward head over its labels")
    p.add_argument("--out-dir", default="runs/exp_mock_sentiment")
    p.add_argument("--plot", default=str(RESULTS / "exp_mock_sentiment.png"))
    p.add_argument("--out", default=str(RESULTS / "exp_mock_sentiment.jsonl"))
    return p


def main(argv=None) -> list[dict]:
    args = parser().parse_args(argv)
    if args.full:
        args.labels, args.iterations, args.batch = [500, 2000, 5000], 60, 64
    results = run(args)
    for row in results:
        emit(row, out_path(args.out))
    return results


if __name__ == "__main__":
    main()
