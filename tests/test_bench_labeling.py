"""The load-test benchmark at a tiny size (so that it cannot rot): restart mid-run, exactly-once."""

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def test_bench_labeling_tiny_with_restart(tmp_path):
    from benchmarks.bench_labeling import main

    out = tmp_path / "labeling.jsonl"
    main(["--labelers", "3", "--answers", "20", "--out", str(out)])
    row = json.loads(out.read_text())
    assert row["exactly_once"] and row["acknowledged"] == row["rows_in_store"] == 60
    assert row["restart_seconds"] is not None
