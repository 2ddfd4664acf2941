"""Comparisons and their store: SQLite (WAL), one row per judgement, JSONL and OpenAI-schema import/export.

A *question* is a query with N samples (N = 4 in the paper); a *judgement* is one labeler's answer to
it. Questions are stored unlabelled (``label`` NULL) by ``textenv sample`` and labelled in place by
``textenv label`` or the web app; a repeated judgement of the same question (the paper's duplicate
questions for measuring agreement, §1.7) is a new row with the same ``question_id``.

Label types (PAPER.md §1.3): ``best_of_n`` (``{"best": i}``, any N, pairwise is N = 2),
``scalar_rating`` (one sample, ``{"score": x}``), ``scalar_compare`` (two samples, ``{"difference": d}``).
Token ids are stored unpadded; OpenAI's files pad with 50259, which import strips.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

LabelType = Literal["best_of_n", "scalar_rating", "scalar_compare"]
LABEL_TYPES = ("best_of_n", "scalar_rating", "scalar_compare")
OPENAI_PAD = 50259

_SCHEMA = """
CREATE TABLE IF NOT EXISTS comparisons (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    question_id TEXT NOT NULL,
    task TEXT NOT NULL,
    label_type TEXT NOT NULL,
    query TEXT NOT NULL,
    samples TEXT NOT NULL,
    query_text TEXT,
    sample_texts TEXT,
    reference TEXT,
    label TEXT,
    labeler TEXT,
    policy_version INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    labeled REAL
);
CREATE INDEX IF NOT EXISTS comparisons_task ON comparisons(task, label_type);
CREATE INDEX IF NOT EXISTS comparisons_question ON comparisons(question_id);
"""


class LabelFileError(ValueError):
    """A malformed label file; the message names the line and the reason. Nothing was imported."""


@dataclass
class Comparison:
    """One question and, once labelled, one judgement of it."""

    task: str
    query: list[int]
    samples: list[list[int]]
    label_type: LabelType = "best_of_n"
    label: dict | None = None
    labeler: str | None = None
    query_text: str | None = None
    sample_texts: list[str] | None = None
    reference: str | None = None
    policy_version: int = 0
    question_id: str = ""
    created: float = field(default_factory=time.time)
    labeled: float | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        validate(self)

    @property
    def best(self) -> int:
        if self.label is None or "best" not in self.label:
            raise ValueError(f"Comparison {self.id} has no best-of-n label (label={self.label}).")
        return int(self.label["best"])


def validate(c: Comparison) -> None:
    """Raise ValueError naming the bad field when ``c`` is inconsistent."""
    if c.label_type not in LABEL_TYPES:
        raise ValueError(f"label_type {c.label_type!r} is not one of {LABEL_TYPES}.")
    if not c.samples:
        raise ValueError("a comparison needs at least one sample.")
    for ids in [c.query, *c.samples]:
        if not all(isinstance(t, int) and t >= 0 for t in ids):
            raise ValueError(f"token ids must be non-negative ints, got {ids[:8]}...")
    n = len(c.samples)
    if c.label_type == "scalar_rating" and n != 1:
        raise ValueError(f"scalar_rating takes exactly 1 sample, got {n}.")
    if c.label_type == "scalar_compare" and n != 2:
        raise ValueError(f"scalar_compare takes exactly 2 samples, got {n}.")
    if c.label_type == "best_of_n" and n < 2:
        raise ValueError(f"best_of_n needs at least 2 samples, got {n}.")
    if c.sample_texts is not None and len(c.sample_texts) != n:
        raise ValueError(f"{len(c.sample_texts)} sample_texts for {n} samples.")
    if c.label is not None:
        key = {"best_of_n": "best", "scalar_rating": "score", "scalar_compare": "difference"}[c.label_type]
        if key not in c.label:
            raise ValueError(f"a {c.label_type} label needs the key {key!r}, got {c.label}.")
        if key == "best" and not (isinstance(c.label["best"], int) and 0 <= c.label["best"] < n):
            raise ValueError(f"best={c.label['best']!r} must be an int in [0, {n}).")
        if key != "best" and not isinstance(c.label[key], (int, float)):
            raise ValueError(f"{key}={c.label[key]!r} must be a number.")


class ComparisonStore:
    """SQLite store of questions and judgements, safe under concurrent writers (WAL + busy timeout)."""

    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ComparisonStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # ------------------------------------------------------------------------------------ writes
    def add(self, comparisons: Iterable[Comparison]) -> list[int]:
        """Insert questions (labelled or not) in one transaction; returns their row ids."""
        with self._transaction() as conn:
            return self.add_in(conn, comparisons)

    def add_in(self, conn: sqlite3.Connection, comparisons: Iterable[Comparison]) -> list[int]:
        """:meth:`add` inside the caller's transaction (so it can commit more with it)."""
        ids = []
        for c in list(comparisons):
            validate(c)
            cur = conn.execute(
                "INSERT INTO comparisons (question_id, task, label_type, query, samples, query_text, sample_texts, "
                "reference, label, labeler, policy_version, created, labeled) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    c.question_id or "",
                    c.task,
                    c.label_type,
                    json.dumps(c.query),
                    json.dumps(c.samples),
                    c.query_text,
                    None if c.sample_texts is None else json.dumps(c.sample_texts),
                    c.reference,
                    None if c.label is None else json.dumps(c.label),
                    c.labeler,
                    int(c.policy_version),
                    float(c.created),
                    c.labeled if c.labeled is not None else (time.time() if c.label is not None else None),
                ),
            )
            row_id = int(cur.lastrowid)
            if not c.question_id:
                conn.execute("UPDATE comparisons SET question_id=? WHERE id=?", (f"q{row_id}", row_id))
                c.question_id = f"q{row_id}"
            c.id = row_id
            ids.append(row_id)
        return ids

    def record_label(self, row_id: int, label: dict, labeler: str) -> Comparison:
        """Label a stored question. A pending row is labelled in place; a labelled one gets a new
        judgement row (a duplicate, for agreement statistics)."""
        with self._transaction() as conn:
            row_id = self.record_label_in(conn, row_id, label, labeler)
        return self.get(row_id)

    def record_label_in(self, conn: sqlite3.Connection, row_id: int, label: dict, labeler: str) -> int:
        """:meth:`record_label` inside the caller's transaction (so it can commit more with it); returns
        the id of the judgement row."""
        current = self.get(row_id)
        validate(Comparison(**{**asdict(current), "label": label, "labeler": labeler, "id": None}))
        now = time.time()
        cur = conn.execute(
            "UPDATE comparisons SET label=?, labeler=?, labeled=? WHERE id=? AND label IS NULL",
            (json.dumps(label), labeler, now, row_id),
        )
        if cur.rowcount:
            return row_id
        cur = conn.execute(  # already labelled: a second judgement of the same question
            "INSERT INTO comparisons (question_id, task, label_type, query, samples, query_text, sample_texts, "
            "reference, label, labeler, policy_version, created, labeled) "
            "SELECT question_id, task, label_type, query, samples, query_text, sample_texts, reference, ?, ?, "
            "policy_version, ?, ? FROM comparisons WHERE id=?",
            (json.dumps(label), labeler, now, now, row_id),
        )
        return int(cur.lastrowid)

    # ------------------------------------------------------------------------------------- reads
    def _rows(self, where: str = "", params: Sequence = ()) -> list[Comparison]:
        cur = self._conn.execute(
            "SELECT id, question_id, task, label_type, query, samples, query_text, sample_texts, reference, label, "
            f"labeler, policy_version, created, labeled FROM comparisons {where} ORDER BY id",
            tuple(params),
        )
        out = []
        for r in cur.fetchall():
            out.append(
                Comparison(
                    id=r[0],
                    question_id=r[1],
                    task=r[2],
                    label_type=r[3],
                    query=json.loads(r[4]),
                    samples=json.loads(r[5]),
                    query_text=r[6],
                    sample_texts=None if r[7] is None else json.loads(r[7]),
                    reference=r[8],
                    label=None if r[9] is None else json.loads(r[9]),
                    labeler=r[10],
                    policy_version=r[11],
                    created=r[12],
                    labeled=r[13],
                )
            )
        return out

    def get(self, row_id: int) -> Comparison:
        rows = self._rows("WHERE id=?", (row_id,))
        if not rows:
            raise KeyError(f"No comparison with id {row_id} in {self.path}.")
        return rows[0]

    def _filter(self, task: str | None, label_type: str | None, labelled: bool | None) -> tuple[str, list]:
        clauses, params = [], []
        if task is not None:
            clauses.append("task=?")
            params.append(task)
        if label_type is not None:
            clauses.append("label_type=?")
            params.append(label_type)
        if labelled is True:
            clauses.append("label IS NOT NULL")
        elif labelled is False:
            clauses.append("label IS NULL")
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def pending(self, task: str | None = None, limit: int | None = None) -> list[Comparison]:
        where, params = self._filter(task, None, False)
        rows = self._rows(where, params)
        return rows[:limit] if limit is not None else rows

    def labelled(self, task: str | None = None, label_type: str | None = None) -> list[Comparison]:
        where, params = self._filter(task, label_type, True)
        return self._rows(where, params)

    def all(self) -> list[Comparison]:
        return self._rows()

    def count(self, task: str | None = None, labelled: bool | None = None) -> int:
        where, params = self._filter(task, None, labelled)
        return int(self._conn.execute(f"SELECT COUNT(*) FROM comparisons {where}", params).fetchone()[0])

    def count_questions(self, task: str | None = None, labelled: bool | None = None) -> int:
        """Distinct questions (a question judged twice counts once), with the same filters as :meth:`count`;
        an indexed count, cheap enough to poll."""
        where, params = self._filter(task, None, labelled)
        query = f"SELECT COUNT(DISTINCT question_id) FROM comparisons {where}"
        return int(self._conn.execute(query, params).fetchone()[0])

    # ---------------------------------------------------------------------------- import/export
    def export_jsonl(self, path: str | Path) -> int:
        """Every row as one JSON object per line (this store's own schema)."""
        rows = self.all()
        with open(path, "w", encoding="utf-8") as f:
            for c in rows:
                f.write(json.dumps(asdict(c), ensure_ascii=False) + "\n")
        return len(rows)

    def import_jsonl(self, path: str | Path) -> int:
        """Import a file written by :meth:`export_jsonl`; all or nothing."""
        items = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    row.pop("id", None)
                    items.append(Comparison(**row))
                except (json.JSONDecodeError, TypeError, ValueError) as e:
                    raise LabelFileError(f"{path}:{n}: {e}; nothing was imported.") from e
        self.add(items)
        return len(items)

    def export_openai(
        self, path: str | Path, query_length: int, response_length: int, pad_id: int = OPENAI_PAD
    ) -> int:
        """Labelled best-of-N rows in OpenAI's label schema: a JSON list of ``{query, sample0..N-1, best}``
        with token ids right-padded by ``pad_id`` (50259) to fixed lengths."""
        out = []
        for c in self.labelled(label_type="best_of_n"):
            if len(c.query) > query_length or any(len(s) > response_length for s in c.samples):
                raise ValueError(
                    f"Comparison {c.id} is longer than query_length={query_length}/response_length={response_length}."
                )
            row = {"query": c.query + [pad_id] * (query_length - len(c.query))}
            for i, s in enumerate(c.samples):
                row[f"sample{i}"] = s + [pad_id] * (response_length - len(s))
            row["best"] = c.best
            out.append(row)
        Path(path).write_text(json.dumps(out))
        return len(out)

    def import_openai(
        self, path: str | Path, task: str, labeler: str = "openai", pad_id: int = OPENAI_PAD
    ) -> int:
        """Import OpenAI's ``best_of_N`` label files (a JSON list, or JSONL) with pads stripped; all or
        nothing: a malformed row raises :class:`LabelFileError` naming its line and reason."""
        text = Path(path).read_text(encoding="utf-8")
        stripped = text.lstrip()
        rows: list[tuple[int, object]] = []
        if stripped.startswith("["):
            try:
                rows = list(enumerate(json.loads(text), 1))
            except json.JSONDecodeError as e:
                raise LabelFileError(
                    f"{path}:{e.lineno}: invalid JSON ({e.msg}); nothing was imported."
                ) from e
        else:
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append((n, json.loads(line)))
                    except json.JSONDecodeError as e:
                        raise LabelFileError(
                            f"{path}:{n}: invalid JSON ({e.msg}); nothing was imported."
                        ) from e
        items = []
        for n, row in rows:
            items.append(_openai_row(row, n, path, task, labeler, pad_id))
        self.add(items)
        return len(items)


