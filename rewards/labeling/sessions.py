"""Labelers, their access tokens and their sessions: the :class:`LabelerMixin` of
:class:`rewards.labeling.store.LabelingStore`, in the same SQLite file.

* ``labelers``: one row per labeler, with the SHA-256 of their access token (the token itself is shown
  once, by ``textenv labelers add`` or ``rotate``), an admin flag and ``revoked`` (when the token was
  revoked; NULL while it works).
* ``labeling_sessions``: one row per login, server-side: the SHA-256 of the random session id (the cookie
  carries the id itself), the labeler, when it was created and when it expires. Ending a session (logout,
  ``labelers revoke``/``rotate``) deletes its row; ``revoked`` is only set on rows of stores made before
  that (such a row never works again and is deleted once it expires). A session works only while its row
  is there, unrevoked and unexpired, and its labeler's token is not revoked. Each login deletes up to
  ``session_cleanup_batch`` expired sessions, oldest first, through the index on ``expires``:
  O(log n + that batch), never a scan of the table.
* ``labeling_secret``: a random key for signing CSRF tokens (kept across restarts). The CSRF token is the
  HMAC of the session id, so it dies with its session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from dataclasses import dataclass

from rewards.labeling.evaluation import NAME_CHARS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labelers (
    name TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    admin INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    revoked REAL
);
CREATE TABLE IF NOT EXISTS labeling_secret (id INTEGER PRIMARY KEY CHECK (id = 1), secret TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS labeling_sessions (
    id_hash TEXT PRIMARY KEY,
    labeler TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS labeling_sessions_labeler ON labeling_sessions(labeler);
CREATE INDEX IF NOT EXISTS labeling_sessions_expires ON labeling_sessions(expires);
"""

DEFAULT_SESSION_SECONDS = 12 * 3600.0
SESSION_CLEANUP_BATCH = 64
CLEANUP_SQL = (
    "DELETE FROM labeling_sessions WHERE rowid IN (SELECT rowid FROM labeling_sessions "
    "INDEXED BY labeling_sessions_expires WHERE expires <= ? ORDER BY expires LIMIT ?)"
)
"""Delete the oldest expired sessions, at most a batch: an index range on ``expires``, no table scan."""


