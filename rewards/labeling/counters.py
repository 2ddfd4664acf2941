"""Counters the labeling app reads instead of scanning tables: kept by SQLite triggers, so that every
write to the file (the app's answers, ``textenv sample``, the online loop, imports, any process) updates
them in its own transaction: they are exact after a crash (a SIGKILL rolls back the write and its counts
together) and cost O(log n) per written row (an index probe on ``comparisons(question_id)``).

Tables (all ``WITHOUT ROWID``, keyed for point reads):

* ``labeling_counts(kind, scope, value)``: per task (``scope`` = the task) and in all
  (``kind`` ending ``_all``, ``scope`` ``''``): ``questions`` (distinct question ids), ``pending``
  (distinct question ids with an unlabelled row: the ``pending_questions`` of ``/api/next``) and
  ``judgements`` (labelled rows); ``dup_questions`` (training questions answered by two labelers or more);
  ``open_seq`` (the last sequence number given to a row of ``labeling_open``: it only grows).
* ``labeling_labeler_counts``: per labeler, answers, skips and flags, first and last event time.
* ``labeling_hourly``: per hour (``created // 3600``) and labeler, answers, skips and flags.
* ``labeling_pairs``: per pair of labelers (``a < b``) and kind (``train``: best-of-N questions;
  ``eval``: the pairwise questions of human evaluations), the questions both answered (``pairs``), those
  where they picked the same sample (``agree``) and the sum of 1/N (``chance``: the agreement two uniform
  random pickers would expect is ``chance / pairs``).

:func:`install` creates the triggers and, the first time (or when :data:`VERSION` changes), recounts
everything from the tables (O(n), once per store file). :func:`recount` is the reference the tests
compare the live counters with.
"""

from __future__ import annotations

import sqlite3

VERSION = 2

TABLES = """
CREATE TABLE IF NOT EXISTS labeling_counts (
    kind TEXT NOT NULL, scope TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (kind, scope)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS labeling_labeler_counts (
    labeler TEXT PRIMARY KEY, choose INTEGER NOT NULL, skip INTEGER NOT NULL, flag INTEGER NOT NULL,
    first REAL NOT NULL, last REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS labeling_hourly (
    hour INTEGER NOT NULL, labeler TEXT NOT NULL, choose INTEGER NOT NULL, skip INTEGER NOT NULL,
    flag INTEGER NOT NULL, PRIMARY KEY (hour, labeler)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS labeling_pairs (
    kind TEXT NOT NULL, a TEXT NOT NULL, b TEXT NOT NULL, pairs INTEGER NOT NULL, agree INTEGER NOT NULL,
    chance REAL NOT NULL, PRIMARY KEY (kind, a, b)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS labeling_cursors (
    labeler TEXT NOT NULL, scope TEXT NOT NULL, open_seq INTEGER NOT NULL, pending_id INTEGER NOT NULL,
    PRIMARY KEY (labeler, scope)
) WITHOUT ROWID;
"""


def _bump(kind: str, scope: str, delta: int, cond: str) -> str:
    return (
        f"INSERT INTO labeling_counts (kind, scope, value) SELECT '{kind}', {scope}, {delta} WHERE {cond} "
        "ON CONFLICT (kind, scope) DO UPDATE SET value = value + excluded.value;"
    )


