"""Label import/export that cannot corrupt a store (issue 15): fresh question ids with the source id kept,
strict validation naming FILE:LINE for every bad input, all or nothing, and the ``textenv labels`` CLI."""

import gzip
import json
import sqlite3
from dataclasses import asdict

import pytest

from rewards.comparisons import Comparison, ComparisonStore, LabelFileError


def row(**over):
    """A line in export_jsonl's schema (a pending best-of-2 question unless told)."""
    base = {
        "task": "t",
        "query": [1, 2],
        "samples": [[3], [4]],
        "label_type": "best_of_n",
        "question_id": "x1",
    }
    return {**base, **over}


def write(path, lines):
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


def snapshot(store):
    return [asdict(c) for c in store.all()]


@pytest.fixture
def store(tmp_path):
    """A store that already holds two questions, q1 and q2."""
    with ComparisonStore(tmp_path / "s.db") as s:
        s.add([Comparison(task="t", query=[7], samples=[[8], [9]]) for _ in range(2)])
        assert [c.question_id for c in s.all()] == ["q1", "q2"]
        yield s


# ------------------------------------------------------------------------------------- fresh ids
def test_imported_questions_get_fresh_ids_and_keep_the_source_id(tmp_path, store):
    from rewards.labeling.store import LabelingStore

    path = write(
        tmp_path / "in.jsonl",
        [
            row(question_id="q1", query=[11]),
            row(question_id="q2", query=[12]),
            # a second judgement of the file's q1 (a duplicate for agreement): same new id as line 1
            row(question_id="q1", query=[11], label={"best": 0}, labeler="bob", labeled=5.0),
        ],
    )
    assert store.import_jsonl(path) == 3
    a, b, dup = store.all()[2:]
    assert len({"q1", "q2", a.question_id, b.question_id}) == 4  # no clash with the store's own ids
    assert dup.question_id == a.question_id and dup.best == 0 and dup.labeler == "bob"
    assert (a.source_id, b.source_id, dup.source_id) == ("q1", "q2", "q1")
    assert store.all()[0].source_id is None
    # a labeler can answer the store's q1/q2 and both imported questions: no false 409
    with LabelingStore(store.path, duplicate_share=0.0) as labeling:
        for question in (*store.all()[:2], a, b):
            assert labeling.answer("alice", question.id, "choose", 1)["question_id"] == question.question_id
        assert labeling.progress("alice")["answered"] == 4


def test_the_same_file_twice_is_refused_unless_allow_repeat(tmp_path, store, capsys):
    """A second import of the same bytes would add every question again: refused, naming the first import,
    store unchanged; ``allow_repeat`` (``--allow-repeat``) imports it again; other bytes are a new file."""
    path = write(
        tmp_path / "in.jsonl", [row(question_id="q1", query=[11]), row(question_id="q2", query=[12])]
    )
    assert store.import_jsonl(path) == 2
    before = snapshot(store)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(path.read_bytes())  # another name, the same bytes
    with pytest.raises(
        LabelFileError,
        match=r"copy.jsonl: this store imported the same file .* from .*in.jsonl \(2 rows\); a second import would add every question again\. Pass allow_repeat=True .*; nothing was imported\.",
    ):
        store.import_jsonl(copy)
    assert snapshot(store) == before
    assert cli("labels", "import", str(path), "--store", str(store.path)) == 2
    assert "--allow-repeat" in capsys.readouterr().err and snapshot(store) == before
    assert cli("labels", "import", str(path), "--store", str(store.path), "--allow-repeat") == 0
    assert store.count() == len(before) + 2
    assert store.import_jsonl(write(tmp_path / "other.jsonl", [row(question_id="q1", query=[13])])) == 1


def test_rows_without_question_id_are_questions_of_their_own(tmp_path, store):
    path = write(tmp_path / "in.jsonl", [row(question_id=""), row(question_id="")])
    store.import_jsonl(path)
    ids = [c.question_id for c in store.all()]
    assert len(set(ids)) == 4 and [c.source_id for c in store.all()[2:]] == [None, None]


