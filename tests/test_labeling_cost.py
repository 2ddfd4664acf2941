"""What each request of the labeling app costs (issue 21: O(log n) or less in the questions, answers and
labelers): ``GET /api/answers`` pages by keyset (every answer once, in order, limits refused with a
message naming the value and the range), the login's session cleanup goes through an index, and the
query plan (``EXPLAIN QUERY PLAN``) of every SQL statement the routes run (traced while every route but
the JSONL export is called, triggers included) has no full scan of a table that grows with the store."""

import re
import sqlite3

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from rewards.labeling import sessions
from rewards.labeling.app import create_app
from rewards.labeling.store import ANSWERS_PAGE_SQL, LabelingStore
from tests.test_labeling_app import bearer, fill
from tests.test_labeling_dashboard import campaign

# tables with a row per labeler or per labeler pair (and SQLite's own): a scan of them is no scan of the store
SMALL_TABLES = {"labelers", "labeling_labeler_counts", "labeling_pairs", "sqlite_master", "CONSTANT ROW"}
# indexes whose range for one key grows with the store: a statement walking one must stop at a LIMIT
GROWING_INDEXES = {
    "labeling_events_labeler",
    "labeling_events_flags",
    "comparisons_pending",
    "comparisons_pending_task",
    "comparisons_task",
    "labeling_open_seq",
    "labeling_open_task_seq",
    "labeling_sessions_expires",
    "online_runs_created",
}


def plan_problems(conn: sqlite3.Connection, statement: str, params=()) -> list[str]:
    """The lines of ``statement``'s query plan that cost more than O(log n + its LIMIT): a SCAN of a
    table that is not a per-labeler one, and a walk of a growing index without a LIMIT."""
    plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement, params)]
    limited = re.search(r"\bLIMIT\s+(\d+|\?)", statement, re.IGNORECASE) is not None
    bad = []
    for line in plan:
        index = re.search(r"USING (?:COVERING )?INDEX (\w+)", line)
        if index and index.group(1) in GROWING_INDEXES and not limited:
            bad.append(line)
        elif line.startswith("SCAN "):
            table = line[5:].split(" USING ")[0]
            if table not in SMALL_TABLES and not (index and index.group(1) in GROWING_INDEXES):
                bad.append(line)
    return bad