def _distinct_triggers(name: str, pred: str) -> str:
    """Triggers keeping ``name`` (per task) and ``name_all`` (in all): the distinct question ids of the
    rows of ``comparisons`` satisfying ``pred`` (an expression over a row alias ``{r}``)."""

    def p(r: str) -> str:
        return pred.format(r=r)

    def same(r: str, per_task: bool) -> str:  # rows of the set with the same question id (and task)
        t = f" AND c.task = {r}.task" if per_task else ""
        return (
            "(SELECT COUNT(*) FROM comparisons c INDEXED BY comparisons_question "
            f"WHERE c.question_id = {r}.question_id{t} AND {p('c')})"
        )

    def add(r: str, per_task: bool) -> str:  # the row joined the set: a new id when it is alone there
        kind, scope = (name, f"{r}.task") if per_task else (f"{name}_all", "''")
        return _bump(kind, scope, 1, f"{p(r)} AND {same(r, per_task)} = 1")

    def remove(r: str, per_task: bool) -> str:  # the row left the set: an id gone when none is left
        kind, scope = (name, f"{r}.task") if per_task else (f"{name}_all", "''")
        return _bump(kind, scope, -1, f"{p(r)} AND {same(r, per_task)} = 0")

    out = ""
    for per_task, suffix in ((True, "task"), (False, "all")):
        # an update moves the row out of its old (question id, task) and into its new one: only when
        # membership or the key changed (else the row would count as arriving where it already is)
        changed = f"({p('OLD')}) IS NOT ({p('NEW')}) OR OLD.question_id IS NOT NEW.question_id"
        if per_task:
            changed += " OR OLD.task IS NOT NEW.task"
        out += f"""
CREATE TRIGGER IF NOT EXISTS labeling_{name}_ins_{suffix} AFTER INSERT ON comparisons
BEGIN {add("NEW", per_task)} END;
CREATE TRIGGER IF NOT EXISTS labeling_{name}_del_{suffix} AFTER DELETE ON comparisons
BEGIN {remove("OLD", per_task)} END;
CREATE TRIGGER IF NOT EXISTS labeling_{name}_upd_{suffix} AFTER UPDATE ON comparisons WHEN {changed}
BEGIN {remove("OLD", per_task)} {add("NEW", per_task)} END;
"""
    return out


TRIGGERS = (
    _distinct_triggers("questions", "1")
    + _distinct_triggers("pending", "{r}.label IS NULL")
    + """
CREATE TRIGGER IF NOT EXISTS labeling_judgements_ins AFTER INSERT ON comparisons WHEN NEW.label IS NOT NULL
BEGIN """
    + _bump("judgements", "NEW.task", 1, "1")
    + _bump("judgements_all", "''", 1, "1")
    + """ END;
CREATE TRIGGER IF NOT EXISTS labeling_judgements_del AFTER DELETE ON comparisons WHEN OLD.label IS NOT NULL
BEGIN """
    + _bump("judgements", "OLD.task", -1, "1")
    + _bump("judgements_all", "''", -1, "1")
    + """ END;
CREATE TRIGGER IF NOT EXISTS labeling_judgements_upd AFTER UPDATE ON comparisons
WHEN (OLD.label IS NULL) IS NOT (NEW.label IS NULL) OR OLD.task IS NOT NEW.task BEGIN """
    + _bump("judgements", "OLD.task", -1, "OLD.label IS NOT NULL")
    + _bump("judgements", "NEW.task", 1, "NEW.label IS NOT NULL")
    + _bump("judgements_all", "''", -1, "OLD.label IS NOT NULL AND NEW.label IS NULL")
    + _bump("judgements_all", "''", 1, "OLD.label IS NULL AND NEW.label IS NOT NULL")
    + """ END;
CREATE TRIGGER IF NOT EXISTS labeling_open_seq AFTER INSERT ON labeling_open BEGIN """
    + _bump("open_seq", "''", 1, "1")
    + """
    UPDATE labeling_open SET seq = (SELECT value FROM labeling_counts WHERE kind = 'open_seq' AND scope = '')
    WHERE question_id = NEW.question_id;
END;
CREATE TRIGGER IF NOT EXISTS labeling_events_ins AFTER INSERT ON labeling_events BEGIN
    INSERT INTO labeling_labeler_counts (labeler, choose, skip, flag, first, last)
    VALUES (NEW.labeler, NEW.action = 'choose', NEW.action = 'skip', NEW.action = 'flag', NEW.created, NEW.created)
    ON CONFLICT (labeler) DO UPDATE SET choose = choose + excluded.choose, skip = skip + excluded.skip,
        flag = flag + excluded.flag, first = MIN(first, excluded.first), last = MAX(last, excluded.last);
    INSERT INTO labeling_hourly (hour, labeler, choose, skip, flag)
    VALUES (CAST(NEW.created / 3600 AS INTEGER), NEW.labeler, NEW.action = 'choose', NEW.action = 'skip',
            NEW.action = 'flag')
    ON CONFLICT (hour, labeler) DO UPDATE SET choose = choose + excluded.choose, skip = skip + excluded.skip,
        flag = flag + excluded.flag;
    INSERT INTO labeling_pairs (kind, a, b, pairs, agree, chance)
    SELECT CASE WHEN EXISTS (SELECT 1 FROM evaluation_questions q WHERE q.question_id = NEW.question_id)
                THEN 'eval' ELSE 'train' END,
           MIN(e.labeler, NEW.labeler), MAX(e.labeler, NEW.labeler), 1, e.choice = NEW.choice,
           1.0 / json_array_length(c.samples)
    FROM labeling_events e JOIN comparisons c ON c.id = NEW.comparison_id
    WHERE NEW.action = 'choose' AND e.question_id = NEW.question_id AND e.action = 'choose'
          AND e.labeler != NEW.labeler
    ON CONFLICT (kind, a, b) DO UPDATE SET pairs = pairs + 1, agree = agree + excluded.agree,
        chance = chance + excluded.chance;
"""
    + _bump(
        "dup_questions",
        "''",
        1,
        "NEW.action = 'choose' AND NOT EXISTS (SELECT 1 FROM evaluation_questions q "
        "WHERE q.question_id = NEW.question_id) AND (SELECT COUNT(*) FROM labeling_events e "
        "WHERE e.question_id = NEW.question_id AND e.action = 'choose') = 2",
    )
    + "\nEND;\n"
)