def test_two_questions_under_one_source_id_are_refused(tmp_path, store):
    before = snapshot(store)
    path = write(tmp_path / "in.jsonl", [row(question_id="a"), row(question_id="a", query=[99])])
    with pytest.raises(LabelFileError, match=r"in.jsonl:2: question_id 'a' is also on line 1 for another"):
        store.import_jsonl(path)
    assert snapshot(store) == before


def test_a_store_file_of_the_old_schema_gains_source_id(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE comparisons (id INTEGER PRIMARY KEY AUTOINCREMENT, question_id TEXT NOT NULL, "
        "task TEXT NOT NULL, label_type TEXT NOT NULL, query TEXT NOT NULL, samples TEXT NOT NULL, "
        "query_text TEXT, sample_texts TEXT, reference TEXT, label TEXT, labeler TEXT, "
        "policy_version INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, labeled REAL);"
        "INSERT INTO comparisons (question_id, task, label_type, query, samples, label, labeler, created, labeled) "
        "VALUES ('q1', 't', 'best_of_n', '[1]', '[[2],[3]]', '{\"best\": 1}', 'ann', 1.0, 2.0);"
        # an id an old import kept from its file: the store's next own id must not reuse it
        "INSERT INTO comparisons (question_id, task, label_type, query, samples, created) "
        "VALUES ('q3', 't', 'best_of_n', '[1]', '[[2],[3]]', 1.0);"
    )
    conn.commit()
    conn.close()
    with ComparisonStore(path) as s:
        assert [c.best for c in s.labelled()] == [1] and s.all()[0].source_id is None
        s.add([Comparison(task="t", query=[1], samples=[[2], [3]])])
        assert s.all()[-1].question_id == "q3-2"
    with ComparisonStore(path) as s:  # opening again: the column is there, nothing to do
        assert s.count() == 3


# ------------------------------------------------------------------------------ bad rows, one each
BIG = 10**12
BAD_LINES = [
    ("null", "expected a JSON object, got null"),
    ("42", "expected a JSON object, got a number"),
    ('"x"', "expected a JSON object, got a string"),
    ("[1]", "expected a JSON object, got an array"),
    ("true", "expected a JSON object, got true"),
    ('{"task": "t",', "not valid JSON"),
    (row(label={"best": True}), r"label.best must be an integer, got true"),
    (row(label={"best": 1.0}), r"label.best must be an integer, got 1.0"),
    (row(label={"best": "1"}), r'label.best must be an integer, got "1"'),
    (row(label={"best": 2}), r"label.best=2 is not an index of the 2 samples \(0..1\)"),
    (row(label={"best": -1}), r"label.best=-1 is negative"),
    (row(label={"score": 1.0}), r"unknown key 'label.score'; remove it \(known keys: best\)"),
    (row(label={}), r"missing key 'label.best'; add it; a best_of_n label is \{\"best\": i\}"),
    (row(label=[0]), r"label must be an object, got \[0\]"),
    (row(query=["1"]), r'query\[0\] must be an integer, got "1"'),
    (row(query=[1, True]), r"query\[1\] must be an integer, got true"),
    (row(query=[1.0]), r"query\[0\] must be an integer, got 1.0"),
    (row(query=[-1]), r"query\[0\]=-1 is negative"),
    (row(query="1 2"), r'query must be a list of token ids, got "1 2"'),
    (row(samples=[[3], [BIG]]), r"samples\[1\]\[0\]=1000000000000 is not a token id"),
    (row(samples=[[3]]), "a best_of_n row needs at least 2 samples, got 1"),
    (row(label_type="scalar_rating"), "a scalar_rating row needs exactly 1 sample, got 2"),
    (row(label_type="pairs"), r'label_type="pairs" is not one of best_of_n'),
    (row(policy_version="3"), r'policy_version must be an integer, got "3"'),
    (row(policy_version=False), r"policy_version must be an integer, got false"),
    (row(created="now"), r'created must be a number, got "now"'),
    (row(task=""), "task must not be empty"),
    (row(task=5), "task must be a string, got 5"),
    (row(sample_texts=["a"]), "1 sample_texts for 2 samples"),
    (row(labeler="ann"), "an unlabelled row .label null. has a labeler"),
    (row(foo=1, bar=2), r"unknown keys 'foo', 'bar'; remove them \(known keys: task, query"),
    ({"task": "t", "query": [1], "samples": [[2], [3]], "best": 0}, r"unknown key 'best'.*--format openai"),
    ({"query": [1], "sample0": [2], "sample1": [3], "best": 0}, r"unknown keys .*--format openai --task"),
    ({"query": [1], "samples": [[2], [3]]}, "missing key 'task'; add it"),
    (
        row(label_type="scalar_rating", samples=[[3]], label={"score": "high"}),
        r'label.score must be a number, got "high"',
    ),
    (
        row(label_type="scalar_rating", samples=[[3]], label={"best": 0}),
        r"unknown key 'label.best'.*a scalar_rating label is \{\"score\": x\}",
    ),
    (
        row(label_type="scalar_compare", samples=[[3], [4]], label={"difference": False}),
        "label.difference must be a number, got false",
    ),
    # NaN and infinity: json.loads takes them, the import does not (nor 1e400, which is inf as a float)
    ('{"task": "t", "query": [1], "samples": [[2]], "label_type": "scalar_rating", "label": {"score": NaN}}', "NaN is not a finite number"),
    ('{"task": "t", "query": [1], "samples": [[2]], "label_type": "scalar_rating", "label": {"score": -Infinity}}', "-Infinity is not a finite number"),
    ('{"task": "t", "query": [1], "samples": [[2]], "label_type": "scalar_rating", "label": {"score": 1e400}}', "1e400 is not a finite number"),
    ('{"task": "t", "query": [1, NaN], "samples": [[2], [3]]}', "NaN is not a finite number"),
    ('{"task": "t", "query": [' + "9" * 5000 + '], "samples": [[2], [3]]}', r"not valid JSON \(a number with too many digits\)"),
    ("[" * 100_000 + "]" * 100_000, r"not valid JSON \(nested too deeply\)"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_a_bad_line_is_refused_naming_file_line_and_reason(tmp_path, store, line, message):
    before = snapshot(store)
    path = write(tmp_path / "bad.jsonl", [row(), line, row()])
    with pytest.raises(LabelFileError, match=r"bad.jsonl:2: " + message) as info:
        store.import_jsonl(path)
    assert str(info.value).endswith("; nothing was imported.") and "\n" not in str(info.value)
    assert len(str(info.value)) - len(str(path)) < 400  # never the whole input echoed back
    assert snapshot(store) == before


def test_token_ids_are_checked_against_the_vocabulary_when_given(tmp_path, store):
    before = snapshot(store)
    path = write(tmp_path / "v.jsonl", [row(question_id="a"), row(question_id="b", query=[1, 100])])
    with pytest.raises(
        LabelFileError,
        match=r"v.jsonl:2: query\[1\]=100 is outside the vocabulary of 100 token ids \(0..99\)",
    ):
        store.import_jsonl(path, vocab_size=100)
    assert snapshot(store) == before
    assert store.import_jsonl(path, vocab_size=101) == 2
    with pytest.raises(ValueError, match="vocab_size=0 must be a positive integer"):
        store.import_jsonl(path, vocab_size=0)


def test_the_store_remembers_its_vocabulary_and_imports_check_against_it(tmp_path, store, tiny_gpt2):
    """`textenv sample` (sample_questions) records the model's vocabulary in the store; an import with no
    vocabulary size given then refuses ids outside it (10**12 used to be accepted and fail much later in
    train-reward with "index out of range")."""
    from rewards.pipeline import sample_questions

    model, tok = tiny_gpt2
    assert store.vocab_size is None
    sample_questions(
        store,
        "BookSentiment-v0",
        model,
        tok,
        n_queries=1,
        n_samples=2,
        require_valid=False,
        response_length=2,
        truncate_after=0,
        query_length=4,
        min_query_length=1,
    )
    vocab = store.vocab_size
    assert vocab == max(len(tok), model.config.vocab_size)
    before = snapshot(store)
    path = write(tmp_path / "v.jsonl", [row(question_id="a", samples=[[3], [10**12]])])
    with pytest.raises(
        LabelFileError,
        match=rf"v.jsonl:1: samples\[1\]\[0\]=1000000000000 is outside the vocabulary of {vocab} token ids",
    ):
        store.import_jsonl(path)
    assert snapshot(store) == before
    store.record_vocab_size(10)  # a smaller tokenizer writing here later: the largest is kept
    assert store.vocab_size == vocab
    with pytest.raises(ValueError, match="vocab_size=0 must be a positive integer"):
        store.record_vocab_size(0)


def test_a_huge_line_is_handled_and_never_echoed(tmp_path, store):
    ok = row(query=list(range(200_000)))
    bad = row(query="x" * 5_000_000)
    path = write(tmp_path / "huge.jsonl", [ok, bad])
    with pytest.raises(LabelFileError, match=r"huge.jsonl:2: query must be a list of token ids") as info:
        store.import_jsonl(path)
    assert len(str(info.value)) - len(str(path)) < 400
    write(path, [ok])
    assert store.import_jsonl(path) == 1 and len(store.all()[-1].query) == 200_000


# --------------------------------------------------------------------------- files that are not text
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)), r"bin.jsonl: not a UTF-8 text file \(byte 0x00 on line 1, column 1\)"),
        (gzip.compress(b'{"task": "t"}\n'), r"bin.jsonl: not a UTF-8 text file: it is gzip-compressed"),
        (
            json.dumps(row()).encode() + b'\n{"task": "caf\xe9"}\n',
            r"bin.jsonl: not a UTF-8 text file \(byte 0xe9 on line 2, column 14\)",
        ),
    ],
)
def test_a_binary_file_is_named_not_a_text_file(tmp_path, store, content, message):
    before = snapshot(store)
    (tmp_path / "bin.jsonl").write_bytes(content)
    with pytest.raises(LabelFileError, match=message):
        store.import_jsonl(tmp_path / "bin.jsonl")
    assert snapshot(store) == before


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_file_is_an_error(tmp_path, store, content):
    """Documented choice: an empty label file is almost always a wrong path or a failed export."""
    before = snapshot(store)
    (tmp_path / "empty.jsonl").write_text(content)
    with pytest.raises(LabelFileError, match=r"empty.jsonl: no rows \(the file is empty or blank\)"):
        store.import_jsonl(tmp_path / "empty.jsonl")
    (tmp_path / "empty.json").write_text(content or "[]")
    with pytest.raises(LabelFileError, match=r"empty.json: no rows"):
        store.import_openai(tmp_path / "empty.json", task="t")
    assert snapshot(store) == before


