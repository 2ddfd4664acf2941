"""Sessions and tokens of the labeling app: server-side sessions that expire and end at logout, CSRF
tokens bound to their session, `textenv labelers revoke|rotate`, and serve-labeling's loopback guard."""

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from agents.cli import main
from rewards.comparisons import ComparisonStore
from rewards.labeling.app import COOKIE, create_app
from rewards.labeling.store import Conflict, LabelingStore
from tests.test_labeling_app import bearer, fill

ENDED = "not logged in, or the session expired or was ended"
UNKNOWN_TOKEN = "unknown or revoked access token"


@pytest.fixture
def env(tmp_path):
    path = tmp_path / "labels.db"
    fill(path)
    with LabelingStore(path) as users:
        tokens = {name: users.add_labeler(name) for name in ("ann", "bob")}
    return path, tokens


def log_in(client, token):
    """Log in by token: (the session cookie's value, the CSRF token)."""
    r = client.post("/api/login", json={"token": token})
    assert r.status_code == 200, r.json()
    return r.cookies[COOKIE], r.json()["csrf"]


def test_logout_ends_the_session_on_the_server(env):
    path, tokens = env
    client = TestClient(create_app(path, duplicate_share=0.0))
    cookie, csrf = log_in(client, tokens["ann"])
    q = client.get("/api/next").json()
    assert client.post("/api/logout", headers={"X-CSRF-Token": csrf}).json() == {"ok": True}
    client.cookies.set(COOKIE, cookie)  # the old cookie, replayed (a copy kept by an attacker)
    r = client.get("/api/next")
    assert r.status_code == 401 and ENDED in r.json()["detail"]
    r = client.post("/api/answers", json={"id": q["id"], "choice": 0}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 401 and ENDED in r.json()["detail"]
    with ComparisonStore(path) as store:
        assert store.get(q["id"]).label is None  # nothing was stored by the replay
    # the token itself still works: a new login is a new session
    new_cookie, new_csrf = log_in(client, tokens["ann"])
    assert new_cookie != cookie and new_csrf != csrf
    assert client.get("/api/next").status_code == 200


def test_logout_needs_the_csrf_token(env):
    path, tokens = env
    client = TestClient(create_app(path))
    log_in(client, tokens["ann"])
    r = client.post("/api/logout")
    assert r.status_code == 403 and "X-CSRF-Token" in r.json()["detail"]
    assert client.get("/api/me").status_code == 200  # still logged in


def test_a_session_expires(env):
    path, tokens = env
    app = create_app(path, session_seconds=60)
    client = TestClient(app)
    r = client.post("/api/login", json={"token": tokens["ann"]})
    cookie_header = r.headers["set-cookie"]
    assert "Max-Age=60" in cookie_header and "HttpOnly" in cookie_header
    assert "samesite=strict" in cookie_header.lower() and "Secure" not in cookie_header
    assert client.get("/api/me").json()["labeler"] == "ann"
    store = app.state.store
    now = store.clock()
    store.clock = lambda: now + 59
    assert client.get("/api/me").status_code == 200
    store.clock = lambda: now + 61
    r = client.get("/api/me")
    assert r.status_code == 401 and ENDED in r.json()["detail"]
    # bearer tokens do not expire
    assert client.get("/api/me", headers=bearer(tokens["ann"])).json() == {
        "labeler": "ann",
        "admin": False,
        "csrf": None,
    }


def test_secure_cookies_and_lifetime_settings(env):
    path, tokens = env
    r = TestClient(create_app(path, secure_cookies=True)).post("/api/login", json={"token": tokens["ann"]})
    assert "Secure" in r.headers["set-cookie"] and f"Max-Age={12 * 3600}" in r.headers["set-cookie"]
    with pytest.raises(ValueError, match="session_seconds=0 must be a positive number"):
        create_app(path, session_seconds=0)
    with pytest.raises(ValueError, match="session_seconds=inf must be a positive number"):
        create_app(path, session_seconds=float("inf"))


def test_the_csrf_token_is_bound_to_its_session(env):
    path, tokens = env
    first, second = TestClient(create_app(path)), TestClient(create_app(path))
    _, csrf_one = log_in(first, tokens["ann"])
    _, csrf_two = log_in(second, tokens["ann"])  # the same labeler, another session
    assert csrf_one != csrf_two
    q = second.get("/api/next").json()
    r = second.post(
        "/api/answers", json={"id": q["id"], "action": "skip"}, headers={"X-CSRF-Token": csrf_one}
    )
    assert r.status_code == 403 and "missing or wrong X-CSRF-Token" in r.json()["detail"]
    assert second.get("/api/me").json()["csrf"] == csrf_two
    ok = second.post(
        "/api/answers", json={"id": q["id"], "action": "skip"}, headers={"X-CSRF-Token": csrf_two}
    )
    assert ok.status_code == 200


def test_revoke_in_the_store_stops_token_and_sessions_at_once(env):
    path, tokens = env
    client = TestClient(create_app(path, duplicate_share=0.0))
    cookie, csrf = log_in(client, tokens["ann"])
    q = client.get("/api/next").json()
    assert client.post(
        "/api/answers", json={"id": q["id"], "choice": 2}, headers={"X-CSRF-Token": csrf}
    ).is_success
    with LabelingStore(path) as store:  # another connection, as the CLI would be
        assert store.revoke_labeler("ann") == 1
        assert [w.name for w in store.labelers()] == ["bob"]
        assert [(w.name, w.revoked) for w in store.labelers(include_revoked=True)] == [
            ("ann", True),
            ("bob", False),
        ]
        with pytest.raises(KeyError, match="no labeler named 'zed' in this store"):
            store.revoke_labeler("zed")
    r = client.get("/api/next")  # the cookie
    assert r.status_code == 401 and ENDED in r.json()["detail"]
    r = client.post("/api/answers", json={"id": q["id"] + 1, "choice": 0}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 401 and ENDED in r.json()["detail"]
    r = client.get("/api/next", headers=bearer(tokens["ann"]))
    assert r.status_code == 401 and UNKNOWN_TOKEN in r.json()["detail"]
    r = client.post("/api/login", json={"token": tokens["ann"]})
    assert r.status_code == 401 and UNKNOWN_TOKEN in r.json()["detail"]
    assert client.get("/api/next", headers=bearer(tokens["bob"])).status_code == 200  # others unaffected
    with ComparisonStore(path) as store:  # ann's answer stays
        assert (store.get(q["id"]).label, store.get(q["id"]).labeler) == ({"best": 2}, "ann")


def test_rotate_in_the_store_gives_a_new_token_and_ends_the_old_one(env):
    path, tokens = env
    client = TestClient(create_app(path))
    log_in(client, tokens["ann"])
    with LabelingStore(path) as store:
        new = store.rotate_token("ann")
        with pytest.raises(KeyError, match="no labeler named 'zed'"):
            store.rotate_token("zed")
    assert new != tokens["ann"]
    r = client.get("/api/me")
    assert r.status_code == 401 and ENDED in r.json()["detail"]
    r = client.get("/api/me", headers=bearer(tokens["ann"]))
    assert r.status_code == 401 and UNKNOWN_TOKEN in r.json()["detail"]
    assert client.get("/api/me", headers=bearer(new)).json()["labeler"] == "ann"
    log_in(client, new)
    assert client.get("/api/me").json()["labeler"] == "ann"


def test_rotate_gives_a_revoked_labeler_a_working_token(env):
    path, tokens = env
    with LabelingStore(path) as store:
        store.revoke_labeler("bob")
        new = store.rotate_token("bob")
        assert store.authenticate(tokens["bob"]) is None
        assert store.authenticate(new).name == "bob"
        assert [w.name for w in store.labelers()] == ["ann", "bob"]


def test_labelers_revoke_and_rotate_on_the_command_line(env, capsys):
    path, tokens = env
    client = TestClient(create_app(path))  # a running app: the CLI's change reaches it at once
    log_in(client, tokens["ann"])
    assert main(["labelers", "revoke", "ann", "--store", str(path)]) == 0
    out = capsys.readouterr().out
    assert "labeler 'ann' revoked" in out and "1 open session(s) stop working now" in out
    assert client.get("/api/me").status_code == 401
    assert client.get("/api/me", headers=bearer(tokens["ann"])).status_code == 401
    assert main(["labelers", "list", "--store", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == ["ann  (revoked)", "bob"]

    assert main(["labelers", "rotate", "bob", "--store", str(path)]) == 0
    out = capsys.readouterr().out
    assert "has a new token" in out and "The old token and all their sessions no longer work" in out
    new = out.strip().splitlines()[-1]
    assert client.get("/api/me", headers=bearer(tokens["bob"])).status_code == 401
    assert client.get("/api/me", headers=bearer(new)).json()["labeler"] == "bob"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["labelers", "revoke", "zed"], "textenv labelers revoke: no labeler named 'zed' in this store"),
        (["labelers", "rotate", "zed"], "textenv labelers rotate: no labeler named 'zed' in this store"),
        (["labelers", "revoke"], "textenv labelers revoke NAME: give the labeler's name."),
        (["labelers", "rotate"], "textenv labelers rotate NAME: give the labeler's name."),
        (["labelers", "add"], "textenv labelers add NAME: give the labeler's name."),
        (["labelers", "add", "ann"], "textenv labelers add: a labeler named 'ann' exists already"),
        (["labelers", "add", "<x>"], "textenv labelers add: labeler name '<x>': use 1-64 letters"),
    ],
)
def test_labelers_command_refusals(env, capsys, argv, message):
    path, _ = env
    assert main([*argv, "--store", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_conflicts_from_the_store_are_409s(env, monkeypatch):
    path, tokens = env
    app = create_app(path)
    client = TestClient(app)

    def leased(*args, **kwargs):
        raise Conflict("question q1 is leased to bob until 12:00; ask /api/next for yours.")

    monkeypatch.setattr(app.state.store, "answer", leased)
    r = client.post("/api/answers", json={"id": 1, "choice": 0}, headers=bearer(tokens["ann"]))
    assert r.status_code == 409 and r.json()["detail"].startswith("question q1 is leased to bob")


def test_next_reports_the_lease(env):
    path, tokens = env
    client = TestClient(create_app(path, lease_seconds=30.0))
    q = client.get("/api/next", headers=bearer(tokens["ann"])).json()
    assert q["done"] is False and q["lease_seconds"] == 30.0
    with pytest.raises(ValueError, match="lease_seconds=0"):
        create_app(path, lease_seconds=0)


# ------------------------------------------------------------------------------ serve-labeling guards
@pytest.fixture
def served(monkeypatch):
    """serve-labeling with uvicorn replaced: the keyword arguments ``serve`` was called with."""
    import rewards.labeling.app as app_module

    calls = []
    monkeypatch.setattr(app_module, "serve", lambda *a, **kw: calls.append(kw))
    return calls


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.org"])
def test_serve_labeling_refuses_to_listen_beyond_loopback_without_the_flag(served, capsys, host):
    assert main(["serve-labeling", "--host", host]) == 2
    err = capsys.readouterr().err
    assert f"--host {host} listens beyond this machine" in err and "pass --allow-remote" in err
    assert served == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_serve_labeling_listens_on_loopback_without_advice(served, capsys, host):
    assert main(["serve-labeling", "--host", host, "--store", "x.db"]) == 0
    assert "reverse proxy" not in capsys.readouterr().err
    assert served == [
        {
            "host": host,
            "port": 8000,
            "task": None,
            "lease_seconds": 600.0,
            "session_seconds": 12 * 3600.0,
            "max_body_bytes": 64 * 1024,
            "secure_cookies": False,
        }
    ]


def test_serve_labeling_with_allow_remote_prints_the_tls_proxy_advice(served, capsys):
    argv = ["serve-labeling", "--host", "0.0.0.0", "--port", "9000", "--allow-remote", "--secure-cookies"]
    assert main([*argv, "--lease-minutes", "2", "--session-hours", "1", "--max-body-kib", "8"]) == 0
    err = capsys.readouterr().err
    assert "TLS reverse proxy" in err and "reverse_proxy 127.0.0.1:9000" in err
    assert "proxy_pass http://127.0.0.1:9000;" in err and "cookies are Secure now" in err
    assert "client_max_body_size 8k;" in err and "max_size 8KiB" in err
    kw = served[0]
    assert (kw["lease_seconds"], kw["session_seconds"], kw["max_body_bytes"], kw["secure_cookies"]) == (
        120.0,
        3600.0,
        8192,
        True,
    )
    assert main(["serve-labeling", "--host", "0.0.0.0", "--allow-remote"]) == 0
    assert "cookies are NOT Secure now" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--lease-minutes", "--session-hours", "--max-body-kib"])
def test_serve_labeling_refuses_non_positive_settings(served, capsys, flag):
    assert main(["serve-labeling", flag, "0"]) == 2
    assert f"textenv serve-labeling: {flag} 0" in capsys.readouterr().err and served == []
