"""``textenv evaluate``: score policies and baselines on a task's held-out prompts (PAPER.md §3.3-3.5).

For every *system* (a policy: a model spec, a saved model folder or a ``train-policy`` run folder; or a
baseline: ``lead3``, ``reference``, ``zero-shot`` = the task's initial model) the same prompts (same split,
same seed) get one response each, truncated by the task's rule, and the report gives:

* the task's own score (VADER sentiment, descriptiveness, or R-AVG against the reference) and the
  validity rate of the truncation rule (§1.6);
* for summaries: ROUGE-1/2/L and R-AVG against the references, sentence novelty, how often the summary
  copies the start of the source, split by whether the source opens with a preamble (§3.5);
* the win rate of each system over the first one, judged by any labeler (a mock one, e.g.
  ``summarization`` or ``sentiment``, or a trained reward model through ``GoldRewardLabeler``), or by
  people: ``labeler="human"`` posts one pairwise question per prompt (the two responses in a random
  order) to a comparison store for the labeling app, each open until ``votes`` labelers have answered
  (PAPER.md §3.2: the share of comparisons won by majority of 3); ``textenv eval-results`` (or
  ``wait_s``) reads the answers back;
* a Markdown table of samples.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from agents.human_eval import (
    check_human_evaluation,
    cli_eval_results,
    format_human_results,
    human_evaluation_report,
    human_results,
    paired_rows,
)
from textenv.cli import finite_float

BASELINES = ("lead3", "reference", "zero-shot")


def load_system(spec: str, device: str = "cpu"):
    """(HF causal LM, tokenizer) for a model spec, a saved model folder, or a train-policy run folder
    (its config rebuilt and its newest intact checkpoint's trained tensors loaded: :func:`agents.runfiles.load_policy`)."""
    from textenv.models import load_causal_lm

    run = Path(spec)
    if (run / "config.toml").exists() and (run / "checkpoints").is_dir():
        from agents.runfiles import load_policy

        policy, _cfg = load_policy(run, device=device)
        return policy.lm.eval(), policy.tokenizer
    lm, tok = load_causal_lm(spec, device=device)
    return lm.eval(), tok


def generate(
    system: str,
    task: str,
    n: int,
    *,
    split: str = "test",
    seed: int = 0,
    tokenizer=None,
    model=None,
    temperature: float | None = None,
    **overrides,
) -> list[dict]:
    """One response per prompt for ``n`` prompts of ``task``'s ``split`` (the same prompts for every
    system with the same seed): rows with ``query``, ``source``, ``reference``, ``response``, ``valid`` and
    ``score`` (the task's own score of the truncated response; R-AVG for the text baselines)."""
    from textenv.models.sampling import hf_sample_fn
    from textenv.sampler import sample_for_prompts
    from textenv.task import make_task

    t = make_task(task, tokenizer, split=split, **overrides)  # the task's own score (VADER, R-AVG, ...)
    prompts = t.draw_prompts(n, seed)
    records = {getattr(r, "id", None): r for r in t.records}
    sources = [_source_text(records.get(p.id), t.decode(np.array(p.query))) for p in prompts]
    base = {
        "query": [t.decode(np.array(p.query)) for p in prompts],
        "source": sources,
        "reference": [p.reference for p in prompts],
    }
    if system in ("reference", "lead3"):
        from textenv.metrics import lead3
        from textenv.scorers import rouge_avg

        responses = (
            [p.reference or "" for p in prompts] if system == "reference" else [lead3(s) for s in sources]
        )
        valid = [True] * n
        scores = [rouge_avg(p.reference, r) for p, r in zip(prompts, responses)]
    else:
        sample_fn = hf_sample_fn(model, t.pad_id, temperature or t.config.temperature, t.vocab_size)
        out = sample_for_prompts(t, prompts, sample_fn, seed=seed).responses
        scored = t.score(t.queries(prompts), out, base["reference"])
        responses = [str(x).strip() for x in scored["truncated_text"]]
        valid = [bool(v) for v in scored["valid"]]
        scores = [float(x) for x in scored["score"]]
    return [
        {"query": q, "source": s, "reference": r, "response": resp, "valid": v, "score": sc}
        for q, s, r, resp, v, sc in zip(
            base["query"], base["source"], base["reference"], responses, valid, scores
        )
    ]


def _source_text(record, query_text: str) -> str:
    for field in ("article", "post", "text"):
        if record is not None and hasattr(record, field):
            return str(getattr(record, field))
    return query_text


def report(rows: list[dict], task: str) -> dict:
    """The metrics of one system's rows (see the module docstring)."""
    from textenv import metrics as M
    from textenv.tasks import get_task

    cfg = get_task(task)
    out: dict = {
        "n": len(rows),
        "score": float(np.mean([r["score"] for r in rows])),  # the task's own score of the responses
        "valid_rate": float(np.mean([r["valid"] for r in rows])),
    }
    refs = [r["reference"] for r in rows]
    if all(refs):
        out.update(
            {
                f"rouge/{k}": v
                for k, v in M.rouge_table(refs, [r["response"] for r in rows]).items()
                if k != "n"
            }
        )
        novelty = [M.novel_sentence_share(r["source"], r["response"]) for r in rows]
        novelty = [x for x in novelty if x is not None]
        out["novel_sentences"] = float(np.mean(novelty)) if novelty else None
        family = cfg.family if cfg.family in ("tldr", "cnndm") else None
        copies = [M.copies_start(r["source"], r["response"]) for r in rows]
        out["copies_start"] = float(np.mean(copies))
        if family:
            pre = [M.has_preamble(r["source"], family) for r in rows]
            with_pre = [c for c, p in zip(copies, pre) if p]
            without = [c for c, p in zip(copies, pre) if not p]
            out["copies_start_with_preamble"] = float(np.mean(with_pre)) if with_pre else None
            out["copies_start_without_preamble"] = float(np.mean(without)) if without else None
    return out


def win_rates(systems: dict[str, list[dict]], labeler) -> dict[str, float]:
    """Win rate of every system over the first (paired by prompt), judged by ``labeler``; a noiseless
    labeler's tie counts one half (:func:`rewards.labelers.pairwise_outcome`)."""
    from rewards.labelers import pairwise_outcome

    return {
        name: float(
            np.mean(
                [
                    pairwise_outcome(labeler, a["query"], a["response"], b["response"], a["reference"])
                    for a, b in zip(rows, first)
                ]
            )
        )
        for name, rows, first in paired_rows(systems)
    }


def sample_table(systems: dict[str, list[dict]], k: int = 3, width: int = 160) -> str:
    """A Markdown table of the first ``k`` prompts' responses, one column per system."""

    def cell(text: str) -> str:
        text = " ".join(str(text).split()).replace("|", "\\|")
        return text if len(text) <= width else text[: width - 1] + "…"

    names = list(systems)
    lines = ["| prompt | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i in range(min(k, len(systems[names[0]]))):
        row = systems[names[0]][i]
        lines.append(
            f"| {cell(row['query'])} | " + " | ".join(cell(systems[n][i]["response"]) for n in names) + " |"
        )
    return "\n".join(lines)


def evaluate(
    task: str,
    systems: list[str],
    n: int = 64,
    *,
    split: str = "test",
    seed: int = 0,
    labeler: str | None = None,
    device: str = "cpu",
    store: str | Path | None = None,
    eval_id: str | None = None,
    votes: int = 3,
    wait_s: float = 0.0,
    **overrides,
) -> dict:
    """Generate, score and compare ``systems`` (specs, folders, run folders or baselines) on ``task``.
    ``labeler="human"`` posts the pairs to ``store`` for people (see the module docstring)."""
    from rewards.labelers import make_labeler
    from textenv.tasks import get_task

    cfg = get_task(task)
    repeated = sorted({s for s in systems if systems.count(s) > 1})
    if repeated:
        raise ValueError(f"system(s) {repeated} listed twice; list each system once.")
    if labeler != "human" and (store is not None or eval_id is not None or wait_s):
        raise ValueError(
            f"store/eval_id/wait_s are for labeler='human' (people in the app), not labeler={labeler!r}; "
            "drop them or pass --labeler human."
        )
    if labeler == "human":
        eval_id, registered = check_human_evaluation(task, systems, store, eval_id, votes)
    outputs: dict[str, list[dict]] = {}
    tokenizer = None
    for name in systems:
        if name in ("lead3", "reference"):
            if cfg.family not in ("tldr", "cnndm"):
                raise ValueError(f"the {name!r} baseline needs a summarization task, not {task!r}.")
            outputs[name] = generate(name, task, n, split=split, seed=seed, tokenizer=tokenizer, **overrides)
            continue
        lm, tok = load_system(cfg.tokenizer if name == "zero-shot" else name, device=device)
        tokenizer = tokenizer or tok
        outputs[name] = generate(name, task, n, split=split, seed=seed, tokenizer=tok, model=lm, **overrides)
    result = {
        "task": task,
        "split": split,
        "n": n,
        "seed": seed,
        "systems": {k: report(v, task) for k, v in outputs.items()},
    }
    if labeler == "human":
        result["human_eval"] = human_evaluation_report(
            store, eval_id, task, outputs, votes=votes, seed=seed, tokenizer=tokenizer, registered=registered
        )
        if wait_s > 0:
            answers = human_results(store, eval_id, wait_s=wait_s)
            result["human_eval"]["results"] = answers
            result["win_rate_vs_" + systems[0]] = {k: r["win_rate"] for k, r in answers["systems"].items()}
    elif labeler and len(outputs) > 1:
        result["win_rate_vs_" + systems[0]] = win_rates(outputs, make_labeler(labeler))
    result["samples_markdown"] = sample_table(outputs)
    return result


def add_parser(sub) -> dict:
    p = sub.add_parser(
        "evaluate", help="score policies and baselines on held-out prompts (ROUGE, novelty, win rate)"
    )
    p.add_argument("--task", required=True)
    p.add_argument(
        "--system", action="append", required=True, help=f"a model spec/folder, a run folder, or {BASELINES}"
    )
    p.add_argument("--n", type=int, default=64, help="prompts")
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--labeler",
        default=None,
        help="who judges win rates: a mock labeler (e.g. summarization, sentiment) or 'human' (people in the "
        "labeling app; needs --store)",
    )
    p.add_argument("--store", default=None, help="--labeler human: the comparison store the app serves")
    p.add_argument(
        "--eval-id", default=None, help="--labeler human: a name for this evaluation (default: task-time)"
    )
    p.add_argument(
        "--votes", type=int, default=3, help="--labeler human: labelers per question (majority vote)"
    )
    p.add_argument(
        "--wait-s",
        type=finite_float,
        default=0.0,
        help="--labeler human: wait this long for the answers (0: post and exit)",
    )
    p.add_argument("--out", default=None, help="write the report as JSON here")
    p.add_argument("--device", default="cpu")
    r = sub.add_parser(
        "eval-results", help="win rates from people's answers to a `evaluate --labeler human` run"
    )
    r.add_argument("--store", required=True)
    r.add_argument("--eval-id", default=None, help="the evaluation (default: list the store's evaluations)")
    r.add_argument(
        "--wait-s", type=finite_float, default=0.0, help="wait this long for every question's votes"
    )
    r.add_argument("--out", default=None, help="write the results as JSON here")
    return {"evaluate": cli_evaluate, "eval-results": cli_eval_results}


def cli_evaluate(args) -> int:
    from textenv.models import ModelUnavailableError

    try:
        result = evaluate(
            args.task,
            args.system,
            args.n,
            split=args.split,
            seed=args.seed,
            labeler=args.labeler,
            device=args.device,
            store=args.store,
            eval_id=args.eval_id,
            votes=args.votes,
            wait_s=args.wait_s,
        )
    except (ModelUnavailableError, FileNotFoundError, ValueError) as exc:
        print(f"textenv evaluate: {exc}", file=sys.stderr)
        return 2
    for name, stats in result["systems"].items():
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in stats.items()}
        print(f"{name}: {json.dumps(shown)}")
    for key in [k for k in result if k.startswith("win_rate")]:
        rates = {k: None if v is None else round(v, 3) for k, v in result[key].items()}
        print(f"{key}: {json.dumps(rates)}")
    print(result["samples_markdown"])
    human = result.get("human_eval")
    if human:
        print(
            f"[evaluate] {human['questions']} pairwise questions posted as evaluation {human['eval_id']!r} "
            f"({human['votes']} votes each). Label them: {human['label_with']}; read the win rates: "
            f"{human['read_with']}",
            file=sys.stderr,
        )
        if "warning" in human:
            print(f"[evaluate] warning: {human['warning']}", file=sys.stderr)
        if "results" in human:
            print(format_human_results(human["results"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"[evaluate] report written to {args.out}", file=sys.stderr)
    return 0
