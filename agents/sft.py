"""``textenv train-sft``: the paper's supervised baseline (PAPER.md §1.9), and the start of "supervised + RL".

One epoch of next-token cross-entropy on the task's reference summaries, formatted exactly as the
environment formats prompts (``[left-padded prefix + query + suffix][" " + reference + truncate token]``),
the loss on the summary tokens only; a cosine learning-rate decay to 0 (the paper swept 8 log-spaced
initial rates in [1e-4, 3e-4]); the validation loss every ``eval_every`` steps, keeping the best
checkpoint. The result is a plain Hugging Face folder: evaluate it (``textenv evaluate --system FOLDER``)
or start RL from it (``policy.model = "FOLDER"``: "supervised + RL").

Deviation (named): dropout stays at the loader's 0 unless ``dropout`` is set (the paper: 0.1 worked best).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from textenv.cli import finite_float


@dataclass(frozen=True)
class SFTConfig:
    task: str = "CNNDMSummarize-v0"
    model: str = "smollm2-135m"
    out: str = "runs/sft"
    lr: float = 1e-4
    batch_size: int = 8
    epochs: int = 1
    max_examples: int = 0  # 0: the whole train split
    valid_examples: int = 64
    eval_every: int = 50
    dropout: float = 0.0
    seed: int = 0
    device: str = "cpu"
    overrides: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or self.epochs < 1 or self.eval_every < 1:
            raise ValueError(
                f"need lr > 0, batch_size, epochs and eval_every >= 1; got {self.lr}, {self.batch_size}, "
                f"{self.epochs}, {self.eval_every}."
            )


def cosine_lr(base: float, step: int, total: int) -> float:
    """``base * (1 + cos(pi * step / total)) / 2``: cosine decay to 0 over ``total`` steps."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def examples(
    task: str, tokenizer, split: str, limit: int = 0, **overrides
) -> list[tuple[np.ndarray, list[int]]]:
    """(context row, target ids) pairs: the env's formatted context and ``" " + reference`` followed by the
    truncation token, cut to ``response_length``."""
    from textenv.task import make_task

    t = make_task(task, tokenizer, split=split, **overrides)
    out = []
    for i in range(len(t.records)):
        prompt = t.prepare(i)
        if prompt is None or not prompt.reference:
            continue
        target = tokenizer.encode(" " + prompt.reference.strip(), add_special_tokens=False)
        if t.truncate_id is not None:
            target = [*target, t.truncate_id]
        out.append((t.context_row(prompt), target[: t.config.response_length]))
        if limit and len(out) >= limit:
            break
    if not out:
        raise ValueError(f"{task} ({split}) has no prompts with reference summaries to train on.")
    return out


def batch_loss(lm, pad_id: int, batch: list[tuple[np.ndarray, list[int]]]) -> torch.Tensor:
    """Mean cross-entropy over the target tokens of ``batch`` (context tokens and pads carry no loss)."""
    from textenv.models.tokenization import pad_sequences, padded_inputs

    context = torch.as_tensor(np.stack([c for c, _ in batch]))
    target = torch.as_tensor(pad_sequences([t for _, t in batch], pad_id, side="right"))
    ids = torch.cat([context, target], dim=1).to(lm.device)
    logits = lm(**padded_inputs(ids, pad_id)).logits[
        :, context.shape[1] - 1 : -1
    ]  # predicts each target token
    target = target.to(lm.device)
    mask = target != pad_id
    loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        torch.where(mask, target, 0).reshape(-1),
        reduction="none",
    )
    return (loss * mask.reshape(-1)).sum() / mask.sum().clamp(min=1)


@torch.no_grad()
def validation_loss(lm, pad_id: int, data: list, batch_size: int) -> float:
    lm.eval()
    losses = [
        float(batch_loss(lm, pad_id, data[i : i + batch_size])) for i in range(0, len(data), batch_size)
    ]
    lm.train()
    return float(np.mean(losses))


