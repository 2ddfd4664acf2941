"""Human evaluation in the labeling app (PAPER.md §3.2): pairwise questions, system against baseline.

:class:`EvaluationMixin` gives :class:`rewards.labeling.store.LabelingStore` its evaluation methods: post
the questions of an evaluation (``evaluation_questions``, one row per question, next to the comparisons),
list the evaluations and read their results (majority vote per question, as the paper).
"""

from __future__ import annotations

import json
import sqlite3
import time

from rewards.comparisons import Comparison, ComparisonStore

EVAL_TASK_PREFIX = (
    "eval:"  # evaluation questions' task: never read by reward-model training (it filters on the task)
)

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")  # labelers, eval ids


def _check_pairs(pairs: list[tuple[Comparison, str, str, int]]) -> None:
    for question, _, _, position in pairs:
        if len(question.samples) != 2 or position not in (0, 1):
            raise ValueError(
                f"evaluation question {question.question_id!r}: needs 2 samples and a system position "
                f"0 or 1, got {len(question.samples)} samples and position {position!r}."
            )
        if not question.task.startswith(EVAL_TASK_PREFIX):
            raise ValueError(
                f"evaluation question task {question.task!r} must start with {EVAL_TASK_PREFIX!r} so that "
                "reward-model training never reads it."
            )


def _new_system() -> dict:
    return {
        "questions": 0,
        "complete": 0,
        "answered": 0,
        "majority_wins": 0.0,
        "judgements": 0,
        "judgement_wins": 0,
    }


def _tally(r: dict, choices: list[int], position: int, votes: int) -> None:
    """Count one question's ``choices`` (sample indices) into its system's results ``r``."""
    r["questions"] += 1
    wins = sum(c == position for c in choices)
    r["judgements"] += len(choices)
    r["judgement_wins"] += wins
    r["answered"] += bool(choices)
    if len(choices) >= votes:
        r["complete"] += 1
        r["majority_wins"] += 1.0 if 2 * wins > len(choices) else 0.5 if 2 * wins == len(choices) else 0.0


def _add_rates(r: dict) -> None:
    n = r["complete"]
    p = r["majority_wins"] / n if n else None
    r["win_rate"] = p
    r["win_rate_se"] = (p * (1 - p) / n) ** 0.5 if n else None
    r["judgement_win_rate"] = r["judgement_wins"] / r["judgements"] if r["judgements"] else None


class EvaluationMixin:
    """The evaluation methods of :class:`rewards.labeling.store.LabelingStore` (its ``conn`` and
    ``comparisons``)."""

    conn: sqlite3.Connection
    comparisons: ComparisonStore

    def post_evaluation(
        self, eval_id: str, pairs: list[tuple[Comparison, str, str, int]], votes: int = 3
    ) -> int:
        """Post pairwise evaluation questions for people to answer in the app, in one transaction.

        ``pairs`` holds ``(question, system, baseline, system_position)``: a 2-sample question whose sample
        ``system_position`` is ``system``'s response and the other ``baseline``'s. Each question stays open
        until ``votes`` labelers have answered it (PAPER.md §3.2: majority of 3). Returns the count."""
        self.check_new_evaluation(eval_id, votes)
        _check_pairs(pairs)
        now = time.time()
        with self.comparisons._transaction() as conn:
            ids = self.comparisons.add_in(conn, [q for q, *_ in pairs])
            for row_id, (question, system, baseline, position) in zip(ids, pairs):
                conn.execute(
                    "INSERT INTO evaluation_questions (question_id, eval_id, comparison_id, system, baseline, "
                    "system_position, votes, created) VALUES (?,?,?,?,?,?,?,?)",
                    (question.question_id, eval_id, row_id, system, baseline, position, votes, now),
                )
                if votes > 1:
                    conn.execute(
                        "INSERT INTO labeling_open (question_id, comparison_id, task, remaining) VALUES (?,?,?,?)",
                        (question.question_id, row_id, question.task, votes),
                    )
        return len(pairs)

    def check_new_evaluation(self, eval_id: str, votes: int) -> None:
        """Raise ValueError when ``eval_id`` is malformed or taken, or ``votes`` < 1."""
        if not eval_id or not set(eval_id) <= NAME_CHARS:
            raise ValueError(f"eval_id={eval_id!r}: use letters, digits, '_', '-' or '.'.")
        if votes < 1:
            raise ValueError(f"votes={votes} must be >= 1 (the paper uses a majority of 3).")
        if self.conn.execute(
            "SELECT 1 FROM evaluation_questions WHERE eval_id=? LIMIT 1", (eval_id,)
        ).fetchone():
            raise ValueError(
                f"evaluation {eval_id!r} exists in {self.comparisons.path} already; read it with "
                f"`textenv eval-results --store {self.comparisons.path} --eval-id {eval_id}` or pick a new id."
            )

    def evaluation_ids(self) -> list[str]:
        return [
            r[0]
            for r in self.conn.execute("SELECT DISTINCT eval_id FROM evaluation_questions ORDER BY eval_id")
        ]

    def evaluation_results(self, eval_id: str) -> dict:
        """Per system: the share of its questions it wins by majority vote (a tie counts one half) over the
        questions with all their votes, the share of single judgements it wins, and the counts (standard
        errors are binomial, over questions)."""
        rows = self._evaluation_questions(eval_id)
        picks = self._evaluation_picks(eval_id)
        events = self._evaluation_events(eval_id)
        out: dict = {}
        for qid, system, baseline, position, votes in rows:
            r = out.setdefault(system, {"baseline": baseline, "votes": votes, **_new_system()})
            _tally(r, picks.get(qid, []), position, votes)
        for r in out.values():
            _add_rates(r)
        return {
            "eval_id": eval_id,
            "systems": out,
            "skips": int(events.get("skip", 0)),
            "flags": int(events.get("flag", 0)),
            "complete": all(r["complete"] == r["questions"] for r in out.values()),
        }

    def _evaluation_questions(self, eval_id: str) -> list[tuple]:
        """``(question_id, system, baseline, system_position, votes)`` per question; KeyError if none."""
        rows = self.conn.execute(
            "SELECT question_id, system, baseline, system_position, votes FROM evaluation_questions "
            "WHERE eval_id=? ORDER BY comparison_id",
            (eval_id,),
        ).fetchall()
        if not rows:
            known = ", ".join(self.evaluation_ids()) or "none"
            raise KeyError(
                f"no evaluation {eval_id!r} in {self.comparisons.path} (evaluations there: {known})."
            )
        return rows

    def _evaluation_picks(self, eval_id: str) -> dict[str, list[int]]:
        """The chosen sample of every judgement, per question id, in judgement order."""
        picks: dict[str, list[int]] = {}
        for qid, label in self.conn.execute(
            "SELECT c.question_id, c.label FROM comparisons c JOIN evaluation_questions e "
            "ON c.question_id = e.question_id WHERE e.eval_id=? AND c.label IS NOT NULL ORDER BY c.id",
            (eval_id,),
        ):
            picks.setdefault(qid, []).append(int(json.loads(label)["best"]))
        return picks

    def _evaluation_events(self, eval_id: str) -> dict[str, int]:
        """The count of skips and flags (by action) on the evaluation's questions."""
        return dict(
            self.conn.execute(
                "SELECT l.action, COUNT(*) FROM labeling_events l JOIN evaluation_questions e "
                "ON l.question_id = e.question_id WHERE e.eval_id=? AND l.action != 'choose' GROUP BY l.action",
                (eval_id,),
            ).fetchall()
        )
