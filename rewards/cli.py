"""``textenv`` subcommands of the reward-learning path: sample, label, train-reward."""

from __future__ import annotations

import argparse
import json
import sys
import time


def _bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="q", file=sys.stderr, dynamic_ncols=True)


def cmd_sample(args: argparse.Namespace) -> int:
    import textenv  # noqa: F401
    from rewards.comparisons import ComparisonStore
    from rewards.pipeline import sample_questions
    from textenv.models import load_causal_lm

    model, tok = load_causal_lm(args.model, device=args.device)
    t0 = time.perf_counter()
    with ComparisonStore(args.store) as store, _bar(args.queries, "sampling questions") as bar:
        stats = sample_questions(
            store,
            args.task,
            model,
            tok,
            n_queries=args.queries,
            n_samples=args.n,
            seed=args.seed,
            batch_size=args.batch_size,
            require_valid=args.require_valid,
            policy_version=args.policy_version,
            progress=bar.update,
            split=args.split,
        )
    stats["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({"store": str(args.store), **stats}))
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from rewards.comparisons import ComparisonStore
    from rewards.labelers import make_labeler
    from rewards.pipeline import label_pending

    labeler = make_labeler(args.labeler, temperature=args.temperature, seed=args.seed)
    with ComparisonStore(args.store) as store:
        todo = len(store.pending(task=args.task, limit=args.limit))
        with _bar(todo, f"labelling with {args.labeler}") as bar:
            stats = label_pending(
                store,
                labeler,
                name=f"mock:{args.labeler}:T={args.temperature}",
                task=args.task,
                limit=args.limit,
                duplicate_rate=args.duplicate_rate,
                seed=args.seed,
                progress=bar.update,
            )
    print(json.dumps(stats))
    return 0


def cmd_train_reward(args: argparse.Namespace) -> int:
    from rewards.train import cli_train_reward

    return cli_train_reward(args)


def add_parsers(sub) -> dict:
    p = sub.add_parser("sample", help="sample N responses per query from a policy into the comparison store")
    p.add_argument("--task", default="BookSentiment-v0")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--store", required=True, help="SQLite file of the comparison store")
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--n", type=int, default=4, help="samples per query (the paper's best-of-4)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--split", default="train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--policy-version", type=int, default=0)
    p.add_argument(
        "--require-valid",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reject samples without a truncate token in the window, as the paper (default: on)",
    )

    p = sub.add_parser("label", help="label pending questions with a mock labeler")
    p.add_argument("--store", required=True)
    p.add_argument("--labeler", required=True, choices=["sentiment", "descriptiveness", "summarization"])
    p.add_argument("--temperature", type=float, default=0.0, help="Boltzmann noise (0: always the best)")
    p.add_argument("--duplicate-rate", type=float, default=0.0, help="share of questions asked twice")
    p.add_argument("--task", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train-reward", help="train a reward model on the store's labels")
    p.add_argument("--store", required=True)
    p.add_argument("--task", default="BookSentiment-v0")
    p.add_argument("--model", default="smollm2-135m", help="trunk: any load_causal_lm spec")
    p.add_argument("--out", required=True, help="folder for the trained reward model")
    p.add_argument(
        "--preset",
        default="books",
        help="hyper-parameter preset (books, summarize, paper-books, paper-summarize)",
    )
    p.add_argument("--top-blocks", type=int, default=None, help="train only the top k blocks (0: head only)")
    p.add_argument("--holdout", type=float, default=0.1, help="share of labels held out for accuracy")
    p.add_argument(
        "--normalize-samples", type=int, default=256, help="policy samples for gain/bias (0: skip)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return {"sample": cmd_sample, "label": cmd_label, "train-reward": cmd_train_reward}
