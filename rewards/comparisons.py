"""Comparisons and their store: SQLite (WAL), one row per judgement, JSONL and OpenAI-schema import/export.

A *question* is a query with N samples (N = 4 in the paper); a *judgement* is one labeler's answer to
it. Questions are stored unlabelled (``label`` NULL) by ``textenv sample`` and labelled in place by
``textenv label`` or the web app; a repeated judgement of the same question (the paper's duplicate
questions for measuring agreement, §1.7) is a new row with the same ``question_id``.

Label types (PAPER.md §1.3): ``best_of_n`` (``{"best": i}``, any N, pairwise is N = 2),
``scalar_rating`` (one sample, ``{"score": x}``), ``scalar_compare`` (two samples, ``{"difference": d}``).
Token ids are stored unpadded; OpenAI's files pad with 50259, which import strips.

Imports (:meth:`ComparisonStore.import_jsonl`, :meth:`ComparisonStore.import_openai`, the ``textenv labels``
command) are all or nothing and strict: every row is checked (exact JSON types: a bool is not an int,
``3.0`` is not an index; no NaN or infinity; no unknown keys; labels consistent with their type; token ids
``>= 0`` and inside the vocabulary when it is given) before the first is stored, and an error names
``FILE:LINE``, the field and the fix. Imported questions get fresh ids from the store (rows of one source
``question_id`` share one new id, so repeated judgements still measure agreement); the id the row had in
the file is kept in ``source_id``. The store records each imported file's SHA-256 (table ``imports``): the
same bytes again are refused, since they would add every question a second time, unless
``allow_repeat=True`` (``--allow-repeat``) says that is meant.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

LabelType = Literal["best_of_n", "scalar_rating", "scalar_compare"]
LABEL_TYPES = ("best_of_n", "scalar_rating", "scalar_compare")
OPENAI_PAD = 50259
MAX_TOKEN_ID = 2**31 - 1
"""The largest token id an import takes when no vocabulary size is given (no tokenizer has more ids)."""
NOTHING_IMPORTED = "; nothing was imported."

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
    labeled REAL,
    source_id TEXT
);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS imports (
    sha256 TEXT NOT NULL, path TEXT NOT NULL, rows INTEGER NOT NULL, imported REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS imports_sha256 ON imports(sha256);
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
    source_id: str | None = None  # the question_id the row had in the file it was imported from
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
        if not all(_is_int(t) and t >= 0 for t in ids):
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
        if key == "best" and not (_is_int(c.label["best"]) and 0 <= c.label["best"] < n):
            raise ValueError(f"best={c.label['best']!r} must be an int in [0, {n}).")
        if key != "best" and not (
            isinstance(c.label[key], (int, float))
            and not isinstance(c.label[key], bool)
            and math.isfinite(c.label[key])
        ):
            raise ValueError(f"{key}={c.label[key]!r} must be a finite number.")


def _is_int(value: object) -> bool:
    """An int and not a bool (``True`` is an ``int`` to Python, not a token id or an index)."""
    return isinstance(value, int) and not isinstance(value, bool)


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
        self._migrate()

    def _migrate(self) -> None:
        """Bring a store file written by an older version up to this schema (added columns only)."""
        if "source_id" not in self._columns():
            with self._transaction() as conn:
                if "source_id" not in self._columns():  # another process may have added it meanwhile
                    conn.execute("ALTER TABLE comparisons ADD COLUMN source_id TEXT")

    @property
    def vocab_size(self) -> int | None:
        """The number of token ids of the models whose samples this store holds (recorded by
        :func:`rewards.pipeline.sample_questions`; the largest when several wrote here), else None.
        Imports check token ids against it when they are given no vocabulary size."""
        row = self._conn.execute("SELECT value FROM store_meta WHERE key = 'vocab_size'").fetchone()
        return None if row is None else int(row[0])

    def record_vocab_size(self, n: int) -> None:
        """Record that token ids below ``n`` are valid in this store (kept: the largest recorded)."""
        if not _is_int(n) or n < 1:
            raise ValueError(f"vocab_size={n!r} must be a positive integer (the tokenizer's size).")
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO store_meta (key, value) VALUES ('vocab_size', ?) ON CONFLICT(key) DO UPDATE SET "
                "value = CAST(MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT)",
                (str(n),),
            )

    def _columns(self) -> set[str]:
        return {r[1] for r in self._conn.execute("PRAGMA table_info(comparisons)")}

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
                "reference, label, labeler, policy_version, created, labeled, source_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
                    c.source_id,
                ),
            )
            row_id = int(cur.lastrowid)
            if not c.question_id:
                c.question_id = self._fresh_question_id(conn, row_id)
                conn.execute("UPDATE comparisons SET question_id=? WHERE id=?", (c.question_id, row_id))
            c.id = row_id
            ids.append(row_id)
        return ids

    @staticmethod
    def _fresh_question_id(conn: sqlite3.Connection, row_id: int) -> str:
        """``q<row id>``, unless a row already holds that id (stores whose imports kept their files' ids,
        before imports got fresh ids): then ``q<row id>-2``, ``-3``, ..."""
        qid, k = f"q{row_id}", 1
        while conn.execute("SELECT 1 FROM comparisons WHERE question_id=? LIMIT 1", (qid,)).fetchone():
            k += 1
            qid = f"q{row_id}-{k}"
        return qid

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
            "reference, label, labeler, policy_version, created, labeled, source_id) "
            "SELECT question_id, task, label_type, query, samples, query_text, sample_texts, reference, ?, ?, "
            "policy_version, ?, ?, source_id FROM comparisons WHERE id=?",
            (json.dumps(label), labeler, now, now, row_id),
        )
        return int(cur.lastrowid)

    # ------------------------------------------------------------------------------------- reads
    def _rows(self, where: str = "", params: Sequence = ()) -> list[Comparison]:
        cur = self._conn.execute(
            "SELECT id, question_id, task, label_type, query, samples, query_text, sample_texts, reference, label, "
            f"labeler, policy_version, created, labeled, source_id FROM comparisons {where} ORDER BY id",
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
                    source_id=r[14],
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

    def count_questions(
        self, task: str | None = None, labelled: bool | None = None, id_prefix: str | None = None
    ) -> int:
        """Distinct questions (a question judged twice counts once), with the same filters as :meth:`count`
        and, with ``id_prefix``, only the ids that start with it (a literal prefix: ``*?[`` are refused);
        an indexed count, cheap enough to poll."""
        where, params = self._filter(task, None, labelled)
        if id_prefix is not None:
            if any(ch in id_prefix for ch in "*?["):
                raise ValueError(f"id_prefix={id_prefix!r} must be a literal prefix (no '*', '?' or '[').")
            where = (where + " AND" if where else "WHERE") + " question_id GLOB ?"
            params = [*params, id_prefix + "*"]
        query = f"SELECT COUNT(DISTINCT question_id) FROM comparisons {where}"
        return int(self._conn.execute(query, params).fetchone()[0])

    # ---------------------------------------------------------------------------- import/export
    def export_jsonl(self, path: str | Path, task: str | None = None, labelled_only: bool = False) -> int:
        """Rows (of ``task``; labelled ones only with ``labelled_only``) as one JSON object per line, in this
        store's own schema; the file appears whole or not at all."""
        where, params = self._filter(task, None, True if labelled_only else None)
        rows = self._rows(where, params)
        _write_atomically(path, "".join(json.dumps(asdict(c), ensure_ascii=False) + "\n" for c in rows))
        return len(rows)

    def import_jsonl(
        self, path: str | Path, vocab_size: int | None = None, allow_repeat: bool = False
    ) -> int:
        """Import a file in :meth:`export_jsonl`'s schema; all or nothing, every row checked first (see the
        module docstring) and token ids checked against ``vocab_size`` (default: the store's recorded
        :attr:`vocab_size`, when it has one). Questions get fresh ids;
        the file's ``question_id`` is kept as ``source_id`` (and an exported ``source_id`` is replaced by
        it). An empty file is an error, and so is a file this store imported before (its bytes' SHA-256),
        unless ``allow_repeat``. Returns the number of rows imported."""
        from textenv.corpora.common import iter_json_objects

        limit = _token_limit(self.vocab_size if vocab_size is None else vocab_size)
        items = [
            _jsonl_row(row, f"{path}:{n}", limit)
            for n, row in iter_json_objects(path, LabelFileError, NOTHING_IMPORTED)
        ]
        return self._import(path, items, allow_repeat)

    def export_openai(
        self,
        path: str | Path,
        query_length: int | None = None,
        response_length: int | None = None,
        pad_id: int = OPENAI_PAD,
        task: str | None = None,
    ) -> int:
        """Labelled best-of-N rows (of ``task``) in OpenAI's label schema: a JSON list of ``{query,
        sample0..N-1, best}`` with token ids right-padded by ``pad_id`` (50259) to fixed lengths (by default
        the longest query and the longest sample exported). The file appears whole or not at all."""
        rows = self.labelled(task=task, label_type="best_of_n")
        query_length = max((len(c.query) for c in rows), default=0) if query_length is None else query_length
        if response_length is None:
            response_length = max((len(s) for c in rows for s in c.samples), default=0)
        out = []
        for c in rows:
            if len(c.query) > query_length or any(len(s) > response_length for s in c.samples):
                raise ValueError(
                    f"Comparison {c.id} is longer than query_length={query_length}/response_length={response_length}."
                )
            row = {"query": c.query + [pad_id] * (query_length - len(c.query))}
            for i, s in enumerate(c.samples):
                row[f"sample{i}"] = s + [pad_id] * (response_length - len(s))
            row["best"] = c.best
            out.append(row)
        _write_atomically(path, json.dumps(out))
        return len(out)

    def import_openai(
        self,
        path: str | Path,
        task: str,
        labeler: str = "openai",
        pad_id: int = OPENAI_PAD,
        vocab_size: int | None = None,
        allow_repeat: bool = False,
    ) -> int:
        """Import OpenAI's ``best_of_N`` label files (a JSON list, or JSONL) as labelled ``task`` questions
        with pads stripped; all or nothing, with the checks of :meth:`import_jsonl`: a malformed row raises
        :class:`LabelFileError` naming its line and reason. Returns the number of rows imported."""
        from textenv.corpora.common import iter_json_list, iter_json_objects, json_kind

        if not task:
            raise ValueError("import_openai needs the task the labels are for (task=...).")
        limit = _token_limit(self.vocab_size if vocab_size is None else vocab_size)
        if _first_char(path) == "[":
            rows = [
                (f"{path}:{line} (item {k})", row)
                for line, k, row in iter_json_list(path, LabelFileError, NOTHING_IMPORTED)
            ]
        else:
            rows = [(f"{path}:{n}", r) for n, r in iter_json_objects(path, LabelFileError, NOTHING_IMPORTED)]
        items = []
        for where, row in rows:
            if not isinstance(row, dict):
                _refuse(where, f"expected a JSON object, got {json_kind(row)}")
            items.append((_openai_row(row, where, task, labeler, pad_id, limit), "", where))
        return self._import(path, items, allow_repeat)

    def imported_before(self, sha256: str) -> tuple[str, int, float] | None:
        """``(path, rows, time)`` of the first import of a file with these bytes, or None."""
        row = self._conn.execute(
            "SELECT path, rows, imported FROM imports WHERE sha256 = ? ORDER BY imported LIMIT 1", (sha256,)
        ).fetchone()
        return (row[0], int(row[1]), float(row[2])) if row else None

    def _import(self, path: str | Path, items: list[tuple[Comparison, str, str]], allow_repeat: bool) -> int:
        """Store ``(comparison, source question id, where)`` items in one transaction with fresh question
        ids: one new id per distinct source id (``""``: a question of its own); the file's SHA-256 is
        recorded in the same transaction, and a file imported before is refused unless ``allow_repeat``."""
        if not items:
            raise LabelFileError(f"{path}: no rows (the file is empty or blank){NOTHING_IMPORTED}")
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        first: dict[str, tuple[Comparison, str]] = {}
        for c, source, where in items:
            if source and source in first:
                _same_question(first[source], c, source, where)
            elif source:
                first[source] = (c, where)
        with self._transaction() as conn:
            # checked inside the write lock: two imports of one file at once cannot both pass
            before = self.imported_before(digest)
            if before is not None and not allow_repeat:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(before[2]))
                raise LabelFileError(
                    f"{path}: this store imported the same file (sha256 {digest[:12]}...) on {when} from "
                    f"{before[0]} ({before[1]} rows); a second import would add every question again. Pass "
                    "allow_repeat=True (textenv labels import --allow-repeat) if that is meant"
                    f"{NOTHING_IMPORTED}"
                )
            new_ids: dict[str, str] = {}
            for c, source, _ in items:
                c.source_id = source or None
                c.question_id = new_ids.get(source, "")
                self.add_in(conn, [c])
                if source:
                    new_ids[source] = c.question_id
            conn.execute(
                "INSERT INTO imports (sha256, path, rows, imported) VALUES (?, ?, ?, ?)",
                (digest, str(path), len(items), time.time()),
            )
        return len(items)