def test_a_utf8_bom_is_fine(tmp_path, store):
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(row(query_text="caf\u00e9")).encode())
    assert store.import_jsonl(tmp_path / "bom.jsonl") == 1 and store.all()[-1].query_text == "caf\u00e9"


# ---------------------------------------------------------------------------------------- round trip
def test_round_trip_into_a_fresh_store_keeps_every_label(tmp_path):
    with ComparisonStore(tmp_path / "a.db") as a:
        ids = a.add(
            [
                Comparison(task="t", query=[1], samples=[[2], [3], [4]], query_text="q", sample_texts=["a", "b", "c"]),
                Comparison(task="t", query=[1], samples=[[2]], label_type="scalar_rating", label={"score": 3.5}),
                Comparison(task="u", query=[5], samples=[[2], [3]], label_type="scalar_compare", label={"difference": -1}),
                Comparison(task="t", query=[6], samples=[[7], [8]], reference="ref", policy_version=3),
            ]
        )  # fmt: skip
        a.record_label(ids[0], {"best": 2}, "alice")
        a.record_label(ids[0], {"best": 1}, "bob")  # a duplicate judgement of the same question
        assert a.export_jsonl(tmp_path / "all.jsonl") == 5
        assert a.export_jsonl(tmp_path / "lab.jsonl", labelled_only=True) == 4
        assert a.export_jsonl(tmp_path / "u.jsonl", task="u") == 1
        original = a.all()
    with ComparisonStore(tmp_path / "b.db") as b:
        assert b.import_jsonl(tmp_path / "all.jsonl") == 5
        back = b.all()
        skip = {"id", "question_id", "source_id"}
        assert [{k: v for k, v in asdict(c).items() if k not in skip} for c in back] == [
            {k: v for k, v in asdict(c).items() if k not in skip} for c in original
        ]
        assert [c.source_id for c in back] == [c.question_id for c in original]
        assert back[0].question_id == back[4].question_id != back[1].question_id  # agreement still works
        assert b.import_jsonl(tmp_path / "u.jsonl") == 1 and b.all()[-1].task == "u"
        assert b.export_jsonl(tmp_path / "again.jsonl") == 6  # an imported store exports and re-imports
    with ComparisonStore(tmp_path / "c.db") as c:
        assert c.import_jsonl(tmp_path / "again.jsonl") == 6
        assert [x.source_id for x in c.all()][:5] == [x.question_id for x in back]


