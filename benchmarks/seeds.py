"""Several seeds of one experiment, summarised from its JSON-lines results: per setting the mean ± sd over
seeds of each measure, the win rate pooled over the seeds with its standard error, and adjacent settings
compared two ways (the pooled difference in pooled standard errors, and the paired difference over seeds
in its own standard error, seed by seed).

    python -m benchmarks.seeds benchmarks/results/exp_label_efficiency_demo.jsonl --by labels
    python -m benchmarks.seeds benchmarks/results/exp_reward_vs_kl_demo.jsonl --by target_kl --where lr=7.5e-05 batch=32
    python -m benchmarks.seeds FILE --by labels --plot out.png --apart "0=RL on the true reward" --logx

A row without ``seed`` is seed 0 (the scripts' default, from before rows recorded it). Two rows with the
same setting and seed are refused (filter them with ``--where``): a seed counts once.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import numpy as np

from benchmarks.common import arg_parser

WIN = "win_rate_vs_initial"  # the paper's measure, the one adjacent settings are compared on
MEASURES = (
    WIN,
    "rm_heldout_accuracy",
    "frontier_fraction",
    "frontier_reward_share",
    "ppo_kl",
    "kl_last",
    "seconds",
)


def load(path: str | Path, where: dict[str, str] | None = None) -> list[dict]:
    """The rows of ``path`` whose fields equal ``where``'s (compared as text: ``lr=7.5e-05``)."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{path}, line {n}: not a JSON object ({exc.msg}); fix or remove the line."
                ) from exc
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path}, line {n}: not a JSON object (a {type(row).__name__}); fix or remove the line."
                )
            rows.append(row)
    where = where or {}
    return [r for r in rows if all(str(r.get(k)) == v for k, v in where.items())]


def _derived(row: dict) -> dict:
    """``frontier_reward_share`` (experiment 2: the PPO reward over the frontier's at its KL) added."""
    out = dict(row)
    if row.get("frontier_reward_at_ppo_kl") and row.get("ppo_reward") is not None:
        out["frontier_reward_share"] = row["ppo_reward"] / row["frontier_reward_at_ppo_kl"]
    return out


def summarize(rows: list[dict], by: str) -> dict:
    """``{"settings": [...], "adjacent": [...]}`` over the rows grouped by the field ``by``."""
    groups: dict = defaultdict(dict)
    for row in rows:
        if by not in row:
            raise ValueError(f"a row has no field {by!r} (fields: {sorted(row)}); pass --by one of them.")
        seed = row.get("seed") if row.get("seed") is not None else 0
        if seed in groups[row[by]]:
            raise ValueError(
                f"two rows with {by}={row[by]!r} and seed {seed} (git {groups[row[by]][seed].get('git')} and "
                f"{row.get('git')}); choose one with --where (e.g. --where git=...)."
            )
        groups[row[by]][seed] = _derived(row)
    settings = []
    for key in sorted(groups, key=lambda k: (k is None, k)):
        seeds = groups[key]
        entry = {by: key, "seeds": sorted(seeds), "n": len(seeds)}
        for m in MEASURES:
            vals = [r[m] for r in seeds.values() if r.get(m) is not None]
            if vals:
                entry[m] = {
                    "mean": float(np.mean(vals)),
                    "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                    "values": vals,
                }
        ses = [r.get("win_rate_se") for r in seeds.values()]
        if ses and all(s is not None for s in ses):
            # the mean of n independent estimates: sqrt(sum se_i^2) / n
            entry["win_rate_pooled_se"] = math.sqrt(sum(s * s for s in ses)) / len(ses)
        settings.append(entry)
    adjacent = []
    for a, b in pairwise(settings):
        if WIN not in a or WIN not in b:
            continue
        common = [
            s
            for s in sorted(set(a["seeds"]) & set(b["seeds"]))
            if groups[a[by]][s].get(WIN) is not None and groups[b[by]][s].get(WIN) is not None
        ]
        diff = b[WIN]["mean"] - a[WIN]["mean"]
        se = math.hypot(a.get("win_rate_pooled_se", math.nan), b.get("win_rate_pooled_se", math.nan))
        paired = [groups[b[by]][s][WIN] - groups[a[by]][s][WIN] for s in common]
        paired_se = float(np.std(paired, ddof=1) / math.sqrt(len(paired))) if len(paired) > 1 else None
        adjacent.append(
            {
                "from": a[by],
                "to": b[by],
                "difference": diff,
                "pooled_se": se,
                "in_pooled_se": diff / se if se > 0 else None,
                "paired": paired,
                "paired_se": paired_se,
                "in_paired_se": float(np.mean(paired)) / paired_se if paired_se else None,
            }
        )
    return {"by": by, "settings": settings, "adjacent": adjacent}


def _fmt(entry: dict, m: str) -> str:
    v = entry.get(m)
    if v is None:
        return "-"
    pct = m in (WIN, "rm_heldout_accuracy", "frontier_fraction", "frontier_reward_share")
    scale, unit = (100, "%") if pct else (1, "")
    sd = f" ± {v['sd'] * scale:.1f}" if v["sd"] is not None else ""
    return f"{v['mean'] * scale:.1f}{sd}{unit}"