def _write_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder: whole or not at all."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _first_char(path: str | Path) -> str:
    """The first character of a file that is not white space (``""`` when there is none)."""
    with open(path, "rb") as f:
        while chunk := f.read(4096):
            text = chunk.lstrip(b" \t\r\n\xef\xbb\xbf")
            if text:
                return chr(text[0])
    return ""


def _token_limit(vocab_size: int | None) -> int:
    """The number of token ids an import takes: ``vocab_size``, else :data:`MAX_TOKEN_ID` + 1."""
    if vocab_size is None:
        return MAX_TOKEN_ID + 1
    if not _is_int(vocab_size) or vocab_size < 1:
        raise ValueError(f"vocab_size={vocab_size!r} must be a positive integer (the tokenizer's size).")
    return vocab_size


def _refuse(where: str, reason: str) -> NoReturn:
    raise LabelFileError(f"{where}: {reason}{NOTHING_IMPORTED}")


# ------------------------------------------------------------------------------- row schemas
_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
TokenId = Annotated[int, Field(ge=0)]


class _JsonlRow(BaseModel):
    """One line of :meth:`ComparisonStore.export_jsonl`'s schema (the fields of :class:`Comparison`)."""

    model_config = _STRICT
    task: Annotated[str, Field(min_length=1)]
    query: list[TokenId]
    samples: list[list[TokenId]]
    label_type: Literal["best_of_n", "scalar_rating", "scalar_compare"] = "best_of_n"
    label: dict[str, Any] | None = None
    labeler: str | None = None
    query_text: str | None = None
    sample_texts: list[str] | None = None
    reference: str | None = None
    policy_version: int = 0
    question_id: str = ""
    created: float | None = None
    labeled: float | None = None
    source_id: str | None = None  # replaced by question_id on import
    id: int | None = None  # the exporting store's row id: ignored


