"""Reward model from 2,000 mock best-of-4 sentiment comparisons (the paper's offline pipeline, small).

Inputs are two comparison stores written by ``textenv sample`` (books prompts, 4 samples per query from
the embedded SmolLM2-135M at T = 0.7): a training store (train split) and a held-out store (valid
split). The script labels pending questions with the noiseless mock sentiment labeler (VADER), trains
the reward model with the reference code's books preset (TF-style Adam, lr 5e-5, batch 32, one epoch,
linear decay) on a trainable subset (``--top-blocks``: the lower blocks are frozen and their features
computed once), normalises before and after training on 512 samples of the initial policy, and reports:
held-out accuracy (chance 25%), Spearman rho between reward-model and labeler scores of the held-out
samples, and the mean/std of the scores of 512 *fresh* policy samples after normalisation.

``--head-only`` trains only a head on the frozen trunk (features from ``--features-cache``; the top blocks
run once), for the paper's last-token head and the mean-pooled option, ``--head-epochs`` passes each.

    textenv sample --store runs/sentiment_train.db --queries 2000 --batch-size 256 --no-require-valid
    textenv sample --store runs/sentiment_valid.db --queries 400 --batch-size 256 --no-require-valid --split valid --seed 1
    python -m benchmarks.reward_sentiment --train-store runs/sentiment_train.db --valid-store runs/sentiment_valid.db
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, arg_parser, emit, metadata
from rewards.comparisons import ComparisonStore
from rewards.labelers import SentimentLabeler
from rewards.model import RewardModel
from rewards.pipeline import label_pending
from rewards.train import cache_features, get_preset, normalize, policy_samples, train_reward_model


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties."""

    def ranks(x):
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):  # average ranks of ties
            idx = x == v
            r[idx] = r[idx].mean()
        return r

    ra, rb = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
    return float(np.corrcoef(ra, rb)[0, 1])


FEATURES_FORMAT = "reward_sentiment.features.v1"
_FEATURE_FIELDS = ("hidden", "attention_mask", "position_ids", "pool_mask")


def save_features(path: Path, train: list, valid: list, seconds: float) -> None:
    """The frozen lower blocks' features as one safetensors file (``{split}/{i}/{field}``; never a pickle)."""
    from safetensors.torch import save_file

    tensors = {}
    for split, feats in (("train", train), ("valid", valid)):
        for i, f in enumerate(feats):
            for field in _FEATURE_FIELDS:
                t = getattr(f, field)
                if t is not None:  # each question's rows are a view of its batch's tensor: copy them out
                    tensors[f"{split}/{i}/{field}"] = t.detach().cpu().contiguous().clone()
    meta = {"format": FEATURES_FORMAT, "seconds": repr(float(seconds)), "train": str(len(train))}
    save_file(tensors, str(path), metadata={**meta, "valid": str(len(valid))})


def load_features(path: Path) -> tuple[list, list, float]:
    """(train features, valid features, seconds) from a :func:`save_features` file."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from textenv.models.trunk import Features

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise SystemExit(
            f"{path} is not a features cache of this script ({exc}); delete it to recompute"
        ) from None
    if meta.get("format") != FEATURES_FORMAT:
        raise SystemExit(f"{path} is not a {FEATURES_FORMAT} file; delete it to recompute")

    def split(name: str) -> list:
        return [
            Features(*(tensors.get(f"{name}/{i}/{field}") for field in _FEATURE_FIELDS))
            for i in range(int(meta[name]))
        ]

    return split("train"), split("valid"), float(meta["seconds"])


def parse_args(argv=None) -> argparse.Namespace:
    parser = arg_parser(__doc__)
    parser.add_argument("--train-store", required=True)
    parser.add_argument("--valid-store", required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--top-blocks", type=int, default=2)
    parser.add_argument(
        "--lrs", type=float, nargs="+", default=[5e-5, 2e-4], help="one run per learning rate"
    )
    parser.add_argument(
        "--epochs", type=int, default=1, help="passes over the labels (the paper: 1; a named deviation above)"
    )
    parser.add_argument(
        "--features-cache",
        default=None,
        help="safetensors file to save the frozen lower blocks' features to, or load them from if it exists",
    )
    parser.add_argument(
        "--head-only",
        action="store_true",
        help="from the cached features, run the top blocks once and train only a head on the frozen trunk "
        "(top_blocks=0), once per --pools entry",
    )
    parser.add_argument("--pools", nargs="+", default=["last", "mean"], choices=["last", "mean"])
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--head-epochs", type=int, default=10)
    parser.add_argument("--normalize-samples", type=int, default=512)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training questions")
    parser.add_argument("--rm-out", default="runs/rm_sentiment")
    parser.add_argument("--out", default=str(RESULTS / "reward_sentiment.jsonl"))
    return parser.parse_args(argv)


@dataclass
class Labelled:
    """The labelled questions of both stores, their frozen lower blocks' features and the labeler's
    scores of every held-out sample."""

    train_items: list
    valid_items: list
    train_feats: list
    valid_feats: list
    labeler_scores: np.ndarray


@dataclass
class PolicySamples:
    """Samples of the initial policy: for normalising (``norm_*``) and fresh ones to score after."""

    norm_q: list
    norm_r: list
    fresh_q: list
    fresh_r: list
    seconds: float


def labelled_items(args, labeler, task: str) -> tuple[list, list]:
    """Label the stores' pending questions with ``labeler``: (train questions, held-out questions)."""
    stores = {}
    for name, path in (("train", args.train_store), ("valid", args.valid_store)):
        with ComparisonStore(path) as store:
            label_pending(store, labeler, name="mock:sentiment:T=0", task=task)
            stores[name] = store.labelled(task=task)
    train_items = stores["train"][: args.limit]
    valid_items = stores["valid"]
    print(f"train {len(train_items)} questions, held-out {len(valid_items)}", flush=True)
    return train_items, valid_items


