"""Reward-model throughput on this machine: comparisons/s for scoring and for training.

Synthetic best-of-4 questions shaped like the books tasks (64-token queries, 24-token responses) on the
embedded SmolLM2-135M. Measured in one run: scoring (no grad), full-model training (the paper's), and
the trainable-subset option (top ``k`` blocks): uncached (frozen lower part run every step, no grad)
and cached (the frozen features computed once, then only the top blocks train).

    python -m benchmarks.bench_reward [--questions 32] [--batch-size 8] [--top-blocks 2]
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, arg_parser, emit, metadata, timed
from rewards.comparisons import Comparison
from rewards.model import RewardModel
from rewards.train import RewardTrainConfig, cache_features, train_reward_model


def questions(n: int, vocab: int, seed: int = 0) -> list[Comparison]:
    rng = np.random.default_rng(seed)
    return [
        Comparison(
            task="BookSentiment-v0",
            query=[int(x) for x in rng.integers(0, vocab, 64)],
            samples=[[int(x) for x in rng.integers(0, vocab, 24)] for _ in range(4)],
            label={"best": int(rng.integers(4))},
        )
        for _ in range(n)
    ]


def parse_args(argv=None) -> argparse.Namespace:
    parser = arg_parser(__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--top-blocks", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "bench_reward.jsonl"))
    return parser.parse_args(argv)


def measurements(rm: RewardModel, items: list[Comparison], args) -> Iterator[dict]:
    """One row per mode, each as soon as it is measured: scoring, full-model training, and training the
    top ``--top-blocks`` blocks uncached, computing their features, and training them on the cache."""
    q = [c.query for c in items for _ in range(4)]
    r = [s for c in items for s in c.samples]
    rm.score(q[:8], r[:8])  # warm-up
    s = timed(lambda: rm.score(q, r, batch_size=32))
    yield {"mode": "score", "comparisons_per_s": len(items) / s, "sequences_per_s": len(q) / s}

    cfg = RewardTrainConfig(lr=1e-6, batch_size=args.batch_size)
    s = timed(lambda: train_reward_model(rm, items, cfg))
    yield {"mode": "train_full_model", "comparisons_per_s": len(items) / s}

    sub = RewardTrainConfig(lr=1e-6, batch_size=args.batch_size, top_blocks=args.top_blocks)
    s = timed(lambda: train_reward_model(rm, items, sub))
    yield {"mode": f"train_top{args.top_blocks}_uncached", "comparisons_per_s": len(items) / s}

    rm.set_trainable(args.top_blocks)
    feats: list = []
    s_feat = timed(lambda: feats.extend(cache_features(rm, items, batch_size=args.batch_size)))
    yield {"mode": f"features_top{args.top_blocks}", "comparisons_per_s": len(items) / s_feat}
    s = timed(lambda: train_reward_model(rm, items, sub, features=feats))
    yield {"mode": f"train_top{args.top_blocks}_cached_epoch", "comparisons_per_s": len(items) / s}


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    rm = RewardModel.from_spec(args.model)
    items = questions(args.questions, rm.lm.config.vocab_size)
    meta = {**metadata(), "model": args.model, "questions": args.questions, "batch_size": args.batch_size}
    out = Path(args.out)
    for row in measurements(rm, items, args):
        emit({"bench": "reward", **row, **meta}, out)


if __name__ == "__main__":
    main()