# -------------------------------------------------------------------------------------- openai format
OPENAI_BAD = [
    ({"query": [1], "sample0": [2], "sample1": [3], "best": True}, "best must be an integer, got true"),
    ({"query": [1], "sample0": [2], "sample1": [3], "best": 1.0}, "best must be an integer, got 1.0"),
    ({"query": [1, True], "sample0": [2], "sample1": [3], "best": 0}, r"query\[1\] must be an integer, got true"),
    ({"query": [1], "sample0": [2], "sample1": [BIG], "best": 0}, r"sample1\[0\]=1000000000000 is not a token id"),
    ({"query": [1], "sample0": [2], "sample1": [3], "best": 0, "extra": 1}, "unknown key 'extra'"),
    ({"query": [1], "sample0": [2], "sample2": [3], "best": 0}, "unknown key 'sample2'.*without gaps"),
    (None, "expected a JSON object, got null"),
]  # fmt: skip


@pytest.mark.parametrize(("item", "message"), OPENAI_BAD)
def test_openai_rows_get_the_same_checks(tmp_path, store, item, message):
    good = {"query": [1], "sample0": [2], "sample1": [3], "best": 1}
    before = snapshot(store)
    path = write(tmp_path / "labels.jsonl", [good, item])
    with pytest.raises(LabelFileError, match="labels.jsonl:2: " + message):
        store.import_openai(path, task="t")
    # the same row inside a JSON list, one item per line: named by its line and item number
    (tmp_path / "labels.json").write_text("[\n" + json.dumps(good) + ",\n" + json.dumps(item) + "\n]")
    with pytest.raises(LabelFileError, match=r"labels.json:3 \(item 2\): " + message):
        store.import_openai(tmp_path / "labels.json", task="t")
    assert snapshot(store) == before


