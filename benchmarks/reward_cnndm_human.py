"""A reward model trained on real human judgements: pairs of CNN/DM summaries scored by people.

The ``blanc`` sample has 100 articles with 3-4 summaries, each with ~10 human quality scores (0-4). Every
pair of summaries of one article with different mean scores is a comparison; the summary with the
higher mean score is "chosen". Articles are split 70/30 (hash of the article id), so held-out pairs
come from unseen articles. The reward model (embedded SmolLM2-135M trunk, a linear head on the final
hidden state at the last token: ``top_blocks=0``, features computed once) reads the article (cut at
``--query-length`` tokens, back to the last newline) followed by the summary, and is trained with the
pairwise (best-of-2) loss. Baselines on the same held-out pairs: ROUGE (the summary with the higher
R-AVG against the article wins) and length (the longer summary wins).

    python -m benchmarks.reward_cnndm_human [--query-length 320] [--epochs 30] [--lr 1e-3]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, arg_parser, emit, metadata
from rewards.comparisons import Comparison
from rewards.model import Features, RewardModel
from rewards.train import RewardTrainConfig, evaluate, train_reward_model
from textenv import data


def build_pairs(articles, holdout: float = 0.3):
    train, test = [], []
    for a in articles:
        if len(a.summaries) < 2:
            continue
        bucket = (
            test if data.split_of("cnndm-human:" + a.id, (1 - holdout, holdout, 0.0)) != "train" else train
        )
        for (s0, m0), (s1, m1) in itertools.combinations(a.summaries, 2):
            if m0 == m1:
                continue
            bucket.append((a, s0, s1, 0 if m0 > m1 else 1))
    return train, test


def parse_args(argv=None) -> argparse.Namespace:
    parser = arg_parser(__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--query-length", type=int, default=320)
    parser.add_argument("--response-length", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "reward_cnndm_human.jsonl"))
    return parser.parse_args(argv)


def unique_sequences(pairs, tok, args) -> tuple[dict[tuple[str, str], int], list, list]:
    """One (query, response) per unique (article, summary), the pairs reuse them: (index of each
    ``(article id, summary)``, queries, responses)."""
    newline = tok.encode("\n", add_special_tokens=False)[0]
    texts: dict[tuple[str, str], int] = {}
    queries, responses = [], []
    for a, s0, s1, _ in pairs:
        for s in (s0, s1):
            if (a.id, s) not in texts:
                texts[(a.id, s)] = len(queries)
                ids = tok.encode(a.article, add_special_tokens=False, verbose=False)
                queries.append(data.trim_article(ids, max_length=args.query_length, end_id=newline))
                responses.append(tok.encode(" " + s, add_special_tokens=False)[: args.response_length])
    return texts, queries, responses


def feature_vectors(rm: RewardModel, queries: list, responses: list) -> tuple[torch.Tensor, float]:
    """The final hidden state at the last token of every sequence, (S, d), and the seconds it took."""
    t0 = time.perf_counter()
    feats = []
    for i in range(0, len(queries), 8):
        feats.append(rm.features(*rm.sequences_with_start(queries[i : i + 8], responses[i : i + 8])).hidden)
    return torch.cat(feats), time.perf_counter() - t0


def items_and_features(pairs, texts: dict, queries: list, responses: list, vectors: torch.Tensor):
    """The pairs as best-of-2 comparisons, each with its two precomputed feature vectors."""
    items, fs = [], []
    for a, s0, s1, best in pairs:
        i0, i1 = texts[(a.id, s0)], texts[(a.id, s1)]
        items.append(
            Comparison(
                task="CNNDMSummarize-v0",
                query=queries[i0],
                samples=[responses[i0], responses[i1]],
                label={"best": best},
            )
        )
        fs.append(
            Features(
                vectors[[i0, i1]], torch.ones(2, 1, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long)
            )
        )
    return items, fs


def baseline_accuracies(test_pairs) -> tuple[float, float]:
    """How often the summary with the higher R-AVG against the article, and the longer one, is chosen."""
    from textenv.scorers import rouge_avg as ravg

    rouge_acc = np.mean(
        [(0 if ravg(a.article, s0) > ravg(a.article, s1) else 1) == best for a, s0, s1, best in test_pairs]
    )
    length_acc = np.mean(
        [(0 if len(s0.split()) > len(s1.split()) else 1) == best for a, s0, s1, best in test_pairs]
    )
    return float(rouge_acc), float(length_acc)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)

    articles = [a for s in data.SPLITS for a in data.load_cnndm(s)]
    train_pairs, test_pairs = build_pairs(articles)
    rm = RewardModel.from_spec(args.model, seed=args.seed)
    rm.set_trainable(0)
    texts, queries, responses = unique_sequences(train_pairs + test_pairs, rm.tokenizer, args)
    vectors, feature_s = feature_vectors(rm, queries, responses)
    train_items, train_feats = items_and_features(train_pairs, texts, queries, responses, vectors)
    test_items, test_feats = items_and_features(test_pairs, texts, queries, responses, vectors)
    cfg = RewardTrainConfig(
        lr=args.lr, batch_size=16, epochs=args.epochs, top_blocks=0, optimizer="torch_adam", seed=args.seed
    )
    before = evaluate(rm, test_items, features=test_feats)["eval/accuracy"]
    out = train_reward_model(
        rm, train_items, cfg, features=train_feats, eval_items=test_items, eval_features=test_feats
    )
    rouge_acc, length_acc = baseline_accuracies(test_pairs)
    emit(
        {
            "bench": "reward_cnndm_human",
            "train_pairs": len(train_pairs),
            "test_pairs": len(test_pairs),
            "unique_sequences": len(queries),
            "feature_seconds": feature_s,
            "rm_accuracy": out["eval/accuracy"],
            "rm_accuracy_untrained_head": before,
            "rouge_vs_article_accuracy": rouge_acc,
            "length_accuracy": length_acc,
            "config": {**vars(args), "top_blocks": 0, "optimizer": "torch_adam", "batch_size": 16},
            **metadata(),
        },
        out=Path(args.out),
    )


if __name__ == "__main__":
    main()