_EVAL = "EXISTS (SELECT 1 FROM evaluation_questions q WHERE q.question_id = {0}.question_id)"


def recount(conn: sqlite3.Connection) -> dict[str, list[tuple]]:
    """Every counter computed from the tables themselves (full scans: O(n)), in the rows of the counter
    tables: ``{table: sorted rows}`` (``open_seq`` excluded: it is a sequence, not a count)."""
    counts: list[tuple] = []
    for name, pred in (("questions", "1"), ("pending", "label IS NULL"), ("judgements", None)):
        what = "COUNT(*)" if pred is None else "COUNT(DISTINCT question_id)"
        where = "label IS NOT NULL" if pred is None else pred
        counts += [
            (name, t, n)
            for t, n in conn.execute(f"SELECT task, {what} FROM comparisons WHERE {where} GROUP BY task")
            if n
        ]
        (total,) = conn.execute(f"SELECT {what} FROM comparisons WHERE {where}").fetchone()
        counts.append((f"{name}_all", "", total))
    (dups,) = conn.execute(
        "SELECT COUNT(*) FROM (SELECT question_id FROM labeling_events e WHERE action = 'choose' "
        f"AND NOT {_EVAL.format('e')} GROUP BY question_id HAVING COUNT(*) >= 2)"
    ).fetchone()
    counts.append(("dup_questions", "", dups))
    labelers = conn.execute(
        "SELECT labeler, SUM(action = 'choose'), SUM(action = 'skip'), SUM(action = 'flag'), MIN(created), "
        "MAX(created) FROM labeling_events GROUP BY labeler"
    ).fetchall()
    hourly = conn.execute(
        "SELECT CAST(created / 3600 AS INTEGER) h, labeler, SUM(action = 'choose'), SUM(action = 'skip'), "
        "SUM(action = 'flag') FROM labeling_events GROUP BY h, labeler"
    ).fetchall()
    pairs = conn.execute(
        f"SELECT CASE WHEN {_EVAL.format('x')} THEN 'eval' ELSE 'train' END k, x.labeler, y.labeler, COUNT(*), "
        "SUM(x.choice = y.choice), SUM(1.0 / json_array_length(c.samples)) FROM labeling_events x "
        "JOIN labeling_events y ON y.question_id = x.question_id AND x.labeler < y.labeler "
        "JOIN comparisons c ON c.id = x.comparison_id "
        "WHERE x.action = 'choose' AND y.action = 'choose' GROUP BY k, x.labeler, y.labeler"
    ).fetchall()
    return {
        "labeling_counts": sorted(
            (k, s, v) for k, s, v in counts if v or k.endswith("_all") or k == "dup_questions"
        ),
        "labeling_labeler_counts": sorted(labelers),
        "labeling_hourly": sorted(hourly),
        "labeling_pairs": sorted(pairs),
    }


