"""Round trip of a human evaluation (``textenv evaluate --labeler human``) with simulated people.

The two systems answer the same held-out prompts; the pairs are posted to a comparison store; ``--labelers``
simulated people, each a noisy mock labeler (Boltzmann choice at ``--temperature`` over the labeler's
score, own seed), answer every question the labeling app serves them through its HTTP API (in process);
the win rate is read back with the majority rule. The check: the measured majority win rate against the
one the noise model predicts for the same pairs (per question, ``P(majority) = sum over vote counts``),
and against the noiseless labeler's win rate (ties count one half).

    python -m benchmarks.bench_human_eval --system runs/demo/ppo          # after `make demo`
    python -m benchmarks.bench_human_eval --system runs/book_sentiment --n 64 --votes 3
"""

from __future__ import annotations

import json
import tempfile
import time
from math import comb
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, arg_parser, emit, metadata, out_path


def majority_probability(p: float, votes: int) -> float:
    """P(the system wins the majority of ``votes`` independent votes, each won with probability ``p``);
    a tie (even ``votes``) counts one half, as :meth:`LabelingStore.evaluation_results` counts it."""
    win = sum(comb(votes, k) * p**k * (1 - p) ** (votes - k) for k in range(votes + 1) if 2 * k > votes)
    tie = comb(votes, votes // 2) * (p * (1 - p)) ** (votes // 2) if votes % 2 == 0 else 0.0
    return win + tie / 2


def answer_as_people(store_path: Path, people: dict, args) -> int:
    """Each simulated person answers every question the app serves them through its HTTP API; returns
    the number of answers."""
    from fastapi.testclient import TestClient

    from rewards.labelers import make_labeler
    from rewards.labeling.app import create_app

    client = TestClient(create_app(store_path, duplicate_share=0.0))
    answers = 0
    for i, token in enumerate(people.values(), 1):
        judge = make_labeler(args.labeler, temperature=args.temperature, seed=args.seed + i)
        auth = {"Authorization": f"Bearer {token}"}
        while not (q := client.get("/api/next", headers=auth).json())["done"]:
            choice = judge(q["query"], q["samples"])[0]
            r = client.post(
                "/api/answers", json={"id": q["id"], "action": "choose", "choice": choice}, headers=auth
            )
            if r.status_code != 200:
                raise RuntimeError(f"the app refused an answer: {r.status_code} {r.text}")
            answers += 1
    return answers


def predicted(store_path: Path, args) -> tuple[list[float], list[float]]:
    """The noise model's majority-win probability and the noiseless labeler's outcome, per posted pair."""
    from rewards.labelers import make_labeler, pairwise_outcome
    from rewards.labeling.store import LabelingStore

    store = LabelingStore(store_path)
    rows = store.conn.execute(
        "SELECT e.system_position, c.query_text, c.sample_texts FROM evaluation_questions e "
        "JOIN comparisons c ON c.id = e.comparison_id WHERE e.eval_id = 'roundtrip'"
    ).fetchall()
    store.close()
    noisy, clean = make_labeler(args.labeler, temperature=args.temperature), make_labeler(args.labeler)
    expected, outcomes = [], []
    for position, query, texts in rows:
        texts = json.loads(texts)
        p = float(noisy.probabilities(np.asarray(noisy.scores(query, texts), dtype=float))[position])
        expected.append(majority_probability(p, args.votes))
        outcomes.append(pairwise_outcome(clean, query, texts[position], texts[1 - position]))
    return expected, outcomes


def run(args) -> dict:
    from agents.evaluate import evaluate
    from agents.human_eval import human_results
    from rewards.labeling.store import LabelingStore

    if "/" in args.system and not Path(args.system).exists():
        raise SystemExit(
            f"--system {args.system!r} does not exist: run `make demo` first or pass a model spec or run folder."
        )
    store_path = Path(args.store or tempfile.mkdtemp(prefix="human_eval_")) / "labels.db"
    store = LabelingStore(store_path)
    people = {f"person{i}": store.add_labeler(f"person{i}") for i in range(1, args.labelers + 1)}
    store.close()
    t0 = time.perf_counter()
    evaluate(
        args.task,
        [args.baseline, args.system],
        args.n,
        seed=args.seed,
        labeler="human",
        store=store_path,
        eval_id="roundtrip",
        votes=args.votes,
    )
    t_post = time.perf_counter() - t0
    answers = answer_as_people(store_path, people, args)
    result = human_results(store_path, "roundtrip")
    measured = result["systems"][args.system]
    # the noise model's prediction and the noiseless labeler, on the very pairs that were posted
    expected, outcomes = predicted(store_path, args)
    expected_sd = float(np.sqrt(sum(e * (1 - e) for e in expected)) / len(expected))
    return {
        "benchmark": "human_eval_roundtrip",
        "task": args.task,
        "system": args.system,
        "baseline": args.baseline,
        "questions": measured["questions"],
        "votes": args.votes,
        "labelers": args.labelers,
        "labeler": args.labeler,
        "temperature": args.temperature,
        "answers": answers,
        "complete": result["complete"],
        "majority_win_rate": measured["win_rate"],
        "majority_win_rate_se": measured["win_rate_se"],
        "expected_majority_win_rate": float(np.mean(expected)),
        "expected_sd": expected_sd,
        "judgement_win_rate": measured["judgement_win_rate"],
        "noiseless_win_rate": float(np.mean(outcomes)),
        "generate_and_post_s": t_post,
        "seconds": time.perf_counter() - t0,
        **metadata(),
    }


def main(argv=None) -> dict:
    p = arg_parser(__doc__)
    p.add_argument("--task", default="BookSentiment-v0")
    p.add_argument(
        "--system", default="runs/demo/ppo", help="the policy judged (a model spec, folder or run folder)"
    )
    p.add_argument("--baseline", default="zero-shot")
    p.add_argument("--n", type=int, default=48, help="prompts")
    p.add_argument("--votes", type=int, default=3)
    p.add_argument("--labelers", type=int, default=3, help="simulated people")
    p.add_argument("--labeler", default="sentiment", help="the mock labeler each person follows, with noise")
    p.add_argument("--temperature", type=float, default=0.5, help="each person's Boltzmann noise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store", default=None, help="folder for the store (default: a temporary one)")
    p.add_argument("--out", default=str(RESULTS / "human_eval.jsonl"))
    args = p.parse_args(argv)
    if args.labelers < args.votes:
        p.error(
            f"--labelers {args.labelers} < --votes {args.votes}: each question needs {args.votes} different people."
        )
    row = run(args)
    emit(row, out_path(args.out))
    return row


if __name__ == "__main__":
    main()
