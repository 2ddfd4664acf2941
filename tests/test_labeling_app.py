"""The labeling app: tokens, CSRF, isolation between labelers, validation, escaping, duplicates, admin."""

import json

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from rewards.comparisons import Comparison, ComparisonStore
from rewards.labeling.app import create_app
from rewards.labeling.store import LabelingStore

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss=2">'


def fill(path, n=6, task="BookSentiment-v0"):
    with ComparisonStore(path) as store:
        store.add(
            Comparison(
                task=task,
                query=[1, 2],
                samples=[[3], [4], [5], [6]],
                query_text=f"context {i}",
                sample_texts=[f"sample {i}.{j}" if j else XSS for j in range(4)],
            )
            for i in range(n)
        )


@pytest.fixture
def app_env(tmp_path):
    path = tmp_path / "labels.db"
    fill(path)
    users = LabelingStore(path)
    tokens = {name: users.add_labeler(name, admin=(name == "boss")) for name in ("ann", "bob", "boss")}
    app = create_app(path, duplicate_share=0.0)
    return app, tokens, path


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_tokens_are_required_and_hashed(app_env):
    app, tokens, path = app_env
    client = TestClient(app)
    assert client.get("/api/next").status_code == 401
    assert client.get("/api/next", headers=bearer("nope")).status_code == 401
    assert client.post("/api/login", json={"token": "nope"}).status_code == 401
    raw = path.read_bytes()
    assert tokens["ann"].encode() not in raw  # only the hash is stored
    with pytest.raises(ValueError, match="exists already"):
        LabelingStore(path).add_labeler("ann")
    with pytest.raises(ValueError, match="labeler name"):
        LabelingStore(path).add_labeler("<ann>")


def test_cookie_session_needs_csrf_for_answers(app_env):
    app, tokens, _ = app_env
    client = TestClient(app)
    me = client.post("/api/login", json={"token": tokens["ann"]}).json()
    assert me["labeler"] == "ann" and me["csrf"]
    q = client.get("/api/next").json()
    assert q["instructions"].startswith("Pick the continuation that is the most positive and happy")
    no_csrf = client.post("/api/answers", json={"id": q["id"], "choice": 1})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["detail"]
    wrong = client.post("/api/answers", json={"id": q["id"], "choice": 1}, headers={"X-CSRF-Token": "x" * 64})
    assert wrong.status_code == 403
    ok = client.post("/api/answers", json={"id": q["id"], "choice": 1}, headers={"X-CSRF-Token": me["csrf"]})
    assert ok.status_code == 200 and ok.json()["ok"]
    # the answer is committed: a fresh connection sees it
    with ComparisonStore(app.state.store.comparisons.path) as store:
        row = store.get(q["id"])
    assert row.label == {"best": 1} and row.labeler == "ann"


def test_validation_double_submit_and_isolation(app_env):
    app, tokens, path = app_env
    client = TestClient(app)
    ann, bob = bearer(tokens["ann"]), bearer(tokens["bob"])
    q = client.get("/api/next", headers=ann).json()
    for body, code in [
        ({"id": q["id"], "choice": 4}, 422),
        ({"id": q["id"], "choice": -1}, 422),
        ({"id": q["id"], "choice": "1"}, 422),
        ({"id": q["id"], "choice": True}, 422),
        ({"id": 99999, "choice": 0}, 404),
        ({"id": "1", "choice": 0}, 422),
        ({"id": q["id"], "action": "delete"}, 422),
        ({"id": q["id"], "action": "skip", "choice": 2}, 422),
        ({"id": q["id"], "choice": 0, "labeler": "bob"}, 422),
    ]:
        r = client.post("/api/answers", json=body, headers=ann)
        assert r.status_code == code, (body, r.json())
        assert r.json()["detail"]
    assert client.post("/api/answers", json={"id": q["id"], "choice": 2}, headers=ann).status_code == 200
    again = client.post("/api/answers", json={"id": q["id"], "choice": 3}, headers=ann)
    assert again.status_code == 409 and "once" in again.json()["detail"]
    assert client.post("/api/answers", content=b"{not json", headers=ann).status_code == 422
    # bob is never shown ann's answered question (duplicate_share 0: one answer per question) and
    # sees only his own answers
    assert client.get("/api/next", headers=bob).json()["id"] != q["id"]
    assert client.get("/api/answers", headers=bob).json()["answers"] == []
    mine = client.get("/api/answers", headers=ann).json()["answers"]
    assert [(a["comparison_id"], a["choice"]) for a in mine] == [(q["id"], 2)]
    # skip and flag move on without labelling
    q2 = client.get("/api/next", headers=ann).json()
    assert (
        client.post("/api/answers", json={"id": q2["id"], "action": "flag"}, headers=ann).status_code == 200
    )
    assert client.get("/api/next", headers=ann).json()["id"] not in (q["id"], q2["id"])
    with ComparisonStore(path) as store:
        assert store.get(q2["id"]).label is None


def test_admin_stats_agreement_and_export(tmp_path):
    path = tmp_path / "labels.db"
    fill(path, n=4)
    users = LabelingStore(path)
    tok = {n: users.add_labeler(n, admin=(n == "boss")) for n in ("a", "b", "c", "boss")}
    client = TestClient(create_app(path, duplicate_share=1.0))  # every question wants 5 answers
    choices = {"a": [0, 1, 2, 3], "b": [0, 1, 3, 3], "c": [0, 2, 2, 3]}
    for name, picks in choices.items():
        for pick in picks:
            q = client.get("/api/next", headers=bearer(tok[name])).json()
            r = client.post("/api/answers", json={"id": q["id"], "choice": pick}, headers=bearer(tok[name]))
            assert r.status_code == 200
    assert client.get("/api/admin/stats", headers=bearer(tok["a"])).status_code == 403
    stats = client.get("/api/admin/stats", headers=bearer(tok["boss"])).json()
    # per question 3 pairs: q0 3 agree, q1 1, q2 1, q3 3 -> 8 of 12
    assert stats["agreement_pairs"] == 12 and stats["agreement"] == pytest.approx(8 / 12)
    assert stats["labelers"]["a"]["answers"] == 4 and stats["questions_with_duplicates"] == 4
    export = client.get("/api/admin/export", headers=bearer(tok["boss"])).text.splitlines()
    assert len(export) == 12 and json.loads(export[0])["label"] == {"best": 0}


def test_page_escapes_model_text_and_sets_a_strict_csp(app_env):
    app, tokens, _ = app_env
    client = TestClient(app)
    page = client.get("/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script>" not in page.text.replace('<script src="/static/app.js" defer></script>', "")
    js = client.get("/static/app.js").text
    assert "innerHTML" not in js and "textContent" in js
    q = client.get("/api/next", headers=bearer(tokens["ann"])).json()
    assert q["samples"][0] == XSS  # delivered as JSON data, inserted with textContent by the page
    assert client.get("/static/../app.py").status_code == 404


def test_duplicate_share_follows_the_hash():
    store = LabelingStore(":memory:", duplicate_share=0.05, duplicate_answers=5)
    wanted = [store.wanted_answers(f"q{i}") for i in range(4000)]
    share = sum(w == 5 for w in wanted) / len(wanted)
    assert 0.04 < share < 0.06 and set(wanted) == {1, 5}
