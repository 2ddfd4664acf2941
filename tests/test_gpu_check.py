"""The prepared GPU check runs end to end in its CPU dry-run mode (issue 17): every check, every algorithm."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_every_check(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "GPU_CHECK_NO_WHEELS": "1"}
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run", "--iterations", "1", "--device", "cpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    checks = [r["check"] for r in rows]
    assert checks[:4] == ["matmul", "paper_iteration", "paper_iteration", "logprob_agreement"]
    paper = {r["precision"]: r for r in rows if r["check"] == "paper_iteration"}
    assert set(paper) == {"fp32", "bf16"}
    for r in paper.values():
        assert r["dry_run"] and r["iteration_s_median"] > 0 and r["flops_per_iteration"] > 0
        assert set(r["phases_s"]) == {"sample", "score", "reference", "forward", "update"}
        assert r["ratio_to_flop_bound"] > 1
    agreement = next(r for r in rows if r["check"] == "logprob_agreement")
    assert 0 < agreement["max_abs_diff"] < 0.05
    smoke = {r["algo"]: r for r in rows if r["check"] == "smoke"}
    assert set(smoke) == {"ppo", "rloo", "grpo", "sb3-ppo"}
    assert all(r["ok"] for r in smoke.values()), smoke