class _BestLabel(BaseModel):
    model_config = _STRICT
    best: TokenId


class _ScoreLabel(BaseModel):
    model_config = _STRICT
    score: float


class _DifferenceLabel(BaseModel):
    model_config = _STRICT
    difference: float


_LABELS: dict[str, type[BaseModel]] = {
    "best_of_n": _BestLabel,
    "scalar_rating": _ScoreLabel,
    "scalar_compare": _DifferenceLabel,
}
_TOKENS = TypeAdapter(list[TokenId], config=ConfigDict(strict=True))
_INDEX = TypeAdapter(TokenId, config=ConfigDict(strict=True))


def _shown(value: object, width: int = 40) -> str:
    """A value as JSON, cut to ``width`` characters (a message never echoes a huge input)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _field_name(loc: Sequence) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _explain(exc: ValidationError, prefix: str = "", known: Sequence[str] = (), hint: str = "") -> str:
    """The first problem of a pydantic error as ``field: reason; fix`` (unknown keys all at once)."""
    errors = exc.errors()
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        names = ", ".join(repr(prefix + _field_name(e["loc"])) for e in extra)
        return (
            f"unknown key{'s' if len(extra) > 1 else ''} {names}; remove {'them' if len(extra) > 1 else 'it'}"
            + (f" (known keys: {', '.join(known)})" if known else "")
            + hint
        )
    err = errors[0]
    name = prefix + _field_name(err["loc"])
    got = _shown(err.get("input"))
    kind = err["type"]
    if kind == "missing":
        reason = f"missing key {name!r}; add it{hint}"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        reason = f'{name} must be an integer, got {got}; write e.g. 3 (not 3.0, "3" or true)'
    elif kind in ("float_type", "float_parsing"):
        reason = f'{name} must be a number, got {got}; write e.g. 0.5 (not "0.5" or true)'
    elif kind == "finite_number":
        reason = f"{name} must be a finite number, got {got}"
    elif kind == "string_type":
        reason = f"{name} must be a string, got {got}"
    elif kind == "string_too_short":
        reason = f"{name} must not be empty"
    elif kind == "list_type":
        what = "a list of token ids" if name.startswith(("query", "sample")) else "a list"
        reason = f"{name} must be {what}, got {got}"
    elif kind == "dict_type":
        reason = f"{name} must be an object, got {got}"
    elif kind == "greater_than_equal":
        reason = f"{name}={got} is negative; token ids and indices are integers >= 0"
    elif kind == "literal_error":
        reason = f"{name}={got} is not one of {', '.join(LABEL_TYPES)}"
    else:
        reason = f"{name}: {err['msg'][0].lower()}{err['msg'][1:]}, got {got}"
    more = len(errors) - 1
    return reason + (f" (and {more} more problem{'s' if more > 1 else ''} on this line)" if more else "")


_OPENAI_HINT = "; OpenAI's schema (query, sample0..sampleN-1, best) imports with --format openai --task TASK"


def _check_tokens(where: str, name: str, ids: list[int], limit: int) -> None:
    for i, t in enumerate(ids):
        if t >= limit:
            if limit == MAX_TOKEN_ID + 1:
                _refuse(
                    where,
                    f"{name}[{i}]={t} is not a token id (no vocabulary is that large); check the file, and "
                    "pass the tokenizer (--tokenizer SPEC or --vocab-size N) to check ids exactly",
                )
            _refuse(
                where,
                f"{name}[{i}]={t} is outside the vocabulary of {limit} token ids (0..{limit - 1}); "
                "check that the file was made with this tokenizer",
            )


def _jsonl_row(row: dict, where: str, limit: int) -> tuple[Comparison, str, str]:
    """A validated line of a JSONL label file as ``(comparison, its source question id, where)``."""
    try:
        r = _JsonlRow.model_validate(row)
    except ValidationError as e:
        hint = _OPENAI_HINT if "best" in row or "sample0" in row else ""
        _refuse(where, _explain(e, known=list(_JsonlRow.model_fields), hint=hint))
    n = len(r.samples)
    wanted, ok = {
        "best_of_n": ("at least 2 samples", n >= 2),
        "scalar_rating": ("exactly 1 sample", n == 1),
        "scalar_compare": ("exactly 2 samples", n == 2),
    }[r.label_type]
    if not ok:
        _refuse(where, f"a {r.label_type} row needs {wanted}, got {n}; fix samples or label_type")
    if r.sample_texts is not None and len(r.sample_texts) != n:
        _refuse(where, f"{len(r.sample_texts)} sample_texts for {n} samples; give one text per sample")
    _check_tokens(where, "query", r.query, limit)
    for i, s in enumerate(r.samples):
        _check_tokens(where, f"samples[{i}]", s, limit)
    if r.label is not None:
        model = _LABELS[r.label_type]
        try:
            model.model_validate(r.label)
        except ValidationError as e:
            key = next(iter(model.model_fields))
            hint = f"; a {r.label_type} label is {{{key!r}: {'i' if key == 'best' else 'x'}}}".replace(
                "'", '"'
            )
            _refuse(where, _explain(e, "label.", list(model.model_fields), hint))
        if r.label_type == "best_of_n" and r.label["best"] >= n:
            _refuse(where, f"label.best={r.label['best']} is not an index of the {n} samples (0..{n - 1})")
    if r.label is None and (r.labeler is not None or r.labeled is not None):
        _refuse(
            where,
            "an unlabelled row (label null) has a labeler or labeled time; remove them or add the label",
        )
    fields = r.model_dump(exclude={"id", "source_id", "question_id", "created"})
    try:
        c = Comparison(**fields, created=time.time() if r.created is None else r.created)
    except ValueError as e:  # the dataclass's own checks, already covered above
        _refuse(where, str(e))
    return c, r.question_id, where


def _same_question(first: tuple[Comparison, str], c: Comparison, source: str, where: str) -> None:
    """Rows that share a source question id must be judgements of one question."""
    a, at = first
    for name in ("task", "label_type", "query", "samples"):
        if getattr(a, name) != getattr(c, name):
            _refuse(
                where,
                f"question_id {source!r} is also on line {at.rsplit(':', 1)[-1]} for another question (its "
                f"{name} differs); give each question its own question_id",
            )


def _openai_row(row: dict, where: str, task: str, labeler: str, pad_id: int, limit: int) -> Comparison:
    k = 0
    while f"sample{k}" in row:
        k += 1
    known = ["query", *(f"sample{i}" for i in range(k)), "best"]
    unknown = [key for key in row if key not in known]
    if unknown:
        _refuse(
            where,
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; OpenAI's schema "
            "has query, sample0..sampleN-1 (numbered from 0 without gaps) and best",
        )
    missing = [key for key in ("query", "best") if key not in row]
    if missing:
        _refuse(where, f"missing key {missing[0]!r}; a row needs query, sample0..sampleN-1 and best")
    if k < 2:
        _refuse(where, f"needs sample0 and sample1 at least, found {k} samples")

    def ids(name: str) -> list[int]:
        try:
            value = _TOKENS.validate_python(row[name])
        except ValidationError as e:
            _refuse(where, _explain(e, prefix=name))
        value = [t for t in value if t != pad_id]
        _check_tokens(where, name, value, limit)
        return value

    query, samples = ids("query"), [ids(f"sample{i}") for i in range(k)]
    try:
        best = _INDEX.validate_python(row["best"])
    except ValidationError as e:
        _refuse(where, _explain(e, prefix="best"))
    if best >= k:
        _refuse(where, f"best={best} is not an index in [0, {k}) (the row has {k} samples)")
    return Comparison(task=task, query=query, samples=samples, label={"best": best}, labeler=labeler)