def draw_policy_samples(args, task: str) -> PolicySamples:
    from textenv.models import load_causal_lm

    lm, tok = load_causal_lm(args.model)
    t0 = time.perf_counter()
    norm_q = norm_r = fresh_q = fresh_r = []
    if args.normalize_samples:
        norm_q, norm_r = policy_samples(task, lm, tok, args.normalize_samples, seed=11, batch_size=256)
        fresh_q, fresh_r = policy_samples(task, lm, tok, args.normalize_samples, seed=12, batch_size=256)
    sample_s = time.perf_counter() - t0
    print(f"policy samples {sample_s:.0f}s", flush=True)
    return PolicySamples(norm_q, norm_r, fresh_q, fresh_r, sample_s)


def trunk_features(args, rm: RewardModel, train_items: list, valid_items: list) -> tuple[list, list, float]:
    """The frozen lower blocks' features (from ``--features-cache`` if it exists, else computed and saved
    there): (train features, held-out features, seconds to compute them)."""
    t0 = time.perf_counter()
    cache = Path(args.features_cache) if args.features_cache else None
    if cache is not None and cache.exists():
        train_feats, valid_feats, feature_s = load_features(cache)
        if len(train_feats) != len(train_items) or len(valid_feats) != len(valid_items):
            raise SystemExit(f"{cache} holds features for other stores; delete it to recompute")
    else:
        train_feats = cache_features(rm, train_items, batch_size=16)
        valid_feats = cache_features(rm, valid_items, batch_size=16)
        feature_s = time.perf_counter() - t0
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            save_features(cache, train_feats, valid_feats, feature_s)
    print(f"features {feature_s:.0f}s", flush=True)
    return train_feats, valid_feats, feature_s


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    task = "BookSentiment-v0"

    labeler = SentimentLabeler()
    train_items, valid_items = labelled_items(args, labeler, task)
    rm = RewardModel.from_spec(args.model, seed=0)
    rm.set_trainable(args.top_blocks)
    initial = copy.deepcopy({n: p.detach().clone() for n, p in rm.named_parameters() if p.requires_grad})
    samples = draw_policy_samples(args, task)
    train_feats, valid_feats, feature_s = trunk_features(args, rm, train_items, valid_items)
    labeler_scores = np.concatenate([labeler.scores("", c.sample_texts) for c in valid_items])
    data = Labelled(train_items, valid_items, train_feats, valid_feats, labeler_scores)
    if args.head_only:
        head_only(args, rm, data, samples)
        return
    lr_sweep(args, rm, initial, data, samples, feature_s)


def fit(model: RewardModel, data: Labelled, config, features=None, eval_features=None) -> tuple[dict, float]:
    """Train ``model`` on the training questions (evaluated on the held-out ones): (metrics, seconds)."""
    t0 = time.perf_counter()
    out = train_reward_model(
        model,
        data.train_items,
        config,
        eval_items=data.valid_items,
        features=data.train_feats if features is None else features,
        eval_features=data.valid_feats if eval_features is None else eval_features,
    )
    return out, time.perf_counter() - t0