def _set_dropout(lm, p: float) -> None:
    """The paper's dropout 0.1 when asked (a named deviation keeps it 0, as every loaded model)."""
    if p:
        for module in lm.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = p


def train_sft(cfg: SFTConfig, progress: bool = True) -> dict:
    """Fine-tune ``cfg.model`` on ``cfg.task``'s references; save the best checkpoint to ``cfg.out``."""
    from textenv.models import load_causal_lm

    lm, tok = load_causal_lm(cfg.model, seed=cfg.seed, device=cfg.device)
    _set_dropout(lm, cfg.dropout)
    pad_id = tok.pad_token_id
    train = examples(cfg.task, tok, "train", cfg.max_examples, **cfg.overrides)
    valid = examples(cfg.task, tok, "valid", cfg.valid_examples, **cfg.overrides)
    rng = np.random.default_rng(cfg.seed)
    steps = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, weight_decay=0.0)
    out = Path(cfg.out)
    best, history, step = float("inf"), [], 0
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="SFT", unit="step", file=sys.stderr)
    lm.train()

    def checkpoint(loss: float) -> None:
        nonlocal best
        history.append({"step": step, "valid_loss": loss})
        if loss < best:
            best = loss
            lm.save_pretrained(out)
            tok.save_pretrained(out)

    checkpoint(validation_loss(lm, pad_id, valid, cfg.batch_size))  # the initial model is a candidate too
    for _epoch in range(cfg.epochs):
        order = rng.permutation(len(train))
        for start in range(0, len(train), cfg.batch_size):
            lr = cosine_lr(cfg.lr, step, steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = batch_loss(lm, pad_id, [train[i] for i in order[start : start + cfg.batch_size]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            history.append({"step": step, "train_loss": float(loss.detach()), "lr": lr})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            if step % cfg.eval_every == 0 or step == steps:
                checkpoint(validation_loss(lm, pad_id, valid, cfg.batch_size))
    if bar is not None:
        bar.close()
    return _write_summary(cfg, out, train, valid, step, best, history, t0)


def _write_summary(
    cfg: SFTConfig, out: Path, train, valid, step: int, best: float, history, t0: float
) -> dict:
    summary = {
        "config": asdict(cfg),
        "train_examples": len(train),
        "valid_examples": len(valid),
        "steps": step,
        "best_valid_loss": best,
        "initial_valid_loss": history[0]["valid_loss"],
        "seconds": time.perf_counter() - t0,
        "history": history,
    }
    (out / "sft.json").write_text(json.dumps(summary, indent=1))
    return summary


def add_parser(sub) -> dict:
    p = sub.add_parser("train-sft", help="the supervised baseline: one epoch on reference summaries (§1.9)")
    defaults = SFTConfig()
    for name in ("task", "model", "out", "device"):
        p.add_argument(f"--{name}", default=getattr(defaults, name))
    for name in ("lr", "dropout"):
        p.add_argument(f"--{name}", type=finite_float, default=getattr(defaults, name))
    for name in ("batch_size", "epochs", "max_examples", "valid_examples", "eval_every", "seed"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=getattr(defaults, name))
    p.add_argument("--query-length", type=int, default=0, help="override the task's query length (0: keep)")
    return {"train-sft": cli_train_sft}


def cli_train_sft(args: argparse.Namespace) -> int:
    overrides = {"query_length": args.query_length} if args.query_length else {}
    fields = {k: getattr(args, k) for k in SFTConfig.__dataclass_fields__ if k != "overrides"}
    out = train_sft(SFTConfig(**fields, overrides=overrides))
    print(
        f"[train-sft] {out['steps']} steps on {out['train_examples']} examples in {out['seconds']:.0f}s; "
        f"validation loss {out['initial_valid_loss']:.3f} -> {out['best_valid_loss']:.3f}; {SFTConfig(**fields).out}"
    )
    return 0
