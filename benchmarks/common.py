"""Shared helpers: the command-line parser, run metadata and result output (one JSON line per result)."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from agents.runfiles import git_sha

RESULTS = Path(__file__).parent / "results"


def add_rm_normalize_arg(p: argparse.ArgumentParser) -> None:
    """``--rm-normalize``: when the experiments' reward models are normalised (PAPER.md §1.3)."""
    from rewards.train import NORMALIZE_WHEN

    p.add_argument(
        "--rm-normalize",
        choices=list(NORMALIZE_WHEN),
        default="before_and_after",
        help="reward-model normalisation (PAPER.md §1.3): before and after training on fresh samples (the "
        "paper's), or after only (the runs recorded in BENCHMARKS.md before issue 15)",
    )


def arg_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose help starts with the module's docstring ``doc``, its line breaks kept."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def out_path(out: str) -> Path | None:
    """``--out``: ``-`` prints the results only (``None``), anything else is the JSON-lines file."""
    return None if out == "-" else Path(out)


def timed(fn) -> float:
    """Seconds ``fn()`` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_seconds(fn, repeat: int) -> float:
    """The fastest of ``repeat`` timed calls of ``fn()``, after one untimed warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def metadata(device: str = "cpu") -> dict:
    import torch

    from textenv.models import cpu_linear

    extra = {"cpu_matmul": cpu_linear.kernel()} if device == "cpu" else {}
    return {
        **extra,
        "git": git_sha(),
        "device": device
        if device != "cpu"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def emit(result: dict, out: Path | None = None) -> None:
    line = json.dumps(result, sort_keys=True)
    print(line, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as f:
            f.write(line + "\n")
