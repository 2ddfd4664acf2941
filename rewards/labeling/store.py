"""The labeling app's state, kept in the comparison store's SQLite file next to the questions.

* ``labeling_events``: one row per (question, labeler) answer, skip or flag, unique on
  ``(question_id, labeler)``: the database itself refuses a double submit. A choice is committed in the
  same transaction as its judgement row in ``comparisons``, so an acknowledged answer is in the store,
  exactly once.
* ``labeling_leases``: the question each labeler is working on, with an expiry (``lease_seconds``,
  10 minutes by default). A labeler holds at most one lease; a question is leased to at most as many
  labelers as it still wants answers (one, for most), so nobody else is served it meanwhile. An answer,
  skip or flag ends the lease; an expired lease frees its slot at the next request. Leases live in the
  file, so they survive a crash and restart like the answers do.
* labelers, tokens and sessions: see :mod:`rewards.labeling.sessions`.
* ``evaluation_questions``: the pairwise questions of human evaluations (see
  :mod:`rewards.labeling.evaluation`).

Duplicates for agreement (PAPER.md §1.7: 5 % of questions answered 5 times): a question whose id hashes
into the first ``duplicate_share`` of the range stays open (``labeling_open``, a small table) until
``duplicate_answers`` different labelers have answered it; any other question closes after one answer.
An answer is taken only from the lease holder or while the question has a free slot (a wanted answer
neither given nor leased to someone else); otherwise a :class:`Conflict` says why (answered already,
closed, leased to someone else, another task). Finding the next question is an index lookup, not a scan of
the answered ones.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

from rewards.comparisons import Comparison, ComparisonStore
from rewards.labeling import counters
from rewards.labeling.evaluation import EVAL_TASK_PREFIX as EVAL_TASK_PREFIX  # re-exported
from rewards.labeling.evaluation import EvaluationMixin
from rewards.labeling.sessions import Labeler as Labeler  # re-exported
from rewards.labeling.sessions import LabelerMixin

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labeling_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    question_id TEXT NOT NULL,
    comparison_id INTEGER NOT NULL,
    judgement_id INTEGER,
    labeler TEXT NOT NULL,
    action TEXT NOT NULL,
    choice INTEGER,
    created REAL NOT NULL,
    UNIQUE (question_id, labeler)
);
CREATE TABLE IF NOT EXISTS labeling_open (
    question_id TEXT PRIMARY KEY,
    comparison_id INTEGER NOT NULL,
    task TEXT NOT NULL,
    remaining INTEGER NOT NULL,
    seq INTEGER
);
CREATE TABLE IF NOT EXISTS labeling_leases (
    question_id TEXT NOT NULL,
    comparison_id INTEGER NOT NULL,
    labeler TEXT NOT NULL UNIQUE,
    expires REAL NOT NULL,
    PRIMARY KEY (question_id, labeler)
);
CREATE INDEX IF NOT EXISTS labeling_leases_expires ON labeling_leases(expires);
CREATE INDEX IF NOT EXISTS comparisons_pending ON comparisons(id) WHERE label IS NULL;
CREATE INDEX IF NOT EXISTS comparisons_pending_task ON comparisons(task, id) WHERE label IS NULL;
CREATE INDEX IF NOT EXISTS labeling_events_labeler ON labeling_events(labeler, id);
CREATE INDEX IF NOT EXISTS labeling_events_flags ON labeling_events(id) WHERE action = 'flag';
CREATE TABLE IF NOT EXISTS evaluation_questions (
    question_id TEXT PRIMARY KEY,
    eval_id TEXT NOT NULL,
    comparison_id INTEGER NOT NULL,
    system TEXT NOT NULL,
    baseline TEXT NOT NULL,
    system_position INTEGER NOT NULL,
    votes INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS evaluation_questions_eval ON evaluation_questions(eval_id);
"""


SCHEMA = _SCHEMA
"""The labeling tables and indexes (without the counters' triggers, which :class:`LabelingStore` adds,
counting what is there, on first open): a bulk loader may create them and fill them first."""

