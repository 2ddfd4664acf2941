"""The comparison store: schema, labels, concurrency, JSONL and OpenAI import/export (must-have 25)."""

import json
import multiprocessing as mp

import pytest

from rewards.comparisons import Comparison, ComparisonStore, LabelFileError


def q(task="BookSentiment-v0", n=4, label=None):
    return Comparison(
        task=task,
        query=[1, 2, 3],
        samples=[[10 + i, 11 + i] for i in range(n)],
        label=label,
        query_text="q",
        sample_texts=[f"s{i}" for i in range(n)],
    )


def test_add_pending_label_and_duplicates(tmp_path):
    with ComparisonStore(tmp_path / "s.db") as store:
        ids = store.add([q(), q(), q(task="TLDRSummarize-v0")])
        assert store.count() == 3 and store.count(labelled=False) == 3
        assert len(store.pending(task="BookSentiment-v0")) == 2
        c = store.record_label(ids[0], {"best": 2}, "alice")
        assert c.id == ids[0] and c.best == 2 and c.labeler == "alice" and c.labeled is not None
        dup = store.record_label(ids[0], {"best": 1}, "bob")  # a second judgement: a new row
        assert dup.id != ids[0] and dup.question_id == c.question_id and dup.best == 1
        assert store.count(labelled=True) == 2 and store.count() == 4
        assert [x.labeler for x in store.labelled()] == ["alice", "bob"]
        with pytest.raises(ValueError, match=r"best=7 must be an int in \[0, 4\)"):
            store.record_label(ids[1], {"best": 7}, "carol")
        with pytest.raises(KeyError, match="No comparison with id 999"):
            store.get(999)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(samples=[[1]]), "at least 2 samples"),
        (dict(label_type="scalar_rating"), "exactly 1 sample"),
        (dict(label_type="pairs"), "label_type 'pairs'"),
        (dict(label={"score": 1.0}), "needs the key 'best'"),
        (dict(query=[-1]), "non-negative ints"),
    ],
)
def test_comparison_validation(kwargs, match):
    base = dict(task="t", query=[1], samples=[[2], [3]])
    with pytest.raises(ValueError, match=match):
        Comparison(**{**base, **kwargs})


def test_scalar_label_types_roundtrip(tmp_path):
    with ComparisonStore(tmp_path / "s.db") as store:
        store.add(
            [
                Comparison(
                    task="t", query=[1], samples=[[2]], label_type="scalar_rating", label={"score": 3.5}
                ),
                Comparison(
                    task="t",
                    query=[1],
                    samples=[[2], [3]],
                    label_type="scalar_compare",
                    label={"difference": -1.0},
                ),
            ]
        )
        assert [c.label for c in store.labelled(label_type="scalar_rating")] == [{"score": 3.5}]
        assert [c.label for c in store.labelled(label_type="scalar_compare")] == [{"difference": -1.0}]