def test_openai_refuses_nan_and_checks_the_vocabulary(tmp_path, store):
    before = snapshot(store)
    (tmp_path / "nan.json").write_text('[{"query": [1], "sample0": [2], "sample1": [NaN], "best": 0}]')
    with pytest.raises(LabelFileError, match=r"nan.json:1: NaN is not a finite number"):
        store.import_openai(tmp_path / "nan.json", task="t")
    (tmp_path / "v.json").write_text(
        json.dumps([{"query": [50256, 50259], "sample0": [2], "sample1": [50257], "best": 0}])
    )
    with pytest.raises(
        LabelFileError, match=r"v.json:1 \(item 1\): sample1\[0\]=50257 is outside the vocabulary"
    ):
        store.import_openai(tmp_path / "v.json", task="t", vocab_size=50257)
    assert snapshot(store) == before
    assert store.import_openai(tmp_path / "v.json", task="t", vocab_size=50258) == 1  # 50259 is the pad
    assert store.all()[-1].query == [50256] and store.all()[-1].question_id == "q3"


# ----------------------------------------------------------------------------------------------- CLI
def cli(*argv):
    from agents.cli import main

    return main(list(argv))


def test_cli_import_and_export_round_trip(tmp_path, store, capsys):
    path = write(
        tmp_path / "in.jsonl", [row(question_id="q1", label={"best": 1}, labeler="ann", labeled=2.0)]
    )
    assert cli("labels", "import", str(path), "--store", str(store.path)) == 0
    assert json.loads(capsys.readouterr().out) == {"store": str(store.path), "imported": 1, "rows": 3}
    out = tmp_path / "out" / "labels.jsonl"
    out.parent.mkdir()
    assert cli("labels", "export", "--store", str(store.path), "--out", str(out), "--labelled-only") == 0
    assert json.loads(capsys.readouterr().out)["exported"] == 1
    assert json.loads(out.read_text())["source_id"] == "q1"
    assert (
        cli(
            "labels",
            "export",
            "--store",
            str(store.path),
            "--out",
            str(tmp_path / "o.json"),
            "--format",
            "openai",
        )
        == 0
    )
    assert json.loads((tmp_path / "o.json").read_text()) == [
        {"query": [1, 2], "sample0": [3], "sample1": [4], "best": 1}
    ]
    fresh = tmp_path / "fresh.db"
    args = ("labels", "import", str(tmp_path / "o.json"), "--store", str(fresh), "--format", "openai")
    assert cli(*args, "--task", "t", "--tokenizer", "gpt2-bpe") == 0
    with ComparisonStore(fresh) as f:
        assert [(c.task, c.best, c.labeler) for c in f.all()] == [("t", 1, "openai")]  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "extra", "message"),
    [
        (["null"], (), "bad.jsonl:1: expected a JSON object, got null; nothing was imported."),
        ([row(), row(label={"best": True})], (), "bad.jsonl:2: label.best must be an integer, got true"),
        ([row(query=[1, 500])], ("--vocab-size", "500"), r"bad.jsonl:1: query\[1\]=500 is outside the vocabulary"),
        ([row(query=[50258])], ("--tokenizer", "gpt2-bpe"), r"bad.jsonl:1: query\[0\]=50258 is outside the vocabulary of 50258"),
        ([row()], ("--format", "openai"), "--format openai needs --task TASK"),
        ([row()], ("--task", "t"), "--task is for --format openai"),
        ([row()], ("--vocab-size", "0"), "--vocab-size 0 must be a positive number"),
        ([], (), r"bad.jsonl: no rows"),
    ],
)  # fmt: skip
def test_cli_import_refuses_bad_input_with_exit_2_and_one_line(
    tmp_path, store, capsys, lines, extra, message
):
    before = snapshot(store)
    path = write(tmp_path / "bad.jsonl", lines)
    assert cli("labels", "import", str(path), "--store", str(store.path), *extra) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("textenv labels: ")
    assert __import__("re").search(message, captured.err)
    assert snapshot(store) == before


