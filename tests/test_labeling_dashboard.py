"""The admin dashboard (issue 21) over the API: who is asking, answers per hour per labeler, agreement per
labeler pair with its chance level, skips and flags with the flagged questions' text, per-task progress
and an online run's labels against l(n) and held-out accuracy per retrain; a session that ended gets a 401
the page turns into a login prompt. The page itself is tested in Chromium (test_labeling_browser.py)."""

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from rewards.comparisons import ComparisonStore
from rewards.labeling import runs
from rewards.labeling.app import create_app
from rewards.labeling.store import LabelingStore
from tests.test_labeling_app import XSS, bearer, fill

HOUR = 3600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def campaign(path) -> dict[str, str]:
    """Four questions everyone may answer (duplicate_share 1: five answers each), answered by ann, bob
    and cid over two hours, one skip and one flag; an online run's records. Returns the tokens."""
    fill(path, n=6)
    with ComparisonStore(path) as store:
        store.add([store.get(1).__class__(task="Other-v0", query=[1], samples=[[2], [3]], query_text="o")])
    store = LabelingStore(path, duplicate_share=1.0)
    tokens = {n: store.add_labeler(n, admin=(n == "boss")) for n in ("ann", "bob", "cid", "boss")}
    store.clock = Clock(1_000 * HOUR + 60)
    picks = {"ann": [0, 1, 2, 3], "bob": [0, 1, 3, 3], "cid": [0, 2]}
    for name, choices in picks.items():
        for i, choice in enumerate(choices):
            store.clock.now = 1_000 * HOUR + 60 + (i >= 2) * HOUR  # two answers in each of two hours
            store.answer(name, i + 1, "choose", choice)
    store.clock.now = 1_000 * HOUR + 60 + HOUR / 2
    store.answer("cid", 5, "skip")
    store.answer("cid", 6, "flag")
    store.close()
    with ComparisonStore(path) as cs:
        runs.record_run(
            cs,
            "r1",
            task="T",
            mode="online",
            initial_labels=6,
            final_labels=30,
            total_episodes=48,
            retrains=4,
        )
        for it, (need, got) in enumerate([(6, 6), (12, 13), (17, 18)]):
            runs.record_progress(cs, "r1", it, it * 8, need, got, 3)
        runs.record_retrain(cs, "r1", 0, 0, 0, 6, 1.2)
        runs.record_retrain(cs, "r1", 1, 1, 8, 13, 0.9, previous_heldout=(0.5, 7))
    return tokens


def test_dashboard_over_the_api(tmp_path):
    path = tmp_path / "labels.db"
    tokens = campaign(path)
    client = TestClient(create_app(path, duplicate_share=1.0))
    assert client.get("/api/admin/dashboard", headers=bearer(tokens["ann"])).status_code == 403
    assert client.get("/api/admin/dashboard").status_code == 401
    d = client.get("/api/admin/dashboard", headers=bearer(tokens["boss"])).json()
    assert d["me"] == {"labeler": "boss", "admin": True}
    # answers per hour per labeler
    hourly = {(h["hour"], h["labeler"]): h["answers"] for h in d["hourly"]}
    assert hourly == {
        (1000, "ann"): 2,
        (1001, "ann"): 2,
        (1000, "bob"): 2,
        (1001, "bob"): 2,
        (1000, "cid"): 2,
    }
    # agreement per pair, chance 1/4 (four samples): ann-bob agree on 3 of 4, ann-cid 1 of 2, bob-cid 1 of 2
    pairs = {(p["a"], p["b"]): (p["agree"], p["pairs"], p["chance"]) for p in d["pairs"]}
    assert pairs == {("ann", "bob"): (3, 4, 0.25), ("ann", "cid"): (1, 2, 0.25), ("bob", "cid"): (1, 2, 0.25)}
    assert d["agreement"] == {"agreement": 5 / 8, "agreement_pairs": 8, "questions_with_duplicates": 4}
    # skips, flags and the flagged question's text (model text, shown literally by the page)
    assert d["labelers"]["cid"] == {
        "answers": 2,
        "skips": 1,
        "flags": 1,
        "answers_per_hour": pytest.approx(4.0),
    }
    (flag,) = d["flags"]["latest"]
    assert d["flags"]["total"] == 1 and flag["question_id"] == "q6" and flag["labeler"] == "cid"
    assert flag["query"] == "context 5" and flag["samples"][0] == XSS
    # per-task progress: 6 questions of which 4 answered (5 and 6 skipped / flagged: still pending)
    tasks = {t["task"]: (t["questions"], t["pending"], t["judgements"]) for t in d["tasks"]}
    assert tasks == {"BookSentiment-v0": (6, 2, 10), "Other-v0": (1, 1, 0)}
    # the online run: schedule, labels against l(n), retrains with the held-out accuracy of retrain 0
    (run,) = d["online"]
    assert (run["run_id"], run["initial_labels"], run["final_labels"], run["total_episodes"]) == (
        "r1",
        6,
        30,
        48,
    )
    assert [(p["labels_needed"], p["labels"]) for p in run["progress"]] == [(6, 6), (12, 13), (17, 18)]
    assert [(r["retrain"], r["heldout_accuracy"], r["heldout_labels"]) for r in run["retrain_log"]] == [
        (0, 0.5, 7),
        (1, None, None),
    ]
    # the old stats endpoint agrees with the dashboard
    stats = client.get("/api/admin/stats", headers=bearer(tokens["boss"])).json()
    assert stats["agreement"] == 5 / 8 and stats["flagged"] == ["q6"] and stats["flags"] == 1


def test_dashboard_of_an_empty_store_and_an_ended_session(tmp_path):
    path = tmp_path / "labels.db"
    token = LabelingStore(path).add_labeler("boss", admin=True)
    client = TestClient(create_app(path))
    me = client.post("/api/login", json={"token": token}).json()
    d = client.get("/api/admin/dashboard").json()  # by the session cookie
    assert d["me"]["labeler"] == "boss" and me["admin"]
    assert d["hourly"] == d["pairs"] == d["tasks"] == d["online"] == [] and d["flags"]["total"] == 0
    with LabelingStore(path) as store:
        store.revoke_labeler("boss")
    r = client.get("/api/admin/dashboard")
    assert r.status_code == 401 and "session expired or was ended" in r.json()["detail"]
    assert client.get("/api/me").status_code == 401  # what the page asks first: it shows its login form


def test_admin_page_has_a_login_form_and_no_stale_login_line(tmp_path):
    path = tmp_path / "labels.db"
    LabelingStore(path).close()
    client = TestClient(create_app(path))
    page = client.get("/admin").text
    assert 'id="login-form"' in page and 'name="viewport"' in page and "with an admin token first" not in page
    js = client.get("/static/admin.js")
    assert (
        js.status_code == 200
        and "innerHTML" not in js.text
        and "http" not in js.text.replace("http://www.w3.org/2000/svg", "")
    )  # no CDN, no HTML injection
