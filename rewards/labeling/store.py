"""The labeling app's state, kept in the comparison store's SQLite file next to the questions.

* ``labeling_events``: one row per (question, labeler) answer, skip or flag, unique on
  ``(question_id, labeler)``: the database itself refuses a double submit. A choice is committed in the
  same transaction as its judgement row in ``comparisons``, so an acknowledged answer is in the store,
  exactly once.
* labelers, tokens and sessions: see :mod:`rewards.labeling.sessions`.
* ``evaluation_questions``: the pairwise questions of human evaluations (see
  :mod:`rewards.labeling.evaluation`).

Duplicates for agreement (PAPER.md §1.7: 5 % of questions answered 5 times): a question whose id hashes
into the first ``duplicate_share`` of the range stays open (``labeling_open``, a small table) until
``duplicate_answers`` labelers have answered it; any other question closes after one answer. Finding the
next question is an index lookup, not a scan of the answered ones.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

from rewards.comparisons import Comparison, ComparisonStore
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
    remaining INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS comparisons_pending ON comparisons(id) WHERE label IS NULL;
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
        self.duplicate_share, self.duplicate_answers, self.task = duplicate_share, duplicate_answers, task
        self.lease_seconds = float(lease_seconds)
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
        """An open duplicate question this labeler has not seen, else the oldest unanswered one they
        have not skipped or flagged (task-filtered)."""
        task_clause, params = (" AND task = ?", [self.task]) if self.task else ("", [])
        unseen = "NOT EXISTS (SELECT 1 FROM labeling_events e WHERE e.question_id = {q} AND e.labeler = ?)"
        row = self.conn.execute(
            f"SELECT comparison_id FROM labeling_open WHERE {unseen.format(q='labeling_open.question_id')}"
            f"{task_clause} ORDER BY comparison_id LIMIT 1",
            (labeler, *params),
        ).fetchone()
        if row is None:
            row = self.conn.execute(
                f"SELECT id FROM comparisons INDEXED BY comparisons_pending WHERE label IS NULL{task_clause} "
                f"AND {unseen.format(q='comparisons.question_id')} ORDER BY id LIMIT 1",
                (*params, labeler),
            ).fetchone()
        return None if row is None else self.comparisons.get(row[0])

    def progress(self, labeler: str) -> dict:
        done = self.conn.execute(
            "SELECT COUNT(*) FROM labeling_events WHERE labeler=? AND action='choose'", (labeler,)
        ).fetchone()[0]
        clause, params = ("WHERE task=?", [self.task]) if self.task else ("", [])
        pending = self.conn.execute(
            f"SELECT COUNT(DISTINCT question_id) FROM comparisons {clause}"
            + (" AND" if clause else " WHERE")
            + " label IS NULL",
            params,
        ).fetchone()[0]
        return {"answered": int(done), "pending_questions": int(pending)}

    def answer(self, labeler: str, comparison_id: int, action: str, choice: int | None = None) -> dict:
        """Record a choice, skip or flag, committed before this returns. Raises KeyError (no such
        question), ValueError (bad choice / action) or :class:`AlreadyAnswered`."""
        if action not in ("choose", "skip", "flag"):
            raise ValueError(f"action={action!r}; use 'choose', 'skip' or 'flag'.")
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
        try:
            with self.comparisons._transaction() as conn:
                judgement = None
                if action == "choose":
                    judgement = self.comparisons.record_label_in(
                        conn, comparison_id, {"best": choice}, labeler
                    )
                    self._count_answer(conn, question)
                conn.execute(
                    "INSERT INTO labeling_events (question_id, comparison_id, judgement_id, labeler, action, choice, "
                    "created) VALUES (?,?,?,?,?,?,?)",
                    (question.question_id, comparison_id, judgement, labeler, action, choice, time.time()),
                )
        except sqlite3.IntegrityError as exc:
            raise AlreadyAnswered(
                f"{labeler} already answered question {question.question_id}; it is recorded once."
            ) from exc
        return {"question_id": question.question_id, "judgement_id": judgement, "action": action}

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
        conn.execute("DELETE FROM labeling_open WHERE remaining <= 0")

    def my_answers(self, labeler: str) -> list[dict]:
        rows = self.conn.execute(
            "SELECT question_id, comparison_id, action, choice, created FROM labeling_events WHERE labeler=? ORDER BY id",
            (labeler,),
        ).fetchall()
        return [dict(zip(("question_id", "comparison_id", "action", "choice", "created"), r)) for r in rows]

    # ----------------------------------------------------------------------------------- admin
    def stats(self) -> dict:
        """Throughput per labeler and agreement on questions answered more than once: training questions
        and evaluation pairs (``evaluate --labeler human``) apart, as their chance levels differ."""
        per = {}
        for name, n, first, last, skips, flags in self.conn.execute(
            "SELECT labeler, SUM(action='choose'), MIN(created), MAX(created), SUM(action='skip'), "
            "SUM(action='flag') FROM labeling_events GROUP BY labeler"
        ):
            hours = max((last - first) / 3600, 1e-9)
            per[name] = {
                "answers": int(n),
                "skips": int(skips),
                "flags": int(flags),
                "answers_per_hour": float(n / hours) if n > 1 else None,
            }
        # training questions (best of 4, chance 25%) and evaluation pairs (chance 50%) apart
        groups: dict[bool, dict[str, list[int]]] = {False: {}, True: {}}
        for qid, choice, is_eval in self.conn.execute(
            "SELECT l.question_id, l.choice, e.question_id IS NOT NULL FROM labeling_events l "
            "LEFT JOIN evaluation_questions e ON e.question_id = l.question_id WHERE l.action='choose' ORDER BY l.id"
        ):
            groups[bool(is_eval)].setdefault(qid, []).append(int(choice))

        def agreement(grouped: dict[str, list[int]]) -> tuple[int, int]:
            agree = pairs = 0
            for choices in grouped.values():
                for i in range(len(choices)):
                    for j in range(i + 1, len(choices)):
                        pairs += 1
                        agree += choices[i] == choices[j]
            return agree, pairs

        agree, pairs = agreement(groups[False])
        eval_agree, eval_pairs = agreement(groups[True])
        return {
            "labelers": per,
            "questions_with_duplicates": sum(len(c) > 1 for c in groups[False].values()),
            "agreement_pairs": pairs,
            "agreement": agree / pairs if pairs else None,
            "evaluation_agreement_pairs": eval_pairs,
            "evaluation_agreement": eval_agree / eval_pairs if eval_pairs else None,
            "flagged": [
                r[0]
                for r in self.conn.execute(
                    "SELECT DISTINCT question_id FROM labeling_events WHERE action='flag'"
                )
            ],
        }
