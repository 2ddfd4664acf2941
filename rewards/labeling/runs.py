"""What an online run (:mod:`agents.online`) records in its comparison store for the admin dashboard: the
run's l(n) schedule, the labels in against the labels needed before each PPO iteration, and each
reward-model retrain with the held-out accuracy of its model (measured, at the next retrain, on the labels
that arrived after it: labels it never trained on).

* ``online_runs``: one row per run id: task, mode, N_r0, N_r, N_pi, retrains, when it started.
* ``online_progress``: one row per (run, PPO iteration): episodes so far, l(n), labels in, pending.
* ``online_retrains``: one row per (run, retrain): iteration, episodes, labels trained on, last loss, and
  ``heldout_accuracy`` / ``heldout_labels`` (filled at the next retrain; NULL for the last one).

Rows are keyed by (run, iteration) and (run, retrain) and written with upserts, so a resumed run that
repeats an iteration overwrites its row instead of adding one. Reads cost the rows of one run.
"""

from __future__ import annotations

import sqlite3
import time

from rewards.comparisons import ComparisonStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS online_runs (
    run_id TEXT PRIMARY KEY, task TEXT NOT NULL, mode TEXT NOT NULL, initial_labels INTEGER NOT NULL,
    final_labels INTEGER NOT NULL, total_episodes INTEGER NOT NULL, retrains INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS online_runs_created ON online_runs(created);
CREATE TABLE IF NOT EXISTS online_progress (
    run_id TEXT NOT NULL, iteration INTEGER NOT NULL, episodes INTEGER NOT NULL,
    labels_needed INTEGER NOT NULL, labels INTEGER NOT NULL, pending INTEGER NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (run_id, iteration)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS online_retrains (
    run_id TEXT NOT NULL, retrain INTEGER NOT NULL, iteration INTEGER NOT NULL, episodes INTEGER NOT NULL,
    labels INTEGER NOT NULL, loss REAL, heldout_accuracy REAL, heldout_labels INTEGER, created REAL NOT NULL,
    PRIMARY KEY (run_id, retrain)
) WITHOUT ROWID;
"""


def _ensure(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA.strip().split(";"):
        if statement.strip():
            conn.execute(statement)


def record_run(store: ComparisonStore, run_id: str, **fields) -> None:
    """Record (or update) run ``run_id``'s schedule: ``task``, ``mode``, ``initial_labels``,
    ``final_labels``, ``total_episodes``, ``retrains`` (its start time is kept from the first record)."""
    with store._transaction() as conn:
        _ensure(conn)
        conn.execute(
            "INSERT INTO online_runs (run_id, task, mode, initial_labels, final_labels, total_episodes, retrains, "
            "created) VALUES (:run_id, :task, :mode, :initial_labels, :final_labels, :total_episodes, :retrains, "
            ":created) ON CONFLICT (run_id) DO UPDATE SET task = excluded.task, mode = excluded.mode, "
            "initial_labels = excluded.initial_labels, final_labels = excluded.final_labels, "
            "total_episodes = excluded.total_episodes, retrains = excluded.retrains",
            {"run_id": run_id, "created": time.time(), **fields},
        )


def record_progress(
    store: ComparisonStore,
    run_id: str,
    iteration: int,
    episodes: int,
    labels_needed: int,
    labels: int,
    pending: int,
) -> None:
    """Labels in (``labels``) against l(n) (``labels_needed``) before PPO iteration ``iteration``."""
    with store._transaction() as conn:
        _ensure(conn)
        conn.execute(
            "INSERT OR REPLACE INTO online_progress VALUES (?,?,?,?,?,?,?)",
            (
                run_id,
                int(iteration),
                int(episodes),
                int(labels_needed),
                int(labels),
                int(pending),
                time.time(),
            ),
        )


def record_retrain(
    store: ComparisonStore,
    run_id: str,
    retrain: int,
    iteration: int,
    episodes: int,
    labels: int,
    loss: float | None,
    previous_heldout: tuple[float, int] | None = None,
) -> None:
    """Retrain ``retrain`` of the run, and, with ``previous_heldout`` = (accuracy, labels), the held-out
    accuracy of the previous retrain's model on the labels that arrived after it, in one transaction."""
    with store._transaction() as conn:
        _ensure(conn)
        conn.execute(
            "INSERT OR REPLACE INTO online_retrains (run_id, retrain, iteration, episodes, labels, loss, created) "
            "VALUES (?,?,?,?,?,?,?)",
            (run_id, int(retrain), int(iteration), int(episodes), int(labels), loss, time.time()),
        )
        if previous_heldout is not None and retrain > 0:
            conn.execute(
                "UPDATE online_retrains SET heldout_accuracy = ?, heldout_labels = ? WHERE run_id = ? AND retrain = ?",
                (float(previous_heldout[0]), int(previous_heldout[1]), run_id, int(retrain) - 1),
            )


def latest_runs(conn: sqlite3.Connection, limit: int = 3) -> list[dict]:
    """The ``limit`` most recent online runs in the store, newest first, each with its schedule, its
    progress rows (by iteration) and its retrains (by index); [] when no online run wrote here."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'online_runs'").fetchone() is None:
        return []
    cols = (
        "run_id",
        "task",
        "mode",
        "initial_labels",
        "final_labels",
        "total_episodes",
        "retrains",
        "created",
    )
    runs = [
        dict(zip(cols, row))
        for row in conn.execute(
            f"SELECT {', '.join(cols)} FROM online_runs ORDER BY created DESC LIMIT ?", (int(limit),)
        )
    ]
    progress_cols = ("iteration", "episodes", "labels_needed", "labels", "pending", "created")
    retrain_cols = (
        "retrain",
        "iteration",
        "episodes",
        "labels",
        "loss",
        "heldout_accuracy",
        "heldout_labels",
        "created",
    )
    for run in runs:
        run["progress"] = [
            dict(zip(progress_cols, row))
            for row in conn.execute(
                f"SELECT {', '.join(progress_cols)} FROM online_progress WHERE run_id = ? ORDER BY iteration",
                (run["run_id"],),
            )
        ]
        run["retrain_log"] = [
            dict(zip(retrain_cols, row))
            for row in conn.execute(
                f"SELECT {', '.join(retrain_cols)} FROM online_retrains WHERE run_id = ? ORDER BY retrain",
                (run["run_id"],),
            )
        ]
    return runs