ANSWERS_PAGE = 100
"""The default page of :meth:`LabelingStore.answers_page` (``GET /api/answers``)."""
ANSWERS_PAGE_MAX = 1000
"""The largest page of :meth:`LabelingStore.answers_page`."""
ANSWERS_PAGE_SQL = (
    "SELECT id, question_id, comparison_id, action, choice, created FROM labeling_events "
    "INDEXED BY labeling_events_labeler WHERE labeler = ? AND id > ? ORDER BY id LIMIT ?"
)


class Conflict(ValueError):
    """The answer cannot be taken in the question's present state (the app's 409)."""


class AlreadyAnswered(Conflict):
    """This labeler already answered, skipped or flagged this question."""


class LabelingStore(LabelerMixin, EvaluationMixin):
    """Answers and question selection on top of a :class:`ComparisonStore` file; labelers, tokens and
    sessions from :class:`rewards.labeling.sessions.LabelerMixin`; human evaluations (post, list,
    results) from :class:`rewards.labeling.evaluation.EvaluationMixin`."""

    def __init__(
        self,
        path: str | Path,
        duplicate_share: float = 0.05,
        duplicate_answers: int = 5,
        task: str | None = None,
        lease_seconds: float = 600.0,
    ) -> None:
        if not 0 < lease_seconds < float("inf"):
            raise ValueError(
                f"lease_seconds={lease_seconds} must be a positive number of seconds (default 600)."
            )
        if not 0 <= duplicate_share <= 1 or duplicate_answers < 1:
            raise ValueError(
                f"duplicate_share={duplicate_share} must be in [0, 1] and duplicate_answers={duplicate_answers} >= 1."
            )
        self.comparisons = ComparisonStore(path)
        self.conn = self.comparisons._conn
        self.conn.executescript(_SCHEMA)
        with self.comparisons._transaction() as conn:
            if "seq" not in {row[1] for row in conn.execute("PRAGMA table_info(labeling_open)")}:
                conn.execute("ALTER TABLE labeling_open ADD COLUMN seq INTEGER")  # a store made before it
            conn.execute("CREATE INDEX IF NOT EXISTS labeling_open_seq ON labeling_open(seq)")
            conn.execute("CREATE INDEX IF NOT EXISTS labeling_open_task_seq ON labeling_open(task, seq)")
            counters.install(conn)
        self.duplicate_share, self.duplicate_answers, self.task = duplicate_share, duplicate_answers, task
        self.lease_seconds = float(lease_seconds)
        self.clock = time.time  # injectable (tests move time forward to expire leases)
        self.conn.create_function("textenv_wanted", 1, self.wanted_answers, deterministic=True)
        self._init_labelers()

    def close(self) -> None:
        self.comparisons.close()

    def __enter__(self) -> LabelingStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------- questions
    def wanted_answers(self, question_id: str) -> int:
        h = int(hashlib.sha256(question_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return self.duplicate_answers if h < self.duplicate_share else 1

    def next_question(self, labeler: str) -> Comparison | None:
        """Lease a question to ``labeler`` for :attr:`lease_seconds` and return it (None when nothing is
        left for them). A labeler who still holds a lease gets that question again (with a fresh expiry),
        so a labeler holds at most one lease. Otherwise: an open duplicate or evaluation question that
        still has a free slot and that they have not answered, skipped or flagged, else the oldest
        unanswered question with a free slot (task-filtered). A slot is one wanted answer not yet given
        and not leased to another labeler; expired leases free their slot."""
        now = self.clock()
        with self.comparisons._transaction() as conn:
            conn.execute("DELETE FROM labeling_leases WHERE expires <= ?", (now,))
            held = conn.execute(
                "SELECT comparison_id FROM labeling_leases WHERE labeler = ?", (labeler,)
            ).fetchone()
            if held is not None:
                conn.execute(
                    "UPDATE labeling_leases SET expires = ? WHERE labeler = ?",
                    (now + self.lease_seconds, labeler),
                )
                return self.comparisons.get(held[0])
            row = self._free_question(conn, labeler)
            if row is None:
                return None
            conn.execute(
                "INSERT INTO labeling_leases (question_id, comparison_id, labeler, expires) VALUES (?,?,?,?)",
                (row[1], row[0], labeler, now + self.lease_seconds),
            )
        return self.comparisons.get(row[0])

    def _free_question(self, conn: sqlite3.Connection, labeler: str) -> tuple[int, str] | None:
        """(comparison id, question id) of the question to serve ``labeler`` next (expired leases are
        gone already): an open question (a duplicate or evaluation question still collecting answers) in
        the order they opened, so that they fill up, else the oldest unanswered question; either with a
        free slot and not answered, skipped or flagged by ``labeler`` already.

        Cost: O(log n) index probes plus the rows stepped over, which are few: each scan starts at the
        labeler's cursor (``labeling_cursors``), below which every open question (by open order) and
        every unanswered question (by id) is one the labeler has seen; a seen row moves the cursor past
        it for good (each is stepped over once, amortised), and the rows stepped over without moving it
        are questions whose slots are all leased (at most one per other labeler) and the labeler's own
        skips made after such a question (for at most a lease period)."""
        scope = "task:" + self.task if self.task else "all"
        row = conn.execute(
            "SELECT open_seq, pending_id FROM labeling_cursors WHERE labeler = ? AND scope = ?",
            (labeler, scope),
        ).fetchone()
        open_from, pending_from = row if row is not None else (0, 0)
        task, params = (" AND task = ?", [self.task]) if self.task else ("", [])
        unseen = "NOT EXISTS (SELECT 1 FROM labeling_events e WHERE e.question_id = {q}.question_id AND e.labeler = ?)"
        leases = "(SELECT COUNT(*) FROM labeling_leases l WHERE l.question_id = {q}.question_id)"
        # open questions: the first one the labeler has not seen is the new cursor; serve the first of
        # those with a free slot (their `remaining` counts the answers still wanted; leases take slots)
        o = unseen.format(q="o")
        first = conn.execute(
            f"SELECT seq FROM labeling_open o WHERE seq >= ?{task} AND {o} ORDER BY seq LIMIT 1",
            (open_from, *params, labeler),
        ).fetchone()
        new_open = first[0] if first else counters.get(conn, "open_seq") + 1
        found = None
        if first is not None:
            found = conn.execute(
                f"SELECT comparison_id, question_id FROM labeling_open o WHERE seq >= ?{task} AND {o} "
                f"AND remaining > {leases.format(q='o')} ORDER BY seq LIMIT 1",
                (new_open, *params, labeler),
            ).fetchone()
        # unanswered questions, oldest first, with wanted(question) slots less the leases on it
        c = unseen.format(q="c")
        index = "comparisons_pending_task" if self.task else "comparisons_pending"
        first = conn.execute(
            f"SELECT id FROM comparisons c INDEXED BY {index} WHERE label IS NULL{task} AND id >= ? AND {c} "
            "ORDER BY id LIMIT 1",
            (*params, pending_from, labeler),
        ).fetchone()
        if first is not None:
            new_pending = first[0]
        else:
            new_pending = (conn.execute("SELECT MAX(id) FROM comparisons").fetchone()[0] or 0) + 1
        if found is None and first is not None:
            found = conn.execute(
                f"SELECT id, question_id FROM comparisons c INDEXED BY {index} WHERE label IS NULL{task} "
                f"AND id >= ? AND {c} "
                "AND NOT EXISTS (SELECT 1 FROM labeling_open o WHERE o.question_id = c.question_id) "
                f"AND textenv_wanted(question_id) > {leases.format(q='c')} ORDER BY id LIMIT 1",
                (*params, new_pending, labeler),
            ).fetchone()
        if (new_open, new_pending) != (open_from, pending_from):
            conn.execute(
                "INSERT INTO labeling_cursors (labeler, scope, open_seq, pending_id) VALUES (?,?,?,?) "
                "ON CONFLICT (labeler, scope) DO UPDATE SET open_seq = excluded.open_seq, "
                "pending_id = excluded.pending_id",
                (labeler, scope, new_open, new_pending),
            )
        return found

    def lease_of(self, labeler: str) -> tuple[int, float] | None:
        """(comparison id, expiry time) of the lease ``labeler`` holds, if any and not expired."""
        row = self.conn.execute(
            "SELECT comparison_id, expires FROM labeling_leases WHERE labeler = ? AND expires > ?",
            (labeler, self.clock()),
        ).fetchone()
        return None if row is None else (int(row[0]), float(row[1]))

    def _remaining(self, conn: sqlite3.Connection, question: Comparison) -> int:
        """Answers ``question`` still wants: its open count while it is open (a duplicate or evaluation
        question), else ``wanted_answers`` while it is unanswered, else 0 (closed)."""
        row = conn.execute(
            "SELECT remaining FROM labeling_open WHERE question_id = ?", (question.question_id,)
        ).fetchone()
        if row is not None:
            return max(int(row[0]), 0)
        unanswered = conn.execute(
            "SELECT 1 FROM comparisons WHERE question_id = ? AND label IS NULL LIMIT 1",
            (question.question_id,),
        ).fetchone()
        return self.wanted_answers(question.question_id) if unanswered else 0

    def progress(self, labeler: str) -> dict:
        """The labeler's answers and the store's unanswered questions (of this server's task): two
        counter reads (:mod:`rewards.labeling.counters`), not counts over the tables."""
        row = self.conn.execute(
            "SELECT choose FROM labeling_labeler_counts WHERE labeler = ?", (labeler,)
        ).fetchone()
        pending = (
            counters.get(self.conn, "pending", self.task)
            if self.task
            else counters.get(self.conn, "pending_all")
        )
        return {"answered": int(row[0]) if row else 0, "pending_questions": pending}

    def answer(self, labeler: str, comparison_id: int, action: str, choice: int | None = None) -> dict:
        """Record a choice, skip or flag, committed before this returns; the labeler's lease on the
        question (if any) ends with it. Accepted from the labeler who holds the question's lease, or from
        any labeler while the question has a free slot (see :meth:`next_question`). Raises KeyError (no
        such question), ValueError (bad choice / action) or a :class:`Conflict` that says why the question
        is not theirs to answer (answered already, closed, leased to someone else, another task)."""
        if action not in ("choose", "skip", "flag"):
            raise ValueError(f"action={action!r}; use 'choose', 'skip' or 'flag'.")
        if (
            not isinstance(comparison_id, int)
            or isinstance(comparison_id, bool)
            or not 0 < comparison_id < 2**63
        ):
            raise KeyError(comparison_id)
        question = self.comparisons.get(comparison_id)  # KeyError when missing
        if question.label_type != "best_of_n":
            raise ValueError(
                f"question {comparison_id} is a {question.label_type} question; the app labels best_of_n."
            )
        n = len(question.samples)
        if action == "choose":
            if not isinstance(choice, int) or isinstance(choice, bool) or not 0 <= choice < n:
                raise ValueError(f"choice={choice!r} must be an integer in [0, {n}).")
        elif choice is not None:
            raise ValueError(f"a {action} carries no choice (got {choice!r}).")
        if self.task and question.task != self.task:
            raise Conflict(
                f"question {comparison_id} belongs to task {question.task!r}; this server labels {self.task!r} "
                "only. Ask /api/next for a question."
            )
        qid = question.question_id
        now = self.clock()
        try:
            with self.comparisons._transaction() as conn:
                conn.execute("DELETE FROM labeling_leases WHERE expires <= ?", (now,))
                self._check_slot(conn, question, labeler, action)
                judgement = None
                if action == "choose":
                    judgement = self.comparisons.record_label_in(
                        conn, comparison_id, {"best": choice}, labeler
                    )
                    self._count_answer(conn, question)
                conn.execute(
                    "INSERT INTO labeling_events (question_id, comparison_id, judgement_id, labeler, action, choice, "
                    "created) VALUES (?,?,?,?,?,?,?)",
                    (qid, comparison_id, judgement, labeler, action, choice, now),
                )
                conn.execute(
                    "DELETE FROM labeling_leases WHERE question_id = ? AND labeler = ?", (qid, labeler)
                )
        except sqlite3.IntegrityError as exc:
            raise AlreadyAnswered(f"{labeler} already answered question {qid}; it is recorded once.") from exc
        return {"question_id": qid, "judgement_id": judgement, "action": action}

    def _check_slot(self, conn: sqlite3.Connection, question: Comparison, labeler: str, action: str) -> None:
        """Raise :class:`Conflict` unless ``labeler`` holds the question's lease or it has a free slot."""
        qid = question.question_id
        seen = conn.execute(
            "SELECT action FROM labeling_events WHERE question_id = ? AND labeler = ?", (qid, labeler)
        ).fetchone()
        if seen is not None:
            done = {"choose": "answered", "skip": "skipped", "flag": "flagged"}[seen[0]]
            raise AlreadyAnswered(f"{labeler} already {done} question {qid}; it is recorded once.")
        leases = conn.execute(
            "SELECT labeler, expires FROM labeling_leases WHERE question_id = ?", (qid,)
        ).fetchall()
        if any(who == labeler for who, _ in leases) or action != "choose":
            return  # the lease holder; a skip or flag takes no slot (it records that they passed on it)
        remaining = self._remaining(conn, question)
        if remaining == 0:
            raise Conflict(f"question {qid} is closed: it has all its answers. Ask /api/next for another.")
        if len(leases) >= remaining:
            until = max(expires for _, expires in leases)
            raise Conflict(
                f"question {qid} is leased to another labeler for {max(until - self.clock(), 0):.0f} s more; "
                "ask /api/next for another."
            )

    def _count_answer(self, conn: sqlite3.Connection, question: Comparison) -> None:
        """Keep a duplicate (or multi-vote evaluation) question open until it has its answers."""
        wanted = self.wanted_answers(question.question_id)
        if wanted > 1:  # an evaluation question posted with its own vote count is in labeling_open already
            conn.execute(
                "INSERT OR IGNORE INTO labeling_open (question_id, comparison_id, task, remaining) VALUES (?,?,?,?)",
                (question.question_id, question.id, question.task, wanted),
            )
        conn.execute(
            "UPDATE labeling_open SET remaining = remaining - 1 WHERE question_id = ?",
            (question.question_id,),
        )
        conn.execute(
            "DELETE FROM labeling_open WHERE question_id = ? AND remaining <= 0", (question.question_id,)
        )

    def answers_page(
        self, labeler: str, after: int = 0, limit: int = ANSWERS_PAGE
    ) -> tuple[list[dict], int | None]:
        """One page of ``labeler``'s answers, skips and flags, oldest first: at most ``limit`` (1 to
        :data:`ANSWERS_PAGE_MAX`) of those recorded after cursor ``after`` (0: from the first), and the
        cursor of the next page (None on the last). A keyset page: one range of the index on
        ``(labeler, id)``, O(log n + limit) whatever the number of answers."""
        for name, value, low, high in (("after", after, 0, 2**63 - 1), ("limit", limit, 1, ANSWERS_PAGE_MAX)):
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name}={value!r} must be an integer from {low} to {high}.")
        rows = self.conn.execute(ANSWERS_PAGE_SQL, (labeler, after, limit + 1)).fetchall()
        cols = ("question_id", "comparison_id", "action", "choice", "created")
        page = [dict(zip(cols, r[1:])) for r in rows[:limit]]
        return page, (rows[limit - 1][0] if len(rows) > limit else None)

    # ----------------------------------------------------------------------------------- admin
    def stats(self) -> dict:
        """Throughput per labeler and agreement on questions answered more than once: training questions
        and evaluation pairs (``evaluate --labeler human``) apart, as their chance levels differ. Read
        from the counters (:mod:`rewards.labeling.counters`): the cost grows with the labelers (and their
        pairs), not with the questions or answers; ``flagged`` lists the latest 100 flagged questions
        (``flags`` counts them all)."""
        per = {}
        for name, n, skips, flags, first, last in self.conn.execute(
            "SELECT labeler, choose, skip, flag, first, last FROM labeling_labeler_counts ORDER BY labeler"
        ):
            hours = max((last - first) / 3600, 1e-9)
            per[name] = {
                "answers": int(n),
                "skips": int(skips),
                "flags": int(flags),
                "answers_per_hour": float(n / hours) if n > 1 else None,
            }
        totals = dict(
            (
                (kind, (int(p), int(a)))
                for kind, p, a in self.conn.execute(
                    "SELECT kind, SUM(pairs), SUM(agree) FROM labeling_pairs GROUP BY kind"
                )
            )
        )
        pairs, agree = totals.get("train", (0, 0))
        eval_pairs, eval_agree = totals.get("eval", (0, 0))
        return {
            "labelers": per,
            "questions_with_duplicates": counters.get(self.conn, "dup_questions"),
            "agreement_pairs": pairs,
            "agreement": agree / pairs if pairs else None,
            "evaluation_agreement_pairs": eval_pairs,
            "evaluation_agreement": eval_agree / eval_pairs if eval_pairs else None,
            "flags": sum(p["flags"] for p in per.values()),
            "flagged": [f["question_id"] for f in self.flagged(100)],
        }

    def flagged(self, limit: int = 20) -> list[dict]:
        """The latest ``limit`` flags, newest first, with the question's text (to read why): an index
        walk from the newest flag back (``labeling_events_flags``)."""
        cols = ("question_id", "comparison_id", "labeler", "created", "task", "query", "samples")
        rows = self.conn.execute(
            "SELECT e.question_id, e.comparison_id, e.labeler, e.created, c.task, c.query_text, c.sample_texts "
            "FROM labeling_events e INDEXED BY labeling_events_flags JOIN comparisons c ON c.id = e.comparison_id "
            "WHERE e.action = 'flag' ORDER BY e.id DESC LIMIT ?",
            (int(limit),),
        ).fetchall()
        out = []
        for row in rows:
            item = dict(zip(cols, row))
            item["samples"] = json.loads(item["samples"]) if item["samples"] else []
            out.append(item)
        return out

    def dashboard(self, hours: int = 48, flags: int = 20) -> dict:
        """Everything the admin dashboard draws, from counters and indexed reads (cost: the labelers, their
        pairs, the tasks, ``hours`` x labelers, ``flags`` and one online run's rows; not the store):
        answers/skips/flags per hour per labeler over the last ``hours`` hours with events, agreement per
        labeler pair with its chance level, per-task progress, the latest flags with their text and the
        latest online run (schedule, labels against l(n), retrains with held-out accuracy)."""
        from rewards.labeling.runs import latest_runs

        (top,) = self.conn.execute("SELECT MAX(hour) FROM labeling_hourly").fetchone()
        hourly = []
        if top is not None:
            hourly = [
                dict(zip(("hour", "labeler", "answers", "skips", "flags"), row))
                for row in self.conn.execute(
                    "SELECT hour, labeler, choose, skip, flag FROM labeling_hourly WHERE hour > ? ORDER BY hour, labeler",
                    (top - int(hours),),
                )
            ]
        pairs = [
            {
                "kind": kind,
                "a": a,
                "b": b,
                "pairs": int(n),
                "agree": int(agree),
                "agreement": agree / n,
                "chance": chance / n,
            }
            for kind, a, b, n, agree, chance in self.conn.execute(
                "SELECT kind, a, b, pairs, agree, chance FROM labeling_pairs WHERE pairs > 0 ORDER BY kind, a, b"
            )
        ]
        tasks: dict[str, dict] = {}
        for kind, task, value in self.conn.execute(
            "SELECT kind, scope, value FROM labeling_counts WHERE kind IN ('questions', 'pending', 'judgements')"
        ):
            tasks.setdefault(task, {"task": task, "questions": 0, "pending": 0, "judgements": 0})[kind] = int(
                value
            )
        stats = self.stats()
        return {
            "labelers": stats["labelers"],
            "agreement": {k: stats[k] for k in ("agreement", "agreement_pairs", "questions_with_duplicates")},
            "evaluation_agreement": {
                k: stats[k] for k in ("evaluation_agreement", "evaluation_agreement_pairs")
            },
            "hourly": hourly,
            "pairs": pairs,
            "tasks": sorted((t for t in tasks.values() if t["questions"]), key=lambda t: t["task"]),
            "flags": {"total": stats["flags"], "latest": self.flagged(flags)},
            "online": latest_runs(self.conn, limit=1),
        }