def heldout_fields(out: dict, data: Labelled) -> dict:
    """The result fields every trained model reports: sizes, held-out accuracy, loss and rank agreement."""
    return {
        "train_questions": len(data.train_items),
        "heldout_questions": len(data.valid_items),
        "heldout_accuracy": out["eval/accuracy"],
        "chance": out["eval/chance"],
        "spearman_rm_vs_labeler": spearman(out["eval/scores"].reshape(-1), data.labeler_scores),
        "eval_loss": out["eval/loss"],
    }


def fresh_fields(model: RewardModel, samples: PolicySamples, before) -> dict:
    """Normalise ``model`` after training (``before``: the normalisation before it) and score the fresh
    policy samples."""
    after = normalize(model, samples.norm_q, samples.norm_r)
    fresh = model.score(samples.fresh_q, samples.fresh_r, batch_size=64)
    return {
        "norm_before": before,
        "norm_after": after,
        "fresh_policy_score_mean": float(fresh.mean()),
        "fresh_policy_score_std": float(fresh.std()),
        "seconds_policy_samples": samples.seconds,
    }


def lr_sweep(args, rm: RewardModel, initial: dict, data: Labelled, samples: PolicySamples, feature_s: float):
    """One run of the books preset per ``--lrs`` entry, each from the initial weights; the most accurate
    reward model is saved to ``--rm-out``."""
    best = None
    for lr in args.lrs:
        with torch.no_grad():
            for n, p in rm.named_parameters():
                if n in initial:
                    p.copy_(initial[n])
        before = normalize(rm, samples.norm_q, samples.norm_r)
        config = get_preset("books", lr=lr, top_blocks=args.top_blocks, epochs=args.epochs)
        out, train_s = fit(rm, data, config)
        result = {
            "bench": "reward_sentiment",
            **heldout_fields(out, data),
            **fresh_fields(rm, samples, before),
            "top_blocks": args.top_blocks,
            "lr": lr,
            "train_loss_first": out["train/loss_first"],
            "train_loss_last_10pct": out["train/loss_last_10pct"],
            "seconds_features": feature_s,
            "seconds_train": train_s,
            "train_comparisons_per_s_cached": len(data.train_items) / train_s,
            "feature_comparisons_per_s": (len(data.train_items) + len(data.valid_items)) / feature_s,
            "config": {
                "preset": "books",
                "optimizer": config.optimizer,
                "batch_size": config.batch_size,
                "epochs": config.epochs,
            },
            "model": args.model,
            **metadata(),
        }
        emit(result, out=Path(args.out))
        if best is None or result["heldout_accuracy"] > best:
            best = result["heldout_accuracy"]
            rm.save(args.rm_out)


def head_only(args, rm: RewardModel, data: Labelled, samples: PolicySamples) -> None:
    """Heads on the frozen trunk (``top_blocks=0``): the top blocks run once on the cached features."""
    from rewards.train import RewardTrainConfig
    from textenv.models.trunk import Features, top_forward

    t0 = time.perf_counter()
    with torch.no_grad():
        final = {
            name: [
                (top_forward(rm.base, f, args.top_blocks), f.attention_mask, f.position_ids) for f in feats
            ]
            for name, feats in (("train", data.train_feats), ("valid", data.valid_feats))
        }
    top_s = time.perf_counter() - t0
    for pool in args.pools:
        head = RewardModel.from_spec(args.model, seed=0, pool=pool)
        head.set_trainable(0)
        feats = {k: [Features(head._pooled(h, m), m, p) for h, m, p in v] for k, v in final.items()}
        config = RewardTrainConfig(lr=args.head_lr, batch_size=32, epochs=args.head_epochs, top_blocks=0)
        before = normalize(head, samples.norm_q, samples.norm_r) if samples.norm_q else {}
        out, train_s = fit(head, data, config, features=feats["train"], eval_features=feats["valid"])
        result = {
            "bench": "reward_sentiment",
            "mode": "head_on_frozen_trunk",
            "pool": pool,
            **heldout_fields(out, data),
            "lr": args.head_lr,
            "epochs": args.head_epochs,
            "seconds_top_blocks_once": top_s,
            "seconds_train": train_s,
            "model": args.model,
            **metadata(),
        }
        if samples.norm_q:
            result.update(fresh_fields(head, samples, before))
        emit(result, out=Path(args.out))
        if pool == "mean":
            head.save(args.rm_out + "_head_mean")


if __name__ == "__main__":
    main()
