"""Experiment 4: label efficiency. Win rate of the trained policy over the initial (zero-shot) policy, as a
function of the number of mock labels its reward model learned from (the labeler judges held-out prompts),
with RL directly on the mock reward as the ceiling. It runs experiment 1's pipeline
(:mod:`benchmarks.exp_mock_sentiment`) on a label grid and plots win rate against labels.

    python -m benchmarks.exp_label_efficiency                    # small: 32, 128 and 512 labels
    python -m benchmarks.exp_label_efficiency --full             # 500, 2,000, 5,000 labels, longer runs
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import RESULTS, emit, out_path
from benchmarks.exp_mock_sentiment import parser, run
from benchmarks.experiments import plot


def main(argv=None) -> list[dict]:
    p = parser()
    p.set_defaults(
        labels=[32, 128, 512],
        eval_prompts=64,  # win rate is this experiment's only measure: halve its variance vs experiment 1
        out_dir="runs/exp_label_efficiency",
        plot=str(RESULTS / "exp_label_efficiency_curves.png"),
        out=str(RESULTS / "exp_label_efficiency.jsonl"),
    )
    p.add_argument("--win-plot", default=str(RESULTS / "exp_label_efficiency.png"))
    args = p.parse_args(argv)
    if args.full:
        args.labels, args.iterations, args.batch = [500, 2000, 5000], 60, 64
    results = run(args)
    rm_rows = [r for r in results if r["labels"]]
    direct = next(r for r in results if not r["labels"])
    plot(
        Path(args.win_plot),
        {"reward model from N labels": [(r["labels"], r["win_rate_vs_initial"]) for r in rm_rows]},
        "labels (log scale)",
        "win rate vs the initial policy (±1 s.e.)",
        "label efficiency (mock sentiment)",
        points={
            "RL on the mock reward (no labels; drawn right of the grid)": (
                max(args.labels) * 1.3,
                direct["win_rate_vs_initial"],
                direct["win_rate_se"],
            )
        },
        errors={"reward model from N labels": [r["win_rate_se"] for r in rm_rows]},
        logx=True,
        hline=0.5,
    )
    for row in results:
        row["benchmark"] = "exp_label_efficiency"
        emit(row, out_path(args.out))
    return results


if __name__ == "__main__":
    main()
