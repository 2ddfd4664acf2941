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
    assert row["coverage_exact"] and row["lost_answers"] == row["extra_answers"] == 0
    # leases: no question answered more often than it wants, none skipped over
    assert row["over_answered_questions"] == row["skipped_over_questions"] == 0
    assert sum(int(k) * v for k, v in row["answers_per_question"].items()) == 60


def test_coverage_counts_over_answered_and_skipped_questions(tmp_path):
    """The coverage check can fail: a question answered twice and one skipped over are both reported."""
    from benchmarks.bench_labeling import coverage
    from rewards.comparisons import Comparison, ComparisonStore

    path = tmp_path / "labels.db"
    with ComparisonStore(path) as store:
        ids = store.add(
            Comparison(task="t", query=[1], samples=[[2], [3]], query_text="c", sample_texts=["a", "b"])
            for _ in range(4)
        )
        for who in ("ann", "bob"):  # q1 twice (it wants one answer); q2 never; q3 once
            store.record_label(ids[0], {"best": 0}, who)
        store.record_label(ids[2], {"best": 1}, "ann")
    out = coverage(path, labelers=2)
    assert out["over_answered_questions"] == 1 and out["skipped_over_questions"] == 1
    assert not out["coverage_exact"] and out["answers_per_question"] == {"1": 1, "2": 1}


def test_bench_labeling_scaling_tiny(tmp_path):
    """--scaling at a tiny size: one row per size with p50/p95 of next and answer, against the app."""
    from benchmarks.bench_labeling import main

    out = tmp_path / "scaling.jsonl"
    main(["--scaling", "300", "--rounds", "20", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["questions"] for r in rows] == [300]
    for r in rows:
        assert 0 < r["next_ms_p50"] <= r["next_ms_p95"] and 0 < r["answer_ms_p50"] <= r["answer_ms_p95"]
        # half the store answered up front, plus the 30 rounds (warm-up included) of the run
        assert r["pending_questions_reported"] == r["questions"] // 2 - 30 + 1


def test_bench_labeling_scaling_refuses_bad_sizes():
    from benchmarks.bench_labeling import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--scaling", "10k"])
    with pytest.raises(SystemExit):
        parse_args(["--scaling", "50", "--rounds", "200"])