def _openai_row(row: object, n: int, path, task: str, labeler: str, pad_id: int) -> Comparison:
    where = f"{path}:{n}"
    if not isinstance(row, dict):
        raise LabelFileError(
            f"{where}: expected an object with query, sample0..N-1, best; nothing was imported."
        )
    if "query" not in row or "best" not in row:
        raise LabelFileError(
            f"{where}: missing 'query' or 'best' (keys: {sorted(row)}); nothing was imported."
        )
    k = 0
    samples = []
    while f"sample{k}" in row:
        samples.append(row[f"sample{k}"])
        k += 1
    if k < 2:
        raise LabelFileError(
            f"{where}: needs sample0 and sample1 at least, found {k} samples; nothing was imported."
        )

    def ids(value, name):
        if not isinstance(value, list) or not all(isinstance(t, int) and t >= 0 for t in value):
            raise LabelFileError(f"{where}: {name} must be a list of token ids; nothing was imported.")
        return [t for t in value if t != pad_id]

    best = row["best"]
    if not isinstance(best, int) or not 0 <= best < k:
        raise LabelFileError(f"{where}: best={best!r} is not an index in [0, {k}); nothing was imported.")
    return Comparison(
        task=task,
        query=ids(row["query"], "query"),
        samples=[ids(s, f"sample{i}") for i, s in enumerate(samples)],
        label={"best": best},
        labeler=labeler,
    )