def live(conn: sqlite3.Connection) -> dict[str, list[tuple]]:
    """The counter tables as they are (rows with a zero count dropped, as :func:`recount` has none)."""
    return {
        "labeling_counts": sorted(
            r
            for r in conn.execute(
                "SELECT kind, scope, value FROM labeling_counts WHERE kind NOT IN ('open_seq', 'version')"
            )
            if r[2] or r[0].endswith("_all") or r[0] == "dup_questions"
        ),
        "labeling_labeler_counts": sorted(conn.execute("SELECT * FROM labeling_labeler_counts")),
        "labeling_hourly": sorted(conn.execute("SELECT * FROM labeling_hourly")),
        "labeling_pairs": sorted(conn.execute("SELECT * FROM labeling_pairs")),
    }


def _drop_triggers(conn: sqlite3.Connection) -> None:
    for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name GLOB 'labeling_*'"
    ).fetchall():
        conn.execute(f'DROP TRIGGER "{name}"')


def install(conn: sqlite3.Connection) -> bool:
    """Create the counter tables and triggers inside the caller's (write) transaction; recount when the
    file has no counters yet or counters of another :data:`VERSION`. Returns whether it recounted."""
    for statement in _statements(TABLES):
        conn.execute(statement)
    row = conn.execute("SELECT value FROM labeling_counts WHERE kind = 'version' AND scope = ''").fetchone()
    if row is not None and row[0] == VERSION:
        return False
    _drop_triggers(conn)
    for statement in _statements(TRIGGERS):
        conn.execute(statement)
    fresh = recount(conn)
    conn.execute("DELETE FROM labeling_counts WHERE kind NOT IN ('open_seq')")
    for table in ("labeling_labeler_counts", "labeling_hourly", "labeling_pairs"):
        conn.execute(f"DELETE FROM {table}")
    conn.executemany("INSERT INTO labeling_counts VALUES (?,?,?)", fresh["labeling_counts"])
    conn.executemany(
        "INSERT INTO labeling_labeler_counts VALUES (?,?,?,?,?,?)", fresh["labeling_labeler_counts"]
    )
    conn.executemany("INSERT INTO labeling_hourly VALUES (?,?,?,?,?)", fresh["labeling_hourly"])
    conn.executemany("INSERT INTO labeling_pairs VALUES (?,?,?,?,?,?)", fresh["labeling_pairs"])
    # open questions of a store made before sequence numbers: numbered in comparison order
    (top,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM labeling_open").fetchone()
    for (qid,) in conn.execute(
        "SELECT question_id FROM labeling_open WHERE seq IS NULL ORDER BY comparison_id"
    ).fetchall():
        top += 1
        conn.execute("UPDATE labeling_open SET seq = ? WHERE question_id = ?", (top, qid))
    conn.execute(
        "INSERT INTO labeling_counts VALUES ('open_seq', '', ?) ON CONFLICT (kind, scope) DO UPDATE SET "
        "value = MAX(value, excluded.value)",
        (top,),
    )
    conn.execute("INSERT INTO labeling_counts VALUES ('version', '', ?)", (VERSION,))
    return True


def _statements(script: str) -> list[str]:
    """Split a script into statements (``sqlite3.complete_statement`` knows where a trigger ends)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return [s for s in out if s]


def get(conn: sqlite3.Connection, kind: str, scope: str = "") -> int:
    row = conn.execute(
        "SELECT value FROM labeling_counts WHERE kind = ? AND scope = ?", (kind, scope)
    ).fetchone()
    return int(row[0]) if row else 0