def test_cli_refuses_missing_files_and_non_stores(tmp_path, store, capsys):
    assert cli("labels", "import", str(tmp_path / "nope.jsonl"), "--store", str(store.path)) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err
    text = write(tmp_path / "in.jsonl", [row()])
    before = text.read_bytes()
    assert cli("labels", "import", str(store.path), "--store", str(text)) == 2  # arguments swapped
    err = capsys.readouterr().err
    assert "in.jsonl: not a comparison store" in err and err.count("\n") == 1
    assert text.read_bytes() == before
    assert (
        cli("labels", "export", "--store", str(tmp_path / "none.db"), "--out", str(tmp_path / "o.jsonl")) == 2
    )
    assert "none.db: no such store" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "o.jsonl").exists()
    assert cli("labels", "export", "--store", str(store.path), "--out", str(tmp_path / "no" / "o.jsonl")) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_export_writes_nothing_on_error(tmp_path, store, capsys):
    store.record_label(1, {"best": 0}, "ann")
    out = tmp_path / "o.json"
    argv = ("labels", "export", "--store", str(store.path), "--out", str(out), "--format", "openai")
    assert cli(*argv, "--query-length", "0") == 2
    assert "longer than query_length=0" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [store.path] or not out.exists()
    assert not out.exists() and not list(tmp_path.glob(".o.json*"))
    assert cli("labels", "export", "--store", str(store.path), "--out", str(out), "--query-length", "3") == 2
    assert "--query-length is for --format openai" in capsys.readouterr().err


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli("labels", "import", "x.jsonl")
    assert info.value.code == 2 and "--store" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli("labels")
    assert info.value.code == 2
