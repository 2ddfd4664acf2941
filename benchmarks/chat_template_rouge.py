"""Zero-shot CNN/DM summaries of the embedded instruct model with and without its chat template (issue 16).

The same held-out articles (the test split), the same sampling seed and the task's own lengths (500-token
articles, 75-token summaries, temperature 0.5, the paper's newline truncation); the only difference is
``chat_template``: the paper's plain ``Article:\\n\\n{article}\\n\\nTL;DR:`` context, or that text as the user
turn of SmolLM2-Instruct's chat template with the assistant's turn opened. Reported per setting: R-AVG
(mean of ROUGE-1/2/L F1) with its standard error over articles, ROUGE-1/2/L, the share of responses that
pass the truncation rule, and the paired difference with its standard error.

    python -m benchmarks.chat_template_rouge                  # all 30 test articles, ~5 min on 2 cores
    python -m benchmarks.chat_template_rouge --n 8 --query-length 192 --response-length 32 --out -
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import RESULTS, arg_parser, emit, metadata, out_path

TASK = "CNNDMSummarize-v0"


def parse_args(argv=None):
    p = arg_parser(__doc__)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=30, help="test articles (the embedded test split has 30)")
    p.add_argument("--query-length", type=int, default=None, help="default: the task's 500")
    p.add_argument("--response-length", type=int, default=None, help="default: the task's 75")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "chat_template_rouge.jsonl"))
    return p.parse_args(argv)


def main(argv=None) -> dict:
    from agents.evaluate import generate, report
    from textenv.models import load_causal_lm
    from textenv.scorers import rouge_avg

    args = parse_args(argv)
    lengths = {
        k: v for k, v in (("query_length", args.query_length), ("response_length", args.response_length)) if v
    }
    if "response_length" in lengths:  # keep the truncation window inside a shorter response
        lengths["truncate_after"] = max(0, lengths["response_length"] - 20)
    lm, tok = load_causal_lm(args.model)
    lm.eval()
    settings, per_article = {}, {}
    for chat in (False, True):
        t0 = time.perf_counter()
        rows = generate(
            "zero-shot",
            TASK,
            args.n,
            split="test",
            seed=args.seed,
            tokenizer=tok,
            model=lm,
            chat_template=chat,
            **lengths,
        )
        r = [rouge_avg(row["reference"], row["response"]) for row in rows]
        per_article[chat] = np.array(r)
        rep = report(rows, TASK)
        settings["chat_template" if chat else "plain"] = {
            "r_avg": float(np.mean(r)),
            "r_avg_se": float(np.std(r, ddof=1) / np.sqrt(len(r))),
            **{k: rep[k] for k in rep if k.startswith("rouge/")},
            "valid_rate": rep["valid_rate"],
            "seconds": round(time.perf_counter() - t0, 1),
            "example": rows[0]["response"][:200],
        }
    diff = per_article[True] - per_article[False]
    result = {
        "bench": "chat_template_rouge",
        "model": args.model,
        "task": TASK,
        "n": args.n,
        "seed": args.seed,
        **lengths,
        "settings": settings,
        "diff_r_avg": float(diff.mean()),
        "diff_r_avg_se": float(diff.std(ddof=1) / np.sqrt(len(diff))),
        **metadata(),
    }
    emit(result, out_path(args.out))
    return result


if __name__ == "__main__":
    main()