def report(summary: dict) -> str:
    """The summary as Markdown tables (mean ± sd over seeds)."""
    by = summary["by"]
    present = [m for m in MEASURES if any(m in s for s in summary["settings"])]
    lines = [
        f"| {by} | seeds | " + " | ".join(present) + " | win rate pooled (± s.e.) |",
        "|" + "---|" * (len(present) + 3),
    ]
    for s in summary["settings"]:
        pooled = (
            f"{s[WIN]['mean'] * 100:.1f}% ± {s['win_rate_pooled_se'] * 100:.1f}"
            if "win_rate_pooled_se" in s
            else "-"
        )
        seeds = ", ".join(map(str, s["seeds"]))
        lines.append(f"| {s[by]} | {seeds} | " + " | ".join(_fmt(s, m) for m in present) + f" | {pooled} |")
    if summary["adjacent"]:
        lines += [
            "",
            "| from -> to | difference | in pooled s.e. | paired per seed | in paired s.e. |",
            "|---|---|---|---|---|",
        ]
        for a in summary["adjacent"]:
            paired = " / ".join(f"{d * 100:+.1f}" for d in a["paired"])
            t = f"{a['in_paired_se']:.1f}" if a["in_paired_se"] is not None else "-"
            pooled = f"{a['in_pooled_se']:.1f}" if a["in_pooled_se"] is not None else "-"
            lines.append(
                f"| {a['from']} -> {a['to']} | {a['difference'] * 100:+.1f} points | {pooled} | {paired} | {t} |"
            )
    return "\n".join(lines)


def plot_win_rates(summary: dict, path: Path, apart: list[str], logx: bool, title: str) -> None:
    """The mean win rate per setting with its pooled standard error; settings named in ``apart``
    (``VALUE`` or ``VALUE=LABEL``, e.g. experiment 4's ``0=RL on the true reward``) are drawn as
    points right of the others."""
    from benchmarks.experiments import plot

    labels = dict(a.split("=", 1) if "=" in a else (a, "") for a in apart)
    apart = list(labels)
    by = summary["by"]
    rated = [s for s in summary["settings"] if "win_rate_pooled_se" in s]
    line = [s for s in rated if str(s[by]) not in apart]
    if not line:
        raise ValueError(f"--plot: every setting is in --apart {apart}; nothing to draw as a line.")
    right = max(s[by] for s in line) * (1.3 if logx else 1.0)
    name = f"mean over seeds ({', '.join(map(str, sorted({n for s in line for n in s['seeds']})))})"
    points = {
        f"{labels[str(s[by])] or f'{by} = {s[by]}'} (drawn right of the grid)": (
            right,
            s[WIN]["mean"],
            s["win_rate_pooled_se"],
        )
        for s in rated
        if str(s[by]) in apart
    }
    plot(
        path,
        {name: [(s[by], s[WIN]["mean"]) for s in line]},
        by,
        "win rate vs the initial policy (±1 pooled s.e.)",
        title,
        points=points,
        errors={name: [s["win_rate_pooled_se"] for s in line]},
        logx=logx,
        hline=0.5,
    )


def main(argv=None) -> dict:
    p = arg_parser(__doc__)
    p.add_argument("results", help="a JSON-lines results file")
    p.add_argument("--by", required=True, help="the field that names a setting (labels, target_kl, ...)")
    p.add_argument(
        "--where", nargs="*", default=[], metavar="FIELD=VALUE", help="keep only rows whose FIELD is VALUE"
    )
    p.add_argument("--plot", help="draw the mean win rates to this PNG")
    p.add_argument(
        "--apart",
        nargs="*",
        default=[],
        metavar="VALUE[=LABEL]",
        help="settings drawn as separate points (--plot)",
    )
    p.add_argument("--logx", action="store_true", help="a log-scale x axis (--plot)")
    p.add_argument("--title", default="win rate over seeds", help="the plot's title")
    args = p.parse_args(argv)
    where = {}
    for item in args.where:
        if "=" not in item:
            p.error(f"--where {item!r}: write FIELD=VALUE, e.g. --where lr=7.5e-05")
        k, v = item.split("=", 1)
        where[k] = v
    if not Path(args.results).is_file():
        p.error(
            f"{args.results}: no such file; give a JSON-lines results file, e.g. benchmarks/results/demo.jsonl"
        )
    try:
        rows = load(args.results, where)
        if not rows:
            p.error(f"no rows in {args.results} match --where {' '.join(args.where)}")
        summary = summarize(rows, args.by)
    except ValueError as exc:  # a broken line, a missing --by field, a seed twice: one line, exit 2
        p.error(str(exc))
    print(report(summary))
    if args.plot:
        plot_win_rates(summary, Path(args.plot), args.apart, args.logx, args.title)
    return summary


if __name__ == "__main__":
    main()
