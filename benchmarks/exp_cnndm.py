"""Experiment 3 (paper Table 4 and §3.5): CNN/DM summarization on the embedded 300 articles.

Systems, all evaluated on the same held-out (test split) articles: lead-3; zero-shot (the embedded model);
supervised (``train-sft``: one epoch on the train split's reference summaries); RL from mock labels (a
reward model learned from best-of-4 questions labelled by the R-AVG mock labeler, then PPO); supervised +
RL (the same PPO started from the supervised model). Reported: ROUGE-1/2/L and R-AVG, the validity rate,
sentence novelty and how often the summary copies the article's opening (split by preamble) — the
paper's "smart copier" question.

Deviations (named): the RL runs of both starting points use one reward model, trained on samples of the
zero-shot model (the paper collected labels on each policy's own samples); the labelled samples need not
pass the truncation rule unless ``--require-valid`` (at small sizes few zero-shot samples do; invalid
responses still get the -1 penalty in RL).

    python -m benchmarks.exp_cnndm                              # small: 192-token articles, minutes
    python -m benchmarks.exp_cnndm --full                       # the task's 500 + 75 tokens, more data
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import RESULTS, add_rm_normalize_arg, arg_parser, emit, metadata, out_path
from benchmarks.experiments import ppo_config, run_ppo

TASK = "CNNDMSummarize-v0"


def parse_args(argv=None) -> argparse.Namespace:
    p = arg_parser(__doc__)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--full", action="store_true")
    p.add_argument("--query-length", type=int, default=192)
    p.add_argument("--response-length", type=int, default=32)
    p.add_argument("--sft-examples", type=int, default=0, help="0: the whole train split")
    p.add_argument("--labels", type=int, default=64)
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--eval-n", type=int, default=30, help="held-out articles (the test split has 30)")
    p.add_argument("--seed", type=int, default=0)
    add_rm_normalize_arg(p)
    p.add_argument(
        "--require-valid",
        action="store_true",
        help="label only samples that pass the truncation rule (the paper; few survive at small sizes)",
    )
    p.add_argument("--out-dir", default="runs/exp_cnndm")
    p.add_argument("--out", default=str(RESULTS / "exp_cnndm.jsonl"))
    args = p.parse_args(argv)
    if args.full:
        args.query_length, args.response_length, args.labels, args.iterations, args.batch = (
            500,
            75,
            512,
            40,
            32,
        )
    return args


def supervised(args, sft_dir: Path, overrides: dict) -> dict:
    """``train-sft`` on the train split's reference summaries, saved to ``sft_dir``; its metrics."""
    from agents.sft import SFTConfig, train_sft

    return train_sft(
        SFTConfig(
            task=TASK,
            model=args.model,
            out=str(sft_dir),
            max_examples=args.sft_examples,
            valid_examples=16,
            eval_every=10,
            seed=args.seed,
            overrides=overrides,
        ),
        progress=False,
    )


def rl_policies(args, out: Path, sft_dir: Path, truncate_after: int) -> dict:
    """PPO on the reward model in ``out/rm`` from the zero-shot and from the supervised model:
    ``{name: (trained LM, per-iteration rows)}``."""
    extra = (
        f"--env.overrides.truncate_after={truncate_after}",
        "--env.overrides.truncate_token=\n",
        "--policy.temperature=0.5",  # the paper's CNN/DM temperature
    )
    policies = {}
    for name, start in (("RL from mock labels", args.model), ("supervised + RL", str(sft_dir))):
        cfg = ppo_config(
            out / name.replace(" ", "_"),
            task=TASK,
            model=start,
            reward=str(out / "rm" / "reward_model"),
            iterations=args.iterations,
            batch=args.batch,
            lr=1e-4,
            seed=args.seed,
            extra=extra,
            query_length=args.query_length,
            response_length=args.response_length,
        )
        rows, agent = run_ppo(cfg, lambda text: 0.0)
        policies[name] = (agent.policy.lm.eval(), rows)
    return policies


def held_out_summaries(args, lm, tok, sft_dir: Path, policies: dict, overrides: dict) -> dict:
    """Every system's summaries of the same held-out articles."""
    from agents.evaluate import generate
    from textenv.models import load_causal_lm

    systems = {"lead-3": generate("lead3", TASK, args.eval_n, seed=args.seed, tokenizer=tok, **overrides)}
    sft_lm, _ = load_causal_lm(str(sft_dir))
    for name, model in (("zero-shot", lm), ("supervised", sft_lm), *((k, v[0]) for k, v in policies.items())):
        systems[name] = generate(
            name, TASK, args.eval_n, seed=args.seed, tokenizer=tok, model=model, temperature=0.5, **overrides
        )
    return systems


def print_table(table: dict) -> None:
    for name, stats in table.items():
        print(
            f"{name:22s} R-1 {stats['rouge/rouge1']:5.1f} R-2 {stats['rouge/rouge2']:5.1f} R-L {stats['rouge/rougeL']:5.1f} "
            f"R-AVG {stats['rouge/ravg']:5.1f}  novel {stats['novel_sentences'] or 0:.2f}  copies start "
            f"{stats['copies_start']:.2f}  valid {stats['valid_rate']:.2f}"
        )


def main(argv=None) -> dict:
    args = parse_args(argv)

    from agents.evaluate import report, win_rates
    from rewards.labelers import SummarizationLabeler
    from rewards.pipeline import mock_reward_model
    from textenv.models import load_causal_lm

    t0 = time.perf_counter()
    out = Path(args.out_dir)
    truncate_after = min(55, max(args.response_length // 2, 1))
    overrides = dict(
        query_length=args.query_length, response_length=args.response_length, truncate_after=truncate_after
    )
    lm, tok = load_causal_lm(args.model)
    sft_dir = out / "sft"
    sft = supervised(args, sft_dir, overrides)
    labeler = SummarizationLabeler()
    _, rm_metrics = mock_reward_model(
        TASK,
        lm,
        tok,
        labeler,
        model_spec=args.model,
        questions=args.labels,
        out_dir=out / "rm",
        heldout_questions=max(args.labels // 4, 4),
        seed=args.seed,
        normalize_samples=64,
        normalize=args.rm_normalize,
        require_valid=args.require_valid,
        **overrides,
    )
    policies = rl_policies(args, out, sft_dir, truncate_after)
    systems = held_out_summaries(args, lm, tok, sft_dir, policies, overrides)
    table = {name: report(rows, TASK) for name, rows in systems.items()}
    # the R-AVG labeler's win rate of every system over zero-shot, paired by article (ties count one half)
    win = win_rates({"zero-shot": systems["zero-shot"], **systems}, labeler)
    result = {
        "benchmark": "exp_cnndm",
        "sizes": overrides,
        "sft": {k: sft[k] for k in ("train_examples", "steps", "initial_valid_loss", "best_valid_loss")},
        "rm_heldout_accuracy": rm_metrics.get("eval/accuracy"),
        "rm_questions": rm_metrics["questions/train"],
        "rl_kl_last": {k: v[1][-1]["kl"] for k, v in policies.items()},
        "systems": table,
        "r_avg_win_rate_vs_zero_shot": win,
        "seconds": time.perf_counter() - t0,
        "model": args.model,
        **metadata(),
    }
    (out / "samples.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "samples.json").write_text(json.dumps({k: v[:5] for k, v in systems.items()}, indent=1))
    emit(result, out_path(args.out))
    print_table(table)
    return result


if __name__ == "__main__":
    main()
