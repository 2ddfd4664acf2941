"""Shared helpers: run metadata and result output (one JSON line per result)."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def git_sha() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def metadata(device: str = "cpu") -> dict:
    import torch

    return {
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
