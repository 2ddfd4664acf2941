"""Reward-model training (one epoch, linear LR decay to 0) and gain/bias normalisation (PAPER.md §1.3).

Must-haves 8 and 9: the learning rate at the k-th batch is ``lr * (1 - k * B / N)``; the number of
optimizer steps is ``ceil(N / B)`` per epoch; Adam is TF-style with eps 1e-5 by default; dropout is off
(the loader sets every dropout to 0). :func:`normalize` sets gain and bias so that scores of samples
from the initial policy have mean 0 and std 1 (population std, as the reference code's moments).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from rewards.comparisons import Comparison
from rewards.losses import best_of_n_loss, scalar_compare_loss, scalar_rating_loss
from rewards.model import Features, RewardModel
from rewards.optim import linear_decay, make_optimizer

logger = logging.getLogger(__name__)


# strict types, as every train-policy table: a bool is not read as 1, nor 1 as True
@dataclass(frozen=True, config=ConfigDict(allow_inf_nan=False, extra="forbid", strict=True))
class RewardTrainConfig:
    """Reward-model training settings; defaults are the reference code's books values (§1.3 table).

    Attributes:
        lr: base learning rate, annealed linearly to 0 over the run.
        batch_size: questions per optimizer step.
        epochs: passes over the labels (the paper: 1, to avoid overfitting).
        optimizer: ``tf_adam`` (reference code) or ``torch_adam``.
        adam_eps: Adam epsilon (1e-5).
        fused: ``tf_adam`` through PyTorch's fused kernel, equal to the per-tensor loop within float
            rounding (:mod:`rewards.optim`); False: the loop.
        top_blocks: None trains the whole model (the paper); k trains only the top k blocks + head.
        seed: shuffle seed (the same permutation on every rank in the reference code).
    """

    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(1, ge=1)
    optimizer: Literal["tf_adam", "torch_adam"] = "tf_adam"
    adam_eps: float = Field(1e-5, gt=0)
    fused: bool = True
    top_blocks: int | None = Field(None, ge=0)
    seed: int = Field(0, ge=0)


PRESETS: dict[str, RewardTrainConfig] = {
    "books": RewardTrainConfig(lr=5e-5, batch_size=32),  # launch.py, sentiment/descriptiveness
    "summarize": RewardTrainConfig(lr=2.5e-5, batch_size=16),  # launch.py, tldr/cnndm
    "paper-books": RewardTrainConfig(lr=1.77e-5, batch_size=8),  # paper (774M), style tasks
    "paper-summarize": RewardTrainConfig(lr=1.77e-5, batch_size=32),  # paper (774M), summarization
}


def get_preset(name: str, **overrides) -> RewardTrainConfig:
    if name not in PRESETS:
        raise ValueError(f"Unknown reward-training preset {name!r}; choose from {sorted(PRESETS)}.")
    return replace(PRESETS[name], **overrides)


# --------------------------------------------------------------------------------------- batching
def _check_items(items: Sequence[Comparison]) -> str:
    if not items:
        raise ValueError("No labelled comparisons to train on; label some first (textenv label).")
    types = {c.label_type for c in items}
    if len(types) != 1:
        raise ValueError(f"Mixed label types {sorted(types)}; train one label type at a time.")
    unlabelled = [c.id for c in items if c.label is None]
    if unlabelled:
        raise ValueError(f"Comparisons {unlabelled[:5]} have no label; pass only labelled comparisons.")
    ns = {len(c.samples) for c in items}
    if len(ns) != 1:
        raise ValueError(f"Questions have different sample counts {sorted(ns)}; use one N per run.")
    return types.pop()


def _question_ids(rm: RewardModel, batch: Sequence[Comparison]) -> tuple[torch.Tensor, int]:
    """Ids of every sample of every question and the column where the responses start."""
    n = len(batch[0].samples)
    return rm.sequences_with_start(
        [c.query for c in batch for _ in range(n)], [s for c in batch for s in c.samples]
    )


def cache_features(
    rm: RewardModel,
    items: Sequence[Comparison],
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> list[Features]:
    """The frozen lower part's output for every question, computed once (needs ``rm.set_trainable(k)``).

    Returns one :class:`Features` of shape (N, T_q, ...) per question, in ``items`` order.
    """
    out: list[Features] = []
    for i in range(0, len(items), batch_size):
        batch = list(items[i : i + batch_size])
        n = len(batch[0].samples)
        feats = rm.features(*_question_ids(rm, batch))
        for j in range(len(batch)):
            out.append(feats.index(slice(j * n, (j + 1) * n)))
        if progress is not None:
            progress(len(batch))
    return out


def _stack_features(feats: Sequence[Features]) -> Features:
    """Concatenate per-question features along the batch axis, right-padding the time axis."""
    t = max(f.attention_mask.shape[1] for f in feats)

    def pad(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, 0, 0, t - x.shape[1]) if x.dim() == 3 else (0, t - x.shape[1]))

    pool = None if feats[0].pool_mask is None else torch.cat([pad(f.pool_mask) for f in feats])
    # top_blocks = 0: (N, d) final features; only the masks have a time axis
    hidden = [f.hidden if f.hidden.dim() == 2 else pad(f.hidden) for f in feats]
    return Features(
        torch.cat(hidden),
        torch.cat([pad(f.attention_mask) for f in feats]),
        torch.cat([pad(f.position_ids) for f in feats]),
        pool,
    )


def batch_scores(
    rm: RewardModel, batch: Sequence[Comparison], features: Sequence[Features] | None = None
) -> torch.Tensor:
    """Scores of every sample of every question in ``batch``, shape (B, N).

    With ``features`` (this batch's cached features) only the trainable top blocks run.
    """
    n = len(batch[0].samples)
    if features is not None:
        scores = rm.score_features(_stack_features(features))
    elif rm.top_blocks is not None:
        scores = rm.score_features(rm.features(*_question_ids(rm, batch)))
    else:
        scores = rm(*_question_ids(rm, batch))
    return scores.view(len(batch), n)


def batch_loss(
    rm: RewardModel, batch: Sequence[Comparison], label_type: str, features: Sequence[Features] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    scores = batch_scores(rm, batch, features)
    device = scores.device
    if label_type == "best_of_n":
        best = torch.tensor([c.label["best"] for c in batch], device=device)
        return best_of_n_loss(scores, best), scores
    if label_type == "scalar_rating":
        target = torch.tensor([float(c.label["score"]) for c in batch], device=device, dtype=scores.dtype)
        return scalar_rating_loss(scores[:, 0], target), scores
    target = torch.tensor([float(c.label["difference"]) for c in batch], device=device, dtype=scores.dtype)
    return scalar_compare_loss(scores[:, 0], scores[:, 1], target), scores


# --------------------------------------------------------------------------------------- training
def train_reward_model(
    rm: RewardModel,
    items: Sequence[Comparison],
    config: RewardTrainConfig = PRESETS["books"],
    *,
    eval_items: Sequence[Comparison] | None = None,
    progress: Callable[[int], None] | None = None,
    features: Sequence[Features] | None = None,
    eval_features: Sequence[Features] | None = None,
) -> dict:
    """Train ``rm`` on labelled comparisons; returns metrics (losses, learning rates, held-out accuracy).

    ``features``/``eval_features`` (from :func:`cache_features`, same order as the items) let several
    epochs or runs share one pass of the frozen lower part; they need ``config.top_blocks`` set.
    """
    label_type = _check_items(items)
    if features is not None and (config.top_blocks is None or len(features) != len(items)):
        raise ValueError("features need config.top_blocks set and one entry per item (see cache_features).")
    rm.set_trainable(config.top_blocks)
    rm.train()  # dropout is 0 everywhere (the loader disabled it), so train mode changes nothing
    params = [p for p in rm.parameters() if p.requires_grad]
    optimizer = make_optimizer(
        params, lr=config.lr, kind=config.optimizer, eps=config.adam_eps, fused=config.fused
    )
    t0 = time.perf_counter()
    losses, lrs = _train_epochs(rm, items, config, optimizer, label_type, features, progress)
    rm.eval()
    metrics = _train_metrics(label_type, losses, lrs, len(items) * config.epochs, config, t0)
    if eval_items:
        metrics.update(evaluate(rm, eval_items, features=eval_features))
    return metrics


def _train_epochs(
    rm: RewardModel,
    items: Sequence[Comparison],
    config: RewardTrainConfig,
    optimizer: torch.optim.Optimizer,
    label_type: str,
    features: Sequence[Features] | None,
    progress: Callable[[int], None] | None,
) -> tuple[list[float], list[float]]:
    """``config.epochs`` shuffled passes over ``items`` (``ceil(N / B)`` steps each, the learning rate
    decayed linearly over the comparisons seen); returns the loss and learning rate of every step."""
    n, bsz = len(items), config.batch_size
    steps_per_epoch = math.ceil(n / bsz)
    total = n * config.epochs
    rng = np.random.default_rng(config.seed)
    losses, lrs = [], []
    done = 0
    for _epoch in range(config.epochs):
        order = rng.permutation(n)
        for k in range(steps_per_epoch):
            idx = order[k * bsz : (k + 1) * bsz]
            batch = [items[i] for i in idx]
            lr = linear_decay(config.lr, done, total)  # lr * (1 - k*B/N), §1.3
            feats = None if features is None else [features[i] for i in idx]
            losses.append(_train_step(rm, optimizer, lr, batch, label_type, feats))
            lrs.append(lr)
            done += len(batch)
            if progress is not None:
                progress(len(batch))
    return losses, lrs


def _train_step(
    rm: RewardModel,
    optimizer: torch.optim.Optimizer,
    lr: float,
    batch: Sequence[Comparison],
    label_type: str,
    features: Sequence[Features] | None,
) -> float:
    """One optimizer step at learning rate ``lr``; returns the batch's loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss, _ = batch_loss(rm, batch, label_type, features)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def _train_metrics(
    label_type: str,
    losses: list[float],
    lrs: list[float],
    comparisons: int,
    config: RewardTrainConfig,
    t0: float,
) -> dict:
    return {
        "label_type": label_type,
        "train/loss_first": losses[0],
        "train/loss_last_10pct": float(np.mean(losses[-max(1, len(losses) // 10) :])),
        "train/steps": len(losses),
        "train/comparisons": comparisons,
        "train/seconds": time.perf_counter() - t0,
        "train/comparisons_per_s": comparisons / max(time.perf_counter() - t0, 1e-9),
        "losses": losses,
        "lrs": lrs,
        "config": asdict(config),
    }


@torch.no_grad()
def evaluate(
    rm: RewardModel,
    items: Sequence[Comparison],
    batch_size: int = 16,
    features: Sequence[Features] | None = None,
) -> dict:
    """Held-out loss and, for best-of-N, accuracy (argmax of the scores == the labeler's choice)."""
    label_type = _check_items(items)
    correct, losses, all_scores = 0, [], []
    for i in range(0, len(items), batch_size):
        batch = list(items[i : i + batch_size])
        feats = None if features is None else list(features[i : i + batch_size])
        loss, scores = batch_loss(rm, batch, label_type, feats)
        losses.append(float(loss) * len(batch))
        all_scores.append(scores.double().cpu().numpy())
        if label_type == "best_of_n":
            correct += int(
                (scores.argmax(dim=1).cpu() == torch.tensor([c.label["best"] for c in batch])).sum()
            )
    out = {
        "eval/loss": sum(losses) / len(items),
        "eval/n": len(items),
        "eval/scores": np.concatenate(all_scores),
    }
    if label_type == "best_of_n":
        out["eval/accuracy"] = correct / len(items)
        out["eval/chance"] = 1.0 / len(items[0].samples)
    return out


# ---------------------------------------------------------------------------------- normalisation
@torch.no_grad()
def normalize(
    rm: RewardModel,
    queries: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    target_mean: float = 0.0,
    target_std: float = 1.0,
    batch_size: int = 32,
) -> dict:
    """Set gain/bias so that ``rm``'s scores of these (query, response) pairs have the target moments.

    The pairs should be samples of the initial policy rho (PAPER.md §1.3): gain = sigma_T / sigma_D,
    bias = mu_T - gain * mu_D, with the population std. Returns the moments before normalising.
    """
    if len(queries) < 2:
        raise ValueError(f"normalize needs at least 2 samples, got {len(queries)} (the paper uses 256-512).")
    rm.gain.fill_(1.0)
    rm.bias.fill_(0.0)
    scores = rm.score(queries, responses, batch_size=batch_size)
    mu, sigma = float(scores.mean()), float(scores.std())  # np.std is the population std
    if sigma == 0.0:
        raise ValueError(
            "All normalisation samples got the same score; cannot set the gain (check the inputs)."
        )
    gain = target_std / sigma
    rm.gain.fill_(gain)
    rm.bias.fill_(target_mean - gain * mu)
    return {"norm/mean_before": mu, "norm/std_before": sigma, "norm/gain": gain, "norm/bias": float(rm.bias)}


def policy_samples(
    task: str, model, tokenizer, n: int, *, seed: int = 0, batch_size: int = 64, **overrides
) -> tuple[list[list[int]], list[list[int]]]:
    """``n`` (query, response) pairs from the policy ``model`` on ``task``'s prompts, untruncated, as
    the reference code samples for normalisation (§1.3)."""
    from textenv.models.sampling import hf_sample_fn
    from textenv.sampler import sample_task
    from textenv.task import make_task

    t = make_task(task, tokenizer, **overrides)
    sample_fn = hf_sample_fn(model, t.pad_id, t.config.temperature, t.vocab_size, share_prefix="auto")
    drawn = sample_task(t, sample_fn, n, seed=seed, sample_seed=seed * 7919, batch_size=batch_size)
    queries = [list(p.query) for p in drawn.prompts]
    return queries, [[int(x) for x in r] for r in drawn.responses]


NormalizeWhen = Literal["before_and_after", "after"]
NORMALIZE_WHEN: tuple[str, ...] = ("before_and_after", "after")


def normalization_seed(seed: int, index: int = 0, phase: str = "after") -> int:
    """A seed for one normalisation's samples, distinct for every (run seed, retrain ``index``, ``phase``
    "before"/"after"): each normalisation draws fresh prompts and samples of rho (§1.3, as the reference
    code's ``train_reward`` samples anew before and after training)."""
    if phase not in ("before", "after"):
        raise ValueError(f"phase must be 'before' or 'after', got {phase!r}.")
    entropy = [int(seed), 0x6E6F726D, int(index), 0 if phase == "before" else 1]  # 0x6E6F726D: "norm"
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


def normalize_on_policy(
    rm: RewardModel,
    task: str,
    model,
    tokenizer,
    n: int,
    *,
    seed: int,
    sample_batch_size: int = 64,
    score_batch_size: int = 32,
    **overrides,
) -> dict:
    """:func:`normalize` ``rm`` on ``n`` fresh samples of the policy ``model`` (rho) drawn with ``seed``
    (:func:`policy_samples`); returns :func:`normalize`'s moments and the seed."""
    q, r = policy_samples(task, model, tokenizer, n, seed=seed, batch_size=sample_batch_size, **overrides)
    return {**normalize(rm, q, r, batch_size=score_batch_size), "norm/seed": seed}


def check_normalize_when(value: str) -> str:
    if value not in NORMALIZE_WHEN:
        raise ValueError(
            f"normalize={value!r}: use 'before_and_after' (the paper's: before and after training, fresh "
            "samples each time) or 'after' (after training only)."
        )
    return value


def split_holdout(items: Sequence[Comparison], fraction: float) -> tuple[list[Comparison], list[Comparison]]:
    """Deterministic split by a hash of the question id (duplicates of a question stay together)."""
    from textenv.data import split_of

    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}.")
    train, held = [], []
    for c in items:
        u = split_of(f"holdout:{c.question_id}", (1.0 - fraction, fraction, 0.0))
        (train if u == "train" else held).append(c)
    return train, held


def cli_train_reward(args) -> int:
    import json
    import sys

    from tqdm.auto import tqdm

    import textenv  # noqa: F401
    from rewards.comparisons import ComparisonStore
    from textenv.models import load_causal_lm

    with ComparisonStore(args.store) as store:
        items = store.labelled(task=args.task, label_type="best_of_n")
    train_items, held = split_holdout(items, args.holdout)
    config = get_preset(args.preset, top_blocks=args.top_blocks, seed=args.seed)
    rm = RewardModel.from_spec(args.model, seed=args.seed, device=args.device)
    rm.set_trainable(config.top_blocks)
    metrics: dict = {"store": str(args.store), "train_n": len(train_items), "holdout_n": len(held)}
    lm = tok = None
    if args.normalize_samples > 0:  # before and after training, on fresh samples of rho each time (§1.3)
        lm, tok = load_causal_lm(args.model, device=args.device)
        before = normalize_on_policy(rm, args.task, lm, tok, args.normalize_samples, seed=args.seed + 1)
        metrics.update({f"before/{k}": v for k, v in before.items()})
    with tqdm(
        total=len(train_items) * config.epochs, desc="training reward model", unit="q", file=sys.stderr
    ) as bar:
        out = train_reward_model(rm, train_items, config, eval_items=held or None, progress=bar.update)
    if lm is not None:
        after = normalize_on_policy(rm, args.task, lm, tok, args.normalize_samples, seed=args.seed + 2)
        metrics.update({f"after/{k}": v for k, v in after.items()})
    rm.save(args.out)
    metrics.update({k: v for k, v in out.items() if k not in ("losses", "lrs", "eval/scores")})
    print(json.dumps(metrics, default=float))
    return 0
