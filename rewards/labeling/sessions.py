"""Labelers, their access tokens and their sessions: the :class:`LabelerMixin` of
:class:`rewards.labeling.store.LabelingStore`, in the same SQLite file.

* ``labelers``: one row per labeler, with the SHA-256 of their access token (the token itself is shown
  once, by ``textenv labelers add``) and an admin flag.
* ``labeling_secret``: a random key for signing session cookies and CSRF tokens (kept across restarts).
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
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS labeling_secret (id INTEGER PRIMARY KEY CHECK (id = 1), secret TEXT NOT NULL);
"""


@dataclass
class Labeler:
    name: str
    admin: bool


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LabelerMixin:
    """Labelers, tokens, session cookies and CSRF tokens (needs ``self.conn`` and ``self.comparisons``)."""

    def _init_labelers(self) -> None:
        self.conn.executescript(_SCHEMA)
        with self.comparisons._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO labeling_secret (id, secret) VALUES (1, ?)", (secrets.token_hex(32),)
            )
        self.secret = self.conn.execute("SELECT secret FROM labeling_secret").fetchone()[0].encode()

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

    def labelers(self) -> list[Labeler]:
        rows = self.conn.execute("SELECT name, admin FROM labelers ORDER BY name").fetchall()
        return [Labeler(n, bool(a)) for n, a in rows]

    def authenticate(self, token: str | None) -> Labeler | None:
        if not token:
            return None
        row = self.conn.execute(
            "SELECT name, admin FROM labelers WHERE token_hash=?", (_hash(token),)
        ).fetchone()
        return Labeler(row[0], bool(row[1])) if row else None

    def sign(self, message: str) -> str:
        return hmac.new(self.secret, message.encode(), hashlib.sha256).hexdigest()

    def session_cookie(self, name: str) -> str:
        return f"{name}:{self.sign('session:' + name)}"

    def labeler_from_cookie(self, cookie: str | None) -> Labeler | None:
        if not cookie or ":" not in cookie:
            return None
        name, sig = cookie.rsplit(":", 1)
        if not hmac.compare_digest(sig, self.sign("session:" + name)):
            return None
        row = self.conn.execute("SELECT name, admin FROM labelers WHERE name=?", (name,)).fetchone()
        return Labeler(row[0], bool(row[1])) if row else None

    def csrf_token(self, name: str) -> str:
        return self.sign("csrf:" + name)