def trigger_statements(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(trigger, statement) for each statement in the labeling triggers' bodies, with NEW.x and OLD.x as
    parameters (so that EXPLAIN QUERY PLAN can plan them)."""
    out = []
    for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall():
        begin = re.search(r"\bBEGIN\b", sql, re.IGNORECASE).end()
        body, buf = sql[begin : sql.upper().rindex("END")], ""
        for piece in body.split(";"):
            buf += piece + ";"
            if sqlite3.complete_statement(buf):
                if buf.strip(" \n;"):
                    out.append((name, re.sub(r"\b(?:NEW|OLD)\.\w+", "?", buf.strip())))
                buf = ""
    return out


def test_the_plan_check_finds_scans():
    """The check can fail: the statements this file's fixes replaced are all caught."""
    store = LabelingStore(":memory:")
    conn = store.conn
    old = [
        "DELETE FROM labeling_sessions WHERE expires <= 1.0 OR revoked",  # the login cleanup before
        "SELECT question_id, comparison_id, action, choice, created FROM labeling_events "
        "WHERE labeler='ann' ORDER BY id",  # GET /api/answers before: every answer of the labeler
        "SELECT COUNT(DISTINCT question_id) FROM comparisons WHERE label IS NULL",  # pending, before counters
        "SELECT * FROM labeling_events WHERE action = 'skip'",
    ]
    for statement in old:
        assert plan_problems(conn, statement), statement
    assert plan_problems(conn, ANSWERS_PAGE_SQL, ("ann", 0, 101)) == []
    store.close()


def test_no_route_scans_the_store(tmp_path):
    """Every operation of the OpenAPI schema but the JSONL export is called (cookie and bearer, with a
    task filter and without, until no question is left) while SQLite traces each statement; each one's
    plan, and each trigger's, is checked."""
    path = tmp_path / "labels.db"
    tokens = campaign(path)  # answers, a skip, a flag and an online run: the dashboard has every part
    traced: list[str] = []
    called: set[tuple[str, str]] = set()
    apps = [create_app(path, duplicate_share=0.5), create_app(path, task="BookSentiment-v0")]
    for app in apps:
        app.state.store.conn.set_trace_callback(traced.append)
        client = TestClient(app)

        def call(method, url, client=client, **kwargs):
            r = client.request(method, url, **kwargs)
            assert r.status_code == 200, (method, url, r.text)
            called.add((method, url.split("?")[0]))
            return r.json()

        me = call("POST", "/api/login", json={"token": tokens["cid"]})
        call("GET", "/api/me")
        q = call("GET", "/api/next")
        if not q["done"]:
            call(
                "POST",
                "/api/answers",
                json={"id": q["id"], "choice": 0},
                headers={"X-CSRF-Token": me["csrf"]},
            )
        page = call("GET", "/api/answers?limit=2")
        call("GET", f"/api/answers?limit=2&after={page['next_after']}")
        call("POST", "/api/logout", headers={"X-CSRF-Token": me["csrf"]})
        boss = bearer(tokens["boss"])
        for action in ("skip", "flag", "choose", "choose"):
            q = call("GET", "/api/next", headers=boss)
            if not q["done"]:
                body = {"id": q["id"], "action": action} | ({"choice": 1} if action == "choose" else {})
                call("POST", "/api/answers", json=body, headers=boss)
        while not call("GET", "/api/next", headers=boss)["done"]:  # to the end: the exhausted path too
            q = call("GET", "/api/next", headers=boss)
            call("POST", "/api/answers", json={"id": q["id"], "action": "skip"}, headers=boss)
        call("GET", "/api/admin/stats", headers=boss)
        call("GET", "/api/admin/dashboard", headers=boss)
        app.state.store.conn.set_trace_callback(None)
    schema = apps[0].openapi()["paths"]
    operations = {(m.upper(), p) for p, ops in schema.items() for m in ops}
    assert operations - called == {("GET", "/api/admin/export")}  # documented as the store's size

    conn = apps[0].state.store.conn
    statements = {s.strip() for s in traced if not s.startswith("--")}
    statements = {s for s in statements if s.split()[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK")}
    problems = {s: plan_problems(conn, s) for s in statements}
    problems.update(
        {f"{t}: {s}": plan_problems(conn, s, [None] * s.count("?")) for t, s in trigger_statements(conn)}
    )
    assert {s: p for s, p in problems.items() if p} == {}
    assert any("labeling_sessions_expires" in s for s in statements)  # the login cleanup ran
    assert any(s.startswith("SELECT id, question_id, comparison_id") for s in statements)  # the page ran
    assert len(problems) > 40  # the trace saw the routes' statements, and the triggers were read


def answer_many(path, n: int) -> tuple[dict[str, str], list[tuple]]:
    """``ann`` answers, skips and flags ``n`` questions, with ``bob``'s answers in between (so ann's ids
    are not consecutive). Returns the tokens and ann's rows, in the order recorded."""
    fill(path, n=2 * n)
    with LabelingStore(path, duplicate_share=0.0) as store:
        tokens = {name: store.add_labeler(name) for name in ("ann", "bob")}
        for i in range(1, n + 1):
            action = ("choose", "skip", "flag")[i % 3]
            store.answer("ann", 2 * i - 1, action, 1 if action == "choose" else None)
            store.answer("bob", 2 * i, "choose", 2)
        rows = store.conn.execute(
            "SELECT comparison_id, action, choice FROM labeling_events WHERE labeler = 'ann' ORDER BY id"
        ).fetchall()
    return tokens, rows


@pytest.mark.parametrize("limit", [1, 4, 5, 7, 20, 1000])
def test_pages_return_every_answer_once_in_order(tmp_path, limit):
    tokens, rows = answer_many(tmp_path / "labels.db", 20)
    client = TestClient(create_app(tmp_path / "labels.db"))
    seen, after, pages = [], 0, 0
    while after is not None:
        page = client.get(f"/api/answers?after={after}&limit={limit}", headers=bearer(tokens["ann"])).json()
        assert page["labeler"] == "ann" and 1 <= len(page["answers"]) <= limit
        seen += [(a["comparison_id"], a["action"], a["choice"]) for a in page["answers"]]
        after, pages = page["next_after"], pages + 1
    assert seen == rows  # every answer once, in the order recorded; no empty last page
    assert pages == -(-len(rows) // limit)
    default = client.get("/api/answers", headers=bearer(tokens["ann"])).json()  # 100 a page
    assert len(default["answers"]) == 20 and default["next_after"] is None


def test_an_empty_page_and_a_cursor_past_the_end(tmp_path):
    tokens, _ = answer_many(tmp_path / "labels.db", 3)
    client = TestClient(create_app(tmp_path / "labels.db"))
    with LabelingStore(tmp_path / "labels.db") as store:
        store.add_labeler("cid")
        assert store.answers_page("cid") == ([], None)
    top = client.get(f"/api/answers?after={2**63 - 1}&limit=1000", headers=bearer(tokens["ann"])).json()
    assert top == {"labeler": "ann", "answers": [], "next_after": None}


AFTER = (
    "use 0 (the first page) or the next_after of the previous page: an integer from 0 to 9223372036854775807"
)
LIMIT = "use an integer from 1 to 1000 (default 100)"


@pytest.mark.parametrize(
    "query, message",
    [
        ("limit=0", f"limit='0' is not accepted: {LIMIT}"),
        ("limit=1001", f"limit='1001' is not accepted: {LIMIT}"),
        ("limit=-5", f"limit='-5' is not accepted: {LIMIT}"),
        ("limit=1.5", f"limit='1.5' is not accepted: {LIMIT}"),
        ("limit=ten", f"limit='ten' is not accepted: {LIMIT}"),
        ("after=-1", f"after='-1' is not accepted: {AFTER}"),
        (f"after={2**63}", f"after='{2**63}' is not accepted: {AFTER}"),
        ("after=", f"after='' is not accepted: {AFTER}"),
        ("after=" + "x" * 80, f"after='{'x' * 40}... (80 characters)' is not accepted: {AFTER}"),
    ],
)
def test_paging_limits_are_422s_naming_the_value_and_range(app_env_paging, query, message):
    client, headers = app_env_paging
    r = client.get(f"/api/answers?{query}", headers=headers)
    assert r.status_code == 422
    assert r.json()["detail"] == f"invalid request: {message}."


@pytest.fixture(scope="module")
def app_env_paging(tmp_path_factory):
    path = tmp_path_factory.mktemp("paging") / "labels.db"
    fill(path, n=2)
    with LabelingStore(path) as store:
        token = store.add_labeler("ann")
    return TestClient(create_app(path)), bearer(token)


def test_the_store_refuses_bad_pages(tmp_path):
    with LabelingStore(tmp_path / "labels.db") as store:
        for kwargs, message in [
            ({"limit": 0}, "limit=0 must be an integer from 1 to 1000."),
            ({"limit": True}, "limit=True must be an integer from 1 to 1000."),
            ({"after": -1}, f"after=-1 must be an integer from 0 to {2**63 - 1}."),
            ({"after": 1.0}, f"after=1.0 must be an integer from 0 to {2**63 - 1}."),
        ]:
            with pytest.raises(ValueError) as err:
                store.answers_page("ann", **kwargs)
            assert str(err.value) == message


def test_the_page_is_one_index_range():
    with LabelingStore(":memory:") as store:
        plan = [r[3] for r in store.conn.execute("EXPLAIN QUERY PLAN " + ANSWERS_PAGE_SQL, ("ann", 5, 101))]
    assert plan == ["SEARCH labeling_events USING INDEX labeling_events_labeler (labeler=? AND id>?)"]


def test_session_cleanup_is_indexed_and_bounded(tmp_path):
    path = tmp_path / "labels.db"
    with LabelingStore(path) as store:
        plan = [r[3] for r in store.conn.execute("EXPLAIN QUERY PLAN " + sessions.CLEANUP_SQL, (1.0, 64))]
        assert "SCAN labeling_sessions" not in plan
        assert any(
            "SEARCH labeling_sessions USING COVERING INDEX labeling_sessions_expires (expires<?)" in p
            for p in plan
        )
        store.add_labeler("ann")
        now = 1_000_000.0
        store.session_seconds = 60.0
        store.clock = lambda: now
        for _ in range(150):
            store.open_session("ann")  # 150 sessions that all expire at now + 60
        count = "SELECT COUNT(*) FROM labeling_sessions WHERE expires <= ?"
        store.clock = lambda: now + 61
        live = store.open_session("ann")  # deletes the oldest 64 expired, adds one
        assert store.conn.execute(count, (now + 61,)).fetchone()[0] == 150 - 64
        store.open_session("ann")
        store.open_session("ann")
        assert store.conn.execute(count, (now + 61,)).fetchone()[0] == 0
        assert store.session_labeler(live).name == "ann"  # live sessions are kept
        store.end_session(live)  # logout deletes the row: nothing is left to clean up
        assert store.session_labeler(live) is None
        assert store.conn.execute("SELECT COUNT(*) FROM labeling_sessions").fetchone()[0] == 2
        assert store.end_sessions("ann") == 2
        assert store.conn.execute("SELECT COUNT(*) FROM labeling_sessions").fetchone()[0] == 0


def test_a_session_revoked_before_rows_were_deleted_stays_dead_and_goes(tmp_path):
    """A store whose logouts only marked the row revoked: such a session never works, and goes when it
    expires."""
    with LabelingStore(tmp_path / "labels.db") as store:
        store.add_labeler("ann")
        old = store.open_session("ann")
        store.conn.execute("UPDATE labeling_sessions SET revoked = 1")
        store.conn.commit()
        assert store.session_labeler(old) is None
        store.clock = lambda: 1e12
        store.open_session("ann")
        assert store.conn.execute("SELECT COUNT(*) FROM labeling_sessions").fetchone()[0] == 1
