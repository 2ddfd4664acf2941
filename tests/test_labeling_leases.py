"""Question leases of the labeling store (issue 15): who may be served and who may answer which question.

The problems seen before leases, each pinned by a test that fails on the old store: two labelers calling
``next`` one after the other got the same question and both answers were stored; anyone could answer a
closed question, a question never served to them, or one of another task. The stateful test at the end
checks the invariants under any interleaving of next / answer / skip / lease expiry / restart.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from rewards.comparisons import Comparison, ComparisonStore
from rewards.labeling import counters
from rewards.labeling.store import AlreadyAnswered, Conflict, LabelingStore


def fill(path, n=6, task="BookSentiment-v0", first=0):
    with ComparisonStore(path) as store:
        return store.add(
            Comparison(
                task=task,
                query=[1, 2],
                samples=[[3], [4], [5], [6]],
                query_text=f"context {first + i}",
                sample_texts=["a", "b", "c", "d"],
            )
            for i in range(n)
        )


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_store(path, clock, **kw) -> LabelingStore:
    store = LabelingStore(path, **{"duplicate_share": 0.0, "lease_seconds": 60.0, **kw})
    store.clock = clock
    return store


@pytest.fixture
def store(tmp_path):
    fill(tmp_path / "labels.db")
    s = open_store(tmp_path / "labels.db", Clock())
    yield s
    s.close()


def test_two_labelers_one_after_the_other_get_different_questions(store):
    a, b = store.next_question("ann"), store.next_question("bob")
    assert a.id != b.id
    assert store.next_question("ann").id == a.id  # asking again returns the lease held, not a new one
    assert store.lease_of("ann")[0] == a.id


def test_answer_to_a_question_leased_to_someone_else_is_refused(store):
    q = store.next_question("ann")
    with pytest.raises(Conflict, match="leased to another labeler for 60 s more"):
        store.answer("bob", q.id, "choose", 1)
    store.answer("ann", q.id, "choose", 1)
    assert store.lease_of("ann") is None  # the answer ended the lease


def test_answer_to_a_closed_question_is_refused(store):
    q = store.next_question("ann")
    store.answer("ann", q.id, "choose", 0)
    with pytest.raises(Conflict, match=f"question {q.question_id} is closed: it has all its answers"):
        store.answer("bob", q.id, "choose", 2)
    with pytest.raises(AlreadyAnswered, match="ann already answered question"):
        store.answer("ann", q.id, "choose", 2)


def test_answer_to_a_question_of_another_task_is_refused(tmp_path):
    path = tmp_path / "labels.db"
    fill(path, 2)
    (other,) = fill(path, 1, task="TLDRSummarize-v0", first=2)
    s = open_store(path, Clock(), task="BookSentiment-v0")
    with pytest.raises(
        Conflict, match="belongs to task 'TLDRSummarize-v0'; this server labels 'BookSentiment-v0'"
    ):
        s.answer("ann", other, "choose", 0)
    s.close()


def test_unserved_open_question_may_be_answered_directly(store):
    # a question with a free slot (never leased, never answered) is open to anyone: scripts may answer
    # without asking /api/next first
    out = store.answer("ann", 3, "choose", 2)
    assert out["judgement_id"] == 3
    assert store.next_question("bob").id == 1


def test_expired_lease_returns_the_question_to_the_pool(store):
    q = store.next_question("ann")
    store.clock.now += 59.0
    assert store.next_question("bob").id != q.id
    store.answer("bob", store.lease_of("bob")[0], "skip")
    store.clock.now += 2.0  # ann's lease (60 s) is over: bob, who skipped his, is served ann's question
    assert store.next_question("bob").id == q.id
    with pytest.raises(Conflict, match="leased to another labeler"):
        store.answer("ann", q.id, "choose", 0)


def test_skip_releases_the_lease_and_the_skipper_is_not_served_it_again(store):
    q = store.next_question("ann")
    store.answer("ann", q.id, "skip")
    assert store.lease_of("ann") is None
    assert store.next_question("bob").id == q.id  # free again, for someone else
    assert store.next_question("ann").id != q.id


def test_revoking_a_labeler_frees_the_question_they_held(store):
    store.add_labeler("ann")
    q = store.next_question("ann")
    store.revoke_labeler("ann")
    assert store.lease_of("ann") is None
    assert store.next_question("bob").id == q.id


def test_leases_survive_a_restart(tmp_path, store):
    q = store.next_question("ann")
    clock = store.clock
    store.close()
    again = open_store(tmp_path / "labels.db", clock)
    assert again.next_question("bob").id != q.id
    assert again.next_question("ann").id == q.id
    again.answer("ann", q.id, "choose", 3)
    again.close()


def test_duplicate_question_goes_to_its_number_of_different_labelers(tmp_path):
    path = tmp_path / "labels.db"
    fill(path, 3)
    s = open_store(path, Clock(), duplicate_share=1.0, duplicate_answers=3)
    served = [s.next_question(name).id for name in ("a", "b", "c", "d")]
    assert served == [1, 1, 1, 2]  # three slots on question 1, then the next question
    for name in ("a", "b", "c"):
        s.answer(name, 1, "choose", 0)
    with pytest.raises(Conflict, match="is closed"):
        s.answer("e", 1, "choose", 0)
    s.close()


def test_out_of_range_id_is_a_missing_question(store):
    for bad in (2**70, -1, 0, True):
        with pytest.raises(KeyError):
            store.answer("ann", bad, "choose", 0)


def test_bad_lease_seconds_is_refused(tmp_path):
    with pytest.raises(ValueError, match="lease_seconds=0 must be a positive number of seconds"):
        LabelingStore(tmp_path / "x.db", lease_seconds=0)


# ---------------------------------------------------------------------------------------------- stateful
LABELERS = ("ann", "bob", "cid", "dee")
QUESTIONS = 10
SHARE, ANSWERS, LEASE = 0.4, 3, 10.0


def wanted(question_id: str) -> int:
    h = int(hashlib.sha256(question_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return ANSWERS if h < SHARE else 1


class LeaseMachine(RuleBasedStateMachine):
    """A model of acknowledged answers, skips and leases against the store, under any interleaving."""

    @initialize()
    def setup(self):
        import tempfile
        from pathlib import Path

        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "labels.db"
        self.ids = fill(self.path, QUESTIONS)
        self.qid = {i: f"q{i}" for i in self.ids}
        assert any(wanted(q) > 1 for q in self.qid.values())  # the set-up has duplicates to fill
        self.clock = Clock()
        self.store = self._open()
        self.answers: dict[str, set[str]] = {q: set() for q in self.qid.values()}
        self.passed: dict[str, set[str]] = {q: set() for q in self.qid.values()}
        self.held: dict[str, tuple[int, float]] = {}  # labeler -> (comparison id, expiry) last served

    def _open(self) -> LabelingStore:
        return open_store(
            self.path, self.clock, duplicate_share=SHARE, duplicate_answers=ANSWERS, lease_seconds=LEASE
        )

    def teardown(self):
        if hasattr(self, "store"):
            self._drain()
            self.store.close()
            self.dir.cleanup()

    def _record(self, labeler: str, cid: int, action: str, choice=None) -> None:
        self.store.answer(labeler, cid, action, choice)
        (self.answers if action == "choose" else self.passed)[self.qid[cid]].add(labeler)
        self.held.pop(labeler, None)

    @rule(labeler=st.sampled_from(LABELERS))
    def next(self, labeler):
        q = self.store.next_question(labeler)
        held = self.held.get(labeler)
        if held is not None and held[1] > self.clock.now:
            assert q is not None and q.id == held[0], "a labeler holding a lease gets that question again"
        if q is None:
            self.held.pop(labeler, None)
            return
        assert labeler not in self.answers[q.question_id] | self.passed[q.question_id]
        self.held[labeler] = (q.id, self.clock.now + LEASE)

    @rule(labeler=st.sampled_from(LABELERS), choice=st.integers(0, 3))
    def answer_held(self, labeler, choice):
        held = self.held.get(labeler)
        if held is None:
            return
        if held[1] > self.clock.now:  # an unexpired lease is always honoured
            self._record(labeler, held[0], "choose", choice)
            return
        try:
            self._record(labeler, held[0], "choose", choice)
        except Conflict:  # expired, and its slot went to someone else meanwhile
            self.held.pop(labeler)

    @rule(labeler=st.sampled_from(LABELERS), index=st.integers(0, QUESTIONS - 1), choice=st.integers(0, 3))
    def answer_any(self, labeler, index, choice):
        cid = self.ids[index]
        qid = self.qid[cid]
        try:
            self._record(labeler, cid, "choose", choice)
        except AlreadyAnswered:
            assert labeler in self.answers[qid] | self.passed[qid]
        except Conflict as exc:
            assert "closed" in str(exc) or "leased to another labeler" in str(exc), str(exc)

    @rule(labeler=st.sampled_from(LABELERS), other=st.sampled_from(LABELERS), choice=st.integers(0, 3))
    def answer_anothers(self, labeler, other, choice):
        """Answer the question another labeler was served (a slot of a duplicate, or a conflict)."""
        held = self.held.get(other)
        if held is not None:
            self.answer_any(labeler, self.ids.index(held[0]), choice)

    @rule(labeler=st.sampled_from(LABELERS), flag=st.booleans())
    def skip_held(self, labeler, flag):
        held = self.held.get(labeler)
        if held is not None:
            self._record(labeler, held[0], "flag" if flag else "skip")

    @rule(seconds=st.sampled_from([1.0, 5.0, LEASE + 1]))
    def wait(self, seconds):
        self.clock.now += seconds

    @rule()
    def restart(self):
        self.store.close()
        self.store = self._open()

    @invariant()
    def acknowledged_answers_are_stored_exactly_once(self):
        if not hasattr(self, "store"):
            return
        rows = self.store.conn.execute(
            "SELECT question_id, labeler FROM labeling_events WHERE action='choose'"
        ).fetchall()
        assert sorted(rows) == sorted((q, who) for q, ls in self.answers.items() for who in ls)
        judgements = self.store.conn.execute(
            "SELECT question_id, labeler FROM comparisons WHERE label IS NOT NULL"
        ).fetchall()
        assert sorted(judgements) == sorted(rows)

    @invariant()
    def no_question_gets_more_than_it_wants(self):
        if not hasattr(self, "store"):
            return
        live = dict(
            self.store.conn.execute(
                "SELECT question_id, COUNT(*) FROM labeling_leases WHERE expires > ? GROUP BY question_id",
                (self.clock.now,),
            ).fetchall()
        )
        for q, who in self.answers.items():
            assert len(who) + live.get(q, 0) <= wanted(q), (q, who, live)
        (most,) = self.store.conn.execute(
            "SELECT MAX(c) FROM (SELECT COUNT(*) c FROM labeling_leases GROUP BY labeler)"
        ).fetchone()
        assert most is None or most == 1

    @invariant()
    def counters_equal_a_recount(self):
        """The trigger-kept counters (progress, dashboard) equal a count over the tables, at every step."""
        if hasattr(self, "store"):
            assert counters.live(self.store.conn) == counters.recount(self.store.conn)

    def _drain(self):
        """Every labeler answers whatever it is served until nothing is left: then each question has
        exactly its wanted answers, or as many as there are labelers who did not pass on it."""
        self.clock.now += LEASE + 1  # abandoned leases expire
        progress = True
        while progress:
            progress = False
            for labeler in LABELERS:
                q = self.store.next_question(labeler)
                if q is not None:
                    self._record(labeler, q.id, "choose", 0)
                    progress = True
        for q, who in self.answers.items():
            assert len(who) == min(wanted(q), len(LABELERS) - len(self.passed[q] - who)), (
                q,
                who,
                self.passed[q],
            )
        self.acknowledged_answers_are_stored_exactly_once()


TestLeaseMachine = LeaseMachine.TestCase
TestLeaseMachine.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
