"""The labeling store's counters (issue 21): kept by triggers in the writes' own transactions, they equal
a count over the tables after any write (the app's, another process's, raw SQL), after a rollback and
after a SIGKILL mid-transaction; a store made before them is counted once on first open; the per-labeler
cursors step over a labeler's skips once, not on every request."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from rewards.comparisons import ComparisonStore
from rewards.labeling import counters
from rewards.labeling.store import LabelingStore
from tests.test_labeling_leases import fill


def exact(store: LabelingStore) -> dict:
    live = counters.live(store.conn)
    assert live == counters.recount(store.conn)
    return live


def test_counters_follow_every_kind_of_write(tmp_path):
    path = tmp_path / "labels.db"
    fill(path, n=4)
    store = LabelingStore(path, duplicate_share=1.0, duplicate_answers=3)
    assert store.progress("ann") == {"answered": 0, "pending_questions": 4}
    exact(store)
    fill(path, n=3, task="Other-v0")  # another connection adds questions of another task
    store.answer("ann", 1, "choose", 0)
    store.answer("bob", 1, "choose", 0)  # a second judgement row of q1
    store.answer("cid", 2, "skip")
    store.answer("cid", 3, "flag")
    live = exact(store)
    assert store.progress("ann") == {"answered": 1, "pending_questions": 6}
    assert ("pending", "Other-v0", 3) in live["labeling_counts"]
    with ComparisonStore(path) as cs:  # labelled in place by `textenv label` (no app)
        cs.record_label(5, {"best": 1}, "dee")
    exact(store)
    with (
        store.comparisons._transaction() as conn
    ):  # raw SQL: a task renamed, a question id changed, a row gone
        conn.execute("UPDATE comparisons SET task = 'Renamed' WHERE id = 6")
        conn.execute("UPDATE comparisons SET question_id = 'q1' WHERE id = 4")  # now a second row of q1
        conn.execute("DELETE FROM comparisons WHERE id = 7")
    live = exact(store)
    # q2, q3 (skipped, flagged), q1 (its row 4) and q6 (renamed task); q7 gone, q5 labelled
    assert store.progress("x")["pending_questions"] == 4
    store.close()


def test_a_rolled_back_answer_leaves_no_count(tmp_path, monkeypatch):
    path = tmp_path / "labels.db"
    fill(path, n=3)
    store = LabelingStore(path, duplicate_share=1.0)
    store.answer("ann", 1, "choose", 0)
    before = exact(store)

    def boom(*args):
        raise RuntimeError("crash between the judgement and its event")

    monkeypatch.setattr(store, "_count_answer", boom)  # after record_label_in, before the event row
    with pytest.raises(RuntimeError):
        store.answer("bob", 1, "choose", 1)
    assert exact(store) == before
    store.close()


CRASH = textwrap.dedent(
    """
    import os, signal, sys
    from rewards.labeling.store import LabelingStore
    from rewards.comparisons import Comparison
    store = LabelingStore(sys.argv[1], duplicate_share=1.0)
    for i in range(1, 4):
        store.answer("w", i, "choose", 1)
    conn = store.conn
    conn.execute("BEGIN IMMEDIATE")
    store.comparisons.record_label_in(conn, 4, {"best": 2}, "w")
    store.comparisons.add_in(conn, [Comparison(task="T", query=[1], samples=[[2], [3]])])
    conn.execute("INSERT INTO labeling_events (question_id, comparison_id, labeler, action, created) "
                 "VALUES ('q5', 5, 'w', 'skip', 1.0)")
    os.kill(os.getpid(), signal.SIGKILL)  # mid-transaction: nothing of it may count
    """
)


def test_counters_are_exact_after_a_sigkill_mid_transaction(tmp_path):
    path = tmp_path / "labels.db"
    fill(path, n=6)
    LabelingStore(path).close()
    proc = subprocess.run([sys.executable, "-c", CRASH, str(path)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with LabelingStore(path) as store:
        live = exact(store)
        assert store.progress("w") == {"answered": 3, "pending_questions": 3}
        assert ("judgements_all", "", 3) in live["labeling_counts"]


def test_a_store_made_before_the_counters_is_counted_on_first_open(tmp_path):
    from benchmarks.bench_labeling import synthetic_store

    path = tmp_path / "labels.db"
    synthetic_store(path, 400, labelers=3)  # bulk-loaded: no triggers yet
    with LabelingStore(path) as store:
        live = exact(store)
        assert store.progress("s1")["pending_questions"] == 200
        assert sorted(r[1:4] for r in live["labeling_labeler_counts"]) == [(66, 0, 0), (67, 0, 0), (67, 0, 0)]
        q = store.next_question("new")
        assert q.id == 201  # the oldest unanswered question
        store.answer("new", q.id, "choose", 0)
        exact(store)


def test_a_labelers_skips_are_stepped_over_once(tmp_path):
    """The cursor moves past the questions a labeler skipped: later requests start after them."""
    path = tmp_path / "labels.db"
    ids = fill(path, n=30)
    store = LabelingStore(path, duplicate_share=0.0)
    for _ in range(20):
        q = store.next_question("ann")
        store.answer("ann", q.id, "skip")
    q = store.next_question("ann")
    assert q.id == ids[20]
    (cursor,) = store.conn.execute("SELECT pending_id FROM labeling_cursors WHERE labeler = 'ann'").fetchone()
    assert cursor == ids[20]  # the 20 skips are below it: never looked at again
    assert store.next_question("bob").id == ids[0]  # bob is served what ann skipped
    # a question added later is served in its turn, a skip-all labeler gets None, not a scan
    fill(path, n=1, first=99)
    store.answer("ann", q.id, "skip")
    served = []
    while (q := store.next_question("ann")) is not None:
        served.append(q.query_text)
        store.answer("ann", q.id, "skip")
    assert served[-1] == "context 99" and len(served) == 10
    exact(store)
    store.close()


@pytest.mark.parametrize("task", [None, "BookSentiment-v0"])
def test_progress_is_per_task_when_the_server_is(tmp_path, task):
    path = tmp_path / "labels.db"
    fill(path, n=3)
    fill(path, n=2, task="Other-v0")
    with LabelingStore(path, task=task) as store:
        assert store.progress("a")["pending_questions"] == (3 if task else 5)
    assert os.path.exists(path)
