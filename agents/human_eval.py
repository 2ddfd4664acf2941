"""Win rates judged by people: ``textenv evaluate --labeler human`` posts randomised A/B pairs to the
labeling app's store (task ``eval:<task>``, each open until ``votes`` labelers answered; PAPER.md §3.2:
the share of comparisons won by majority of 3), ``textenv eval-results`` reads them back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

__all__ = [
    "check_human_evaluation",
    "cli_eval_results",
    "format_human_results",
    "human_evaluation_report",
    "human_results",
    "paired_rows",
    "post_human_evaluation",
]


def paired_rows(systems: dict[str, list[dict]]):
    """(name, its rows, the first system's rows) for every system after the first, checked to answer the
    same prompts."""
    names = list(systems)
    first = systems[names[0]]
    for name in names[1:]:
        if [r["source"] for r in systems[name]] != [r["source"] for r in first]:
            raise ValueError(
                f"{name!r} and {names[0]!r} answered different prompts (different tokenizers trim them "
                "differently); compare systems that share a tokenizer."
            )
        yield name, systems[name], first


def check_human_evaluation(
    task: str, systems: list[str], store, eval_id: str | None, votes: int
) -> tuple[str, int]:
    """Before any generation (a bad id or vote count fails in a second, not after the sampling): the
    evaluation id to use and how many labelers the store has."""
    from rewards.labeling.store import LabelingStore

    if store is None:
        raise ValueError(
            "labeler='human' needs store=: the comparison store the labeling app serves (--store)."
        )
    if len(systems) < 2:
        raise ValueError(f"a human evaluation compares systems with the first; got only {systems}.")
    eval_id = eval_id or f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    with LabelingStore(store) as checker:
        checker.check_new_evaluation(eval_id, votes)
        return eval_id, len(checker.labelers())


def human_evaluation_report(
    store, eval_id: str, task: str, outputs: dict, *, votes: int, seed: int, tokenizer, registered: int
) -> dict:
    """Post the pairs and describe what was posted (with a warning when too few labelers are registered)."""
    posted = post_human_evaluation(store, eval_id, task, outputs, votes=votes, seed=seed, tokenizer=tokenizer)
    report = {
        "eval_id": eval_id,
        "store": str(store),
        "questions": posted,
        "votes": votes,
        "label_with": f"textenv serve-labeling --store {store}",
        "read_with": f"textenv eval-results --store {store} --eval-id {eval_id}",
    }
    if registered < votes:
        report["warning"] = (
            f"{registered} labeler(s) registered in {store} and {votes} votes needed per question: add "
            "people with `textenv labelers add NAME --store ...` or the questions never complete."
        )
    return report


def post_human_evaluation(
    store_path: str | Path,
    eval_id: str,
    task: str,
    systems: dict[str, list[dict]],
    *,
    votes: int = 3,
    seed: int = 0,
    tokenizer=None,
) -> int:
    """Post one pairwise question per prompt and system (against the first system) for the labeling app;
    the two responses are shown in a seeded random order, so position bias cancels. The questions' task
    is ``eval:<task>``: reward-model training (which reads one task) never sees them. Returns the count."""
    from rewards.comparisons import Comparison
    from rewards.labeling.store import EVAL_TASK_PREFIX, LabelingStore

    def ids(text: str) -> list[int]:
        return [] if tokenizer is None else [int(t) for t in tokenizer.encode(text, add_special_tokens=False)]

    rng = np.random.default_rng(seed)
    baseline = next(iter(systems))
    pairs = []
    for j, (name, rows, first) in enumerate(paired_rows(systems), 1):
        for i, (a, b) in enumerate(zip(rows, first)):
            position = int(rng.integers(2))
            texts = [a["response"], b["response"]][:: 1 if position == 0 else -1]
            question = Comparison(
                task=EVAL_TASK_PREFIX + task,
                query=ids(a["query"]),
                samples=[ids(t) for t in texts],
                query_text=a["query"],
                sample_texts=texts,
                reference=a["reference"],
                question_id=f"eval-{eval_id}-{j}-{i}",
            )
            pairs.append((question, name, baseline, position))
    store = LabelingStore(store_path)
    try:
        return store.post_evaluation(eval_id, pairs, votes=votes)
    finally:
        store.close()


def human_results(store_path: str | Path, eval_id: str, wait_s: float = 0.0, poll_s: float = 2.0) -> dict:
    """The people's answers to evaluation ``eval_id`` so far (:meth:`LabelingStore.evaluation_results`),
    waiting up to ``wait_s`` seconds for every question to get its votes."""
    from rewards.labeling.store import LabelingStore

    if not Path(store_path).exists():
        raise FileNotFoundError(
            f"no comparison store at {store_path}; pass the --store the evaluation was posted to."
        )
    store = LabelingStore(store_path)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            results = store.evaluation_results(eval_id)
            if results["complete"] or time.monotonic() >= deadline:
                return results
            time.sleep(poll_s)
    finally:
        store.close()


def format_human_results(results: dict) -> str:
    lines = []
    for name, r in results["systems"].items():
        rate = (
            "n/a" if r["win_rate"] is None else f"{100 * r['win_rate']:.1f}% ± {100 * r['win_rate_se']:.1f}"
        )
        single = "n/a" if r["judgement_win_rate"] is None else f"{100 * r['judgement_win_rate']:.1f}%"
        lines.append(
            f"{name} vs {r['baseline']}: wins {rate} of {r['complete']}/{r['questions']} questions with all "
            f"{r['votes']} votes (majority; ties count 1/2); single judgements {single} of {r['judgements']}"
        )
    lines.append(
        f"skips {results['skips']}, flags {results['flags']}; "
        + ("complete" if results["complete"] else "still open: label in the app (textenv serve-labeling)")
    )
    return "\n".join(lines)


def cli_eval_results(args) -> int:
    if not Path(args.store).exists():
        raise SystemExit(
            f"no comparison store at {args.store}; pass the --store the evaluation was posted to."
        )
    if args.eval_id is None:
        from rewards.labeling.store import LabelingStore

        store = LabelingStore(args.store)
        print("\n".join(store.evaluation_ids()) or f"no evaluations in {args.store}")
        store.close()
        return 0
    results = human_results(args.store, args.eval_id, wait_s=args.wait_s)
    print(format_human_results(results))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0 if results["complete"] else 3
