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


# ------------------------------------------------------------------------------------ HTTP hardening
HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def hardened(response) -> bool:
    return (
        all(response.headers.get(k) == v for k, v in HEADERS.items())
        and "frame-ancestors 'none'" in response.headers["content-security-policy"]
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"id": 2**70, "choice": 0}, "id: Input should be less than 9223372036854775808"),
        ({"id": 0, "choice": 0}, "id: Input should be greater than or equal to 1"),
        ({"id": 1, "choice": 2**40}, "choice: Input should be less than or equal to 2147483647"),
        ({"id": True, "choice": 0}, "id: Input should be a valid integer (got True)"),
        ({"id": 1.0, "choice": 0}, "id: Input should be a valid integer (got 1.0)"),
        ({"id": 1, "choice": "1"}, "choice: Input should be a valid integer (got '1')"),
        ({"id": None}, "id: Input should be a valid integer (got None)"),
        ({"choice": 1}, "id: Field required"),
        ({"id": 1, "action": "delete"}, "action: Input should be 'choose', 'skip' or 'flag'"),
        ({"id": 1, "choice": 0, "labeler": "bob"}, "labeler: Extra inputs are not permitted"),
        ([1, 2], "body: Input should be a valid dictionary or object"),
        (42, "body: Input should be a valid dictionary or object"),
        ("x", "body: Input should be a valid dictionary or object"),
        (None, "body: Field required"),
    ],
)
def test_malformed_answers_are_422s_that_name_the_field(app_env, body, message):
    app, tokens, _ = app_env
    r = TestClient(app).post("/api/answers", json=body, headers=bearer(tokens["ann"]))
    assert r.status_code == 422, r.json()
    assert message in r.json()["detail"] and 'send {"id": <id from /api/next>' in r.json()["detail"]
    assert hardened(r)


def test_error_bodies_never_echo_unbounded_input(app_env):
    app, tokens, _ = app_env
    client = TestClient(app)
    long = "9" * 60_000
    for body in ({"id": long}, {long: 1}, {"id": 1, "action": long}):
        r = client.post("/api/answers", json=body, headers=bearer(tokens["ann"]))
        assert r.status_code == 422 and len(r.text) < 1000, r.text[:200]
        assert "... (6000" in r.json()["detail"] and " characters)" in r.json()["detail"]
    r = client.post("/api/login", json={"token": long})
    assert r.status_code == 422 and len(r.text) < 1000
    assert "token: String should have at most 256 characters" in r.json()["detail"]
    many = {f"field{i}": i for i in range(500)}
    r = client.post("/api/answers", json=many, headers=bearer(tokens["ann"]))
    assert r.status_code == 422 and len(r.text) < 1000 and "and 496 more" in r.json()["detail"]


def test_bad_json_and_bad_encodings_are_4xx(app_env):
    app, tokens, _ = app_env
    client = TestClient(app)
    json_type = {**bearer(tokens["ann"]), "content-type": "application/json"}
    r = client.post("/api/answers", content=b'{"id": 1,', headers=json_type)
    assert r.status_code == 422 and "invalid JSON at character 9" in r.json()["detail"]
    r = client.post("/api/answers", content=b'{"id": "\xff"}', headers=json_type)
    assert r.status_code == 400 and r.json()["detail"] == "There was an error parsing the body"
    r = client.post(
        "/api/login", content=rb'{"token": "\ud800"}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "token: Input should be a valid string" in r.json()["detail"]
    r = client.get("/api/next", headers={"Authorization": "Bearer \xe9t\xe9".encode("latin-1")})
    assert r.status_code == 401 and "unknown or revoked access token" in r.json()["detail"]
    r = client.post("/api/answers", content=b"x", headers={**bearer(tokens["ann"]), "content-length": "x"})
    assert r.status_code == 400 and r.json()["detail"] == "Content-Length must be a whole number of bytes."


def test_request_bodies_over_the_limit_are_413s(app_env):
    app, tokens, path = app_env
    client = TestClient(app)
    json_type = {**bearer(tokens["ann"]), "content-type": "application/json"}
    over = b'{"id": 1, "pad": "' + b"x" * 70_000 + b'"}'
    message = "request body over 65536 bytes; answers and logins are small JSON objects."
    r = client.post("/api/answers", content=over, headers=json_type)  # says its Content-Length
    assert (r.status_code, r.json()["detail"]) == (413, message) and hardened(r)

    def chunks():  # chunked: no Content-Length, the bytes are counted as they arrive
        for _ in range(100):
            yield b"x" * 1000

    r = client.post("/api/login", content=chunks(), headers={"content-type": "application/json"})
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert (r.status_code, r.json()["detail"]) == (413, message) and hardened(r)
    small = TestClient(create_app(path, max_body_bytes=100))
    r = small.post("/api/login", json={"token": "t" * 200})
    assert r.status_code == 413 and r.json()["detail"].startswith("request body over 100 bytes")
    assert small.post("/api/login", json={"token": "t" * 20}).status_code == 401  # under: goes through
    with pytest.raises(ValueError, match="max_body_bytes=0 must be a positive integer"):
        create_app(path, max_body_bytes=0)


def test_security_headers_are_on_every_response(app_env):
    app, tokens, _ = app_env
    client = TestClient(app)
    responses = [
        client.get("/"),
        client.get("/static/app.js"),
        client.get("/api/openapi.json"),
        client.get("/api/next"),  # 401
        client.get("/api/admin/stats", headers=bearer(tokens["ann"])),  # 403
        client.get("/nowhere"),  # 404
        client.delete("/api/next", headers=bearer(tokens["ann"])),  # 405
        client.post("/api/answers", json={"id": 99999, "choice": 0}, headers=bearer(tokens["ann"])),  # 404
        client.post("/api/answers", json={}, headers=bearer(tokens["ann"])),  # 422
        client.post("/api/login", content=b"x" * 70_000),  # 413
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 401, 403, 404, 405, 404, 422, 413]
    assert all(hardened(r) for r in responses)


def test_the_api_schema_is_served_without_the_docs_pages(app_env):
    app, _, _ = app_env
    client = TestClient(app)
    schema = client.get("/api/openapi.json").json()
    assert {"/api/login", "/api/logout", "/api/me", "/api/next", "/api/answers"} <= set(schema["paths"])
    answer = schema["components"]["schemas"]["AnswerIn"]
    assert answer["additionalProperties"] is False and answer["properties"]["id"]["exclusiveMaximum"] == 2**63
    assert "413" in schema["paths"]["/api/answers"]["post"]["responses"]
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