def _writer(path, worker, n):
    with ComparisonStore(path) as store:
        for i in range(n):
            store.add(
                [Comparison(task=f"w{worker}", query=[worker, i], samples=[[1], [2]], label={"best": i % 2})]
            )


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "s.db"
    ComparisonStore(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with ComparisonStore(path) as store:
        rows = store.all()
        assert len(rows) == 160
        assert {tuple(c.query) for c in rows} == {(w, i) for w in range(4) for i in range(40)}


def test_jsonl_roundtrip_and_atomic_import(tmp_path):
    with ComparisonStore(tmp_path / "a.db") as a:
        a.add([q(label={"best": 1}), q()])
        assert a.export_jsonl(tmp_path / "out.jsonl") == 2
    with ComparisonStore(tmp_path / "b.db") as b:
        assert b.import_jsonl(tmp_path / "out.jsonl") == 2
        assert [c.label for c in b.all()] == [{"best": 1}, None]
        lines = (tmp_path / "out.jsonl").read_text().splitlines()
        bad = json.loads(lines[1])
        bad["samples"] = [[1]]
        (tmp_path / "bad.jsonl").write_text(lines[0] + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(LabelFileError, match=r"bad.jsonl:2: a best_of_n row needs at least 2 samples"):
            b.import_jsonl(tmp_path / "bad.jsonl")
        assert b.count() == 2  # nothing half-imported


def test_openai_schema_import_remaps_pad_and_is_atomic(tmp_path):
    rows = [
        {"query": [5, 6, 50259, 50259], **{f"sample{i}": [7 + i, 13, 50259] for i in range(4)}, "best": 3},
        {"query": [8, 50259, 50259, 50259], **{f"sample{i}": [9, 13, 50259] for i in range(4)}, "best": 0},
    ]
    path = tmp_path / "offline_5k.json"
    path.write_text(json.dumps(rows))
    with ComparisonStore(tmp_path / "s.db") as store:
        assert store.import_openai(path, task="BookSentiment-v0") == 2
        first = store.all()[0]
        assert first.query == [5, 6] and first.samples[3] == [10, 13] and first.best == 3
        assert first.labeler == "openai" and first.label_type == "best_of_n"
        # export back to the schema, padded to fixed lengths with 50259
        assert store.export_openai(tmp_path / "back.json", query_length=4, response_length=3) == 2
        assert json.loads((tmp_path / "back.json").read_text()) == rows


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"query": [1], "sample0": [2], "best": 0}, "needs sample0 and sample1"),
        ({"query": [1], "sample0": [2], "sample1": [3], "best": 2}, r"best=2 is not an index in \[0, 2\)"),
        ({"query": "abc", "sample0": [2], "sample1": [3], "best": 0}, "query must be a list of token ids"),
        ({"sample0": [2], "sample1": [3], "best": 0}, "missing key 'query'"),
        ([1, 2], "expected a JSON object, got an array"),
    ],
)
def test_openai_schema_malformed_rows(tmp_path, row, match):
    good = {"query": [1], "sample0": [2], "sample1": [3], "best": 1}
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with ComparisonStore(tmp_path / "s.db") as store:
        with pytest.raises(LabelFileError, match="labels.jsonl:2: " + match):
            store.import_openai(path, task="t")
        assert store.count() == 0
    (tmp_path / "broken.json").write_text('[{"query": [1],\n oops]')
    with (
        ComparisonStore(tmp_path / "s.db") as store,
        pytest.raises(LabelFileError, match=r"broken.json:2: not valid JSON"),
    ):
        store.import_openai(tmp_path / "broken.json", task="t")


def test_store_counts_questions_and_closes_as_a_context_manager(tmp_path):
    import sqlite3

    from rewards.labeling.store import LabelingStore

    with ComparisonStore(tmp_path / "s.db") as store:
        ids = store.add([q(), q(), q()])
        store.record_label(ids[0], {"best": 1}, "alice")
        store.record_label(ids[0], {"best": 2}, "bob")  # a second judgement of the same question
        assert store.count(labelled=True) == 2 and store.count_questions(labelled=True) == 1
        assert store.count_questions() == 3 and store.count_questions(task="other") == 0
    with pytest.raises(sqlite3.ProgrammingError):
        store.count()
    with LabelingStore(tmp_path / "s.db") as labeling:
        assert labeling.comparisons.count_questions(labelled=False) == 2
    with pytest.raises(sqlite3.ProgrammingError):
        labeling.comparisons.count()


def test_count_questions_by_id_prefix(tmp_path):
    from rewards.comparisons import Comparison, ComparisonStore

    with ComparisonStore(tmp_path / "s.db") as store:
        store.add(
            Comparison(task="t", query=[1], samples=[[2], [3]], question_id=qid)
            for qid in ("run-a-q0", "run-a-q1", "run-b-q0", "other")
        )
        assert store.count_questions(task="t", id_prefix="run-a-") == 2
        assert store.count_questions(id_prefix="run-") == 3
        assert store.count_questions(task="u", id_prefix="run-") == 0
        with pytest.raises(ValueError, match=r"id_prefix='run\*' must be a literal prefix"):
            store.count_questions(id_prefix="run*")