@dataclass
class Labeler:
    name: str
    admin: bool
    revoked: bool = False


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class LabelerMixin:
    """Labelers, tokens, server-side sessions and CSRF tokens (needs ``self.conn``, ``self.comparisons``
    and ``self.clock``, the store's injectable clock: tests move it forward).

    ``session_seconds`` is the lifetime of a new session (the app sets it from ``create_app``);
    ``session_cleanup_batch`` the most expired sessions one login deletes (each login adds one session and
    removes up to this many expired ones, so they cannot pile up while people log in)."""

    session_seconds: float = DEFAULT_SESSION_SECONDS
    session_cleanup_batch: int = SESSION_CLEANUP_BATCH

    def _init_labelers(self) -> None:
        self.conn.executescript(_SCHEMA)
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(labelers)")}
        with self.comparisons._transaction() as conn:
            if "revoked" not in columns:  # a store made before tokens could be revoked
                conn.execute("ALTER TABLE labelers ADD COLUMN revoked REAL")
            conn.execute(
                "INSERT OR IGNORE INTO labeling_secret (id, secret) VALUES (1, ?)", (secrets.token_hex(32),)
            )
        self.secret = self.conn.execute("SELECT secret FROM labeling_secret").fetchone()[0].encode()

    # ------------------------------------------------------------------------------ labelers
    def add_labeler(self, name: str, admin: bool = False) -> str:
        """Create a labeler; returns their access token (only its hash is stored)."""
        if not name or len(name) > 64 or not set(name) <= NAME_CHARS:
            raise ValueError(f"labeler name {name!r}: use 1-64 letters, digits, '_', '-' or '.'.")
        token = secrets.token_urlsafe(24)
        try:
            with self.comparisons._transaction() as conn:
                conn.execute(
                    "INSERT INTO labelers (name, token_hash, admin, created) VALUES (?,?,?,?)",
                    (name, _hash(token), int(admin), time.time()),
                )
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"a labeler named {name!r} exists already; pick another name.") from exc
        return token

    def labelers(self, include_revoked: bool = False) -> list[Labeler]:
        """The labelers (those whose token works; all of them with ``include_revoked``), by name."""
        where = "" if include_revoked else " WHERE revoked IS NULL"
        rows = self.conn.execute(f"SELECT name, admin, revoked FROM labelers{where} ORDER BY name").fetchall()
        return [Labeler(n, bool(a), r is not None) for n, a, r in rows]

    def _require_labeler(self, conn: sqlite3.Connection, name: str) -> None:
        if conn.execute("SELECT 1 FROM labelers WHERE name=?", (name,)).fetchone() is None:
            raise KeyError(f"no labeler named {name!r} in this store; `textenv labelers list` shows them.")

    def revoke_labeler(self, name: str) -> int:
        """Revoke ``name``'s token and end all their sessions at once (their answers stay; the question
        they held a lease on goes back to the pool). Returns the number of sessions ended. Raises KeyError
        for an unknown name."""
        with self.comparisons._transaction() as conn:
            self._require_labeler(conn, name)
            conn.execute(
                "UPDATE labelers SET revoked=? WHERE name=? AND revoked IS NULL", (time.time(), name)
            )
            conn.execute("DELETE FROM labeling_leases WHERE labeler=?", (name,))
            return self._end_sessions_in(conn, name)

    def rotate_token(self, name: str) -> str:
        """A new access token for ``name`` (returned once; a revoked labeler is active again with it); the
        old token and all their sessions stop working at once. Raises KeyError for an unknown name."""
        token = secrets.token_urlsafe(24)
        with self.comparisons._transaction() as conn:
            self._require_labeler(conn, name)
            conn.execute("UPDATE labelers SET token_hash=?, revoked=NULL WHERE name=?", (_hash(token), name))
            self._end_sessions_in(conn, name)
        return token

    def authenticate(self, token: str | None) -> Labeler | None:
        """The labeler whose (unrevoked) access token this is, else None."""
        if not token:
            return None
        row = self.conn.execute(
            "SELECT name, admin FROM labelers WHERE token_hash=? AND revoked IS NULL", (_hash(token),)
        ).fetchone()
        return Labeler(row[0], bool(row[1])) if row else None

    # ------------------------------------------------------------------------------ sessions
    def open_session(self, name: str) -> str:
        """A new session for ``name``, valid for ``session_seconds``; returns its random id (the cookie
        value; only its hash is stored). Up to ``session_cleanup_batch`` expired sessions are deleted here
        (:data:`CLEANUP_SQL`: O(log n + batch))."""
        if not 0 < self.session_seconds < float("inf"):
            raise ValueError(f"session_seconds={self.session_seconds} must be a positive number of seconds.")
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        with self.comparisons._transaction() as conn:
            conn.execute(CLEANUP_SQL, (now, int(self.session_cleanup_batch)))
            conn.execute(
                "INSERT INTO labeling_sessions (id_hash, labeler, created, expires) VALUES (?,?,?,?)",
                (_hash(session_id), name, now, now + self.session_seconds),
            )
        return session_id

    def session_labeler(self, session_id: str | None) -> Labeler | None:
        """The labeler of a live session (unrevoked, unexpired, token not revoked), else None."""
        if not session_id:
            return None
        row = self.conn.execute(
            "SELECT l.name, l.admin FROM labeling_sessions s JOIN labelers l ON l.name = s.labeler "
            "WHERE s.id_hash=? AND NOT s.revoked AND s.expires > ? AND l.revoked IS NULL",
            (_hash(session_id), self.clock()),
        ).fetchone()
        return Labeler(row[0], bool(row[1])) if row else None

    def end_session(self, session_id: str) -> None:
        """End one session (logout: its row is deleted): its cookie and CSRF token stop working."""
        with self.comparisons._transaction() as conn:
            conn.execute("DELETE FROM labeling_sessions WHERE id_hash=?", (_hash(session_id),))

    def end_sessions(self, name: str) -> int:
        """End every session of ``name`` (log out everywhere; the token keeps working). Returns the count."""
        with self.comparisons._transaction() as conn:
            return self._end_sessions_in(conn, name)

    @staticmethod
    def _end_sessions_in(conn: sqlite3.Connection, name: str) -> int:
        ended = conn.execute(
            "DELETE FROM labeling_sessions WHERE labeler=? AND NOT revoked", (name,)
        ).rowcount
        conn.execute("DELETE FROM labeling_sessions WHERE labeler=?", (name,))  # rows revoked before deletion
        return ended

    def sign(self, message: str) -> str:
        return hmac.new(self.secret, message.encode(), hashlib.sha256).hexdigest()

    def csrf_token(self, session_id: str) -> str:
        """The CSRF token of a session: bound to it, useless once it ends."""
        return self.sign("csrf:" + _hash(session_id))

    def check_csrf(self, session_id: str, token: str | None) -> bool:
        """Whether ``token`` is the CSRF token of this session (compared in constant time)."""
        expected = self.csrf_token(session_id).encode()
        return bool(token) and hmac.compare_digest(token.encode("utf-8", "surrogatepass"), expected)
