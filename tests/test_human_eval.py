"""Win rates judged by people: `evaluate --labeler human` posts pairs to the labeling app's store, labelers
answer over HTTP, `eval-results` reads the majority votes back (mapped through the random sample order)."""

import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from agents.cli import main
from agents.evaluate import evaluate, win_rates
from agents.human_eval import human_results, post_human_evaluation
from rewards.comparisons import ComparisonStore
from rewards.labelers import SentimentLabeler
from rewards.labeling.app import create_app
from rewards.labeling.store import LabelingStore

GOOD = ["a wonderful, happy day", "I love this great gift", "what a lovely friend", "joy and delight"]
BAD = ["a terrible, sad day", "I hate this awful mess", "what a horrible enemy", "pain and misery"]


def rows(texts):
    return [
        {"query": f"prompt {i}", "source": f"prompt {i}", "reference": None, "response": t}
        for i, t in enumerate(texts)
    ]


def systems(n=12):
    """'policy' answers prompts 0, 3, 6, ... badly and the rest well; 'zero-shot' the reverse."""
    policy = [BAD[i % 4] if i % 3 == 0 else GOOD[i % 4] for i in range(n)]
    base = [GOOD[i % 4] if i % 3 == 0 else BAD[i % 4] for i in range(n)]
    return {"zero-shot": rows(base), "policy": rows(policy)}


def labelers(path, names=("ann", "bob", "cy", "dee")):
    store = LabelingStore(path)
    tokens = {n: store.add_labeler(n) for n in names}
    store.close()
    return tokens


def label_all(client, token, choose):
    """Answer every question the app gives this labeler with ``choose(question) -> index``; returns the count."""
    auth = {"Authorization": f"Bearer {token}"}
    n = 0
    while not (q := client.get("/api/next", headers=auth).json())["done"]:
        r = client.post(
            "/api/answers", json={"id": q["id"], "action": "choose", "choice": choose(q)}, headers=auth
        )
        assert r.status_code == 200, r.text
        n += 1
    return n


def test_people_in_the_app_give_the_same_win_rate_as_the_labeler_they_follow(tmp_path):
    path = tmp_path / "labels.db"
    tokens = labelers(path)
    outputs = systems()
    assert post_human_evaluation(path, "e1", "BookSentiment-v0", outputs, votes=3, seed=5) == 12
    client = TestClient(create_app(path, duplicate_share=0.0))
    judge = SentimentLabeler()
    answered = {
        name: label_all(client, tok, lambda q: judge(q["query"], q["samples"])[0])
        for name, tok in tokens.items()
    }
    # each question closes after 3 votes: 36 answers in all, the first labeler answered all 12
    assert answered["ann"] == 12 and sum(answered.values()) == 36
    res = human_results(path, "e1")
    policy = res["systems"]["policy"]
    assert res["complete"] and policy["complete"] == 12 and policy["judgements"] == 36
    assert policy["win_rate"] == pytest.approx(8 / 12)  # wins the 8 prompts where it is the happy one
    assert policy["win_rate"] == pytest.approx(win_rates(outputs, judge)["policy"])
    assert policy["win_rate_se"] == pytest.approx((8 / 12 * 4 / 12 / 12) ** 0.5)
    # the pairs were shown in a random order (position bias cancels), and the store's training view is clean
    with ComparisonStore(path) as store:
        pending = store.all()
        assert {c.task for c in pending} == {"eval:BookSentiment-v0"}
        assert store.labelled(task="BookSentiment-v0") == []
    store = LabelingStore(path)
    positions = [
        r[0]
        for r in store.conn.execute("SELECT system_position FROM evaluation_questions WHERE eval_id='e1'")
    ]
    assert 0 < sum(positions) < 12


def test_a_labeler_who_always_picks_the_first_sample_measures_the_order_not_the_policy(tmp_path):
    path = tmp_path / "labels.db"
    tokens = labelers(path, names=("ann",))
    post_human_evaluation(path, "bias", "BookSentiment-v0", systems(16), votes=1, seed=1)
    client = TestClient(create_app(path, duplicate_share=0.0))
    assert label_all(client, tokens["ann"], lambda q: 0) == 16
    store = LabelingStore(path)
    first = sum(
        p == 0
        for (p,) in store.conn.execute(
            "SELECT system_position FROM evaluation_questions WHERE eval_id='bias'"
        )
    )
    assert store.evaluation_results("bias")["systems"]["policy"]["win_rate"] == pytest.approx(first / 16)


def test_majority_ties_partial_votes_skips_and_flags(tmp_path):
    path = tmp_path / "labels.db"
    post_human_evaluation(path, "m", "BookSentiment-v0", systems(3), votes=3, seed=0)
    store = LabelingStore(path)
    q = {
        qid: (cid, pos)
        for qid, cid, pos in store.conn.execute(
            "SELECT question_id, comparison_id, system_position FROM evaluation_questions ORDER BY comparison_id"
        )
    }
    (c0, p0), (c1, p1), (c2, p2) = q.values()
    for who, choice in (("a", p0), ("b", p0), ("c", 1 - p0)):  # question 0: policy wins 2-1
        store.answer(who, c0, "choose", choice)
    store.answer("a", c1, "choose", 1 - p1)  # question 1: one vote of 3 so far
    store.answer("b", c1, "skip")
    store.answer("c", c2, "flag")
    res = store.evaluation_results("m")
    policy = res["systems"]["policy"]
    assert (policy["complete"], policy["answered"], policy["judgements"], policy["judgement_wins"]) == (
        1,
        2,
        4,
        2,
    )
    assert policy["win_rate"] == 1.0 and policy["judgement_win_rate"] == 0.5
    assert (res["skips"], res["flags"], res["complete"]) == (1, 1, False)
    # an even vote count can tie: a tie counts one half
    post_human_evaluation(path, "tie", "BookSentiment-v0", systems(1), votes=2, seed=0)
    ((cid, pos),) = store.conn.execute(
        "SELECT comparison_id, system_position FROM evaluation_questions WHERE eval_id='tie'"
    )
    store.answer("a", cid, "choose", pos)
    store.answer("b", cid, "choose", 1 - pos)
    assert store.evaluation_results("tie")["systems"]["policy"]["win_rate"] == 0.5
    assert store.next_question("c").question_id.startswith("eval-m-")  # 'tie' is closed after 2 votes
    # the admin's agreement keeps evaluation pairs (chance 50%) apart from training questions (chance 25%)
    stats = store.stats()
    assert stats["agreement_pairs"] == 0 and stats["agreement"] is None
    assert stats["evaluation_agreement_pairs"] == 3 + 1 and stats["evaluation_agreement"] == pytest.approx(
        1 / 4
    )


def test_bad_evaluations_are_refused_with_the_fix(tmp_path):
    path = tmp_path / "labels.db"
    post_human_evaluation(path, "e1", "BookSentiment-v0", systems(2))
    with pytest.raises(ValueError, match=r"exists .* already.*eval-results"):
        post_human_evaluation(path, "e1", "BookSentiment-v0", systems(2))
    with pytest.raises(ValueError, match="eval_id='a b'"):
        post_human_evaluation(path, "a b", "BookSentiment-v0", systems(2))
    with pytest.raises(ValueError, match="votes=0"):
        post_human_evaluation(path, "e2", "BookSentiment-v0", systems(2), votes=0)
    with pytest.raises(KeyError, match="evaluations there: e1"):
        human_results(path, "nope")
    with pytest.raises(FileNotFoundError, match="--store"):
        human_results(tmp_path / "missing.db", "e1")
    with pytest.raises(ValueError, match="needs store="):
        evaluate("BookSentiment-v0", ["tiny-gpt2", "zero-shot"], n=2, labeler="human")
    with pytest.raises(ValueError, match="are for labeler='human'"):  # not silently ignored
        evaluate("BookSentiment-v0", ["tiny-gpt2", "x"], n=2, labeler="sentiment", store=path)
    with pytest.raises(ValueError, match="listed twice"):
        evaluate("BookSentiment-v0", ["tiny-gpt2", "tiny-gpt2"], n=2)
    with pytest.raises(ValueError, match=r"exists .* already"):  # checked before any sampling
        evaluate("BookSentiment-v0", ["tiny-gpt2", "x"], n=2, labeler="human", store=path, eval_id="e1")


def other_policy(folder):
    """A saved tiny GPT-2 whose (tied) output layer is perturbed: a second policy with the same tokenizer."""
    import torch

    from textenv.models import load_causal_lm

    lm, tok = load_causal_lm("tiny-gpt2")
    with torch.no_grad():
        lm.lm_head.weight.add_(
            torch.randn_like(lm.lm_head.weight, generator=torch.Generator().manual_seed(0))
        )
    lm.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def test_cli_posts_pairs_then_reads_the_people_s_answers(tmp_path, capsys):
    other_policy(tmp_path / "other")
    path = tmp_path / "labels.db"
    tokens = labelers(path, names=("ann",))
    args = ["--task", "BookSentiment-v0", "--system", "tiny-gpt2", "--system", str(tmp_path / "other")]
    common = ["--n", "4", "--split", "valid", "--labeler", "human", "--store", str(path), "--votes", "1"]
    assert main(["evaluate", *args, *common, "--eval-id", "cli", "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["human_eval"]["questions"] == 4 and "serve-labeling" in report["human_eval"]["label_with"]
    assert "warning" not in report["human_eval"]  # 1 labeler registered, 1 vote needed
    capsys.readouterr()
    # waiting a moment for 3 votes that cannot come: the report says so, with no rate yet
    assert main(["evaluate", *args, *common[:-1], "3", "--eval-id", "wait", "--wait-s", "0.1"]) == 0
    captured = capsys.readouterr()
    assert '"' + str(tmp_path / "other") + '": null' in captured.out and "0/4 questions" in captured.out
    assert "1 labeler(s) registered" in captured.err
    assert main(["eval-results", "--store", str(path), "--eval-id", "cli"]) == 3  # nothing answered yet
    assert "0/4 questions" in capsys.readouterr().out
    client = TestClient(create_app(path, duplicate_share=0.0))
    assert label_all(client, tokens["ann"], lambda q: 1) == 8  # both evaluations: 4 + 4
    assert (
        main(["eval-results", "--store", str(path), "--eval-id", "cli", "--out", str(tmp_path / "h.json")])
        == 0
    )
    out = capsys.readouterr().out
    assert f"{tmp_path / 'other'} vs tiny-gpt2: wins" in out and "4/4 questions" in out
    assert json.loads((tmp_path / "h.json").read_text())["complete"] is True
    assert main(["eval-results", "--store", str(path)]) == 0
    assert capsys.readouterr().out.split() == ["cli", "wait"]


def test_majority_probability_matches_enumeration():
    from itertools import product

    from benchmarks.bench_human_eval import majority_probability

    for votes in (1, 2, 3, 4, 5):
        for p in (0.0, 0.3, 0.5, 0.8):
            brute = 0.0
            for outcome in product([0, 1], repeat=votes):
                weight = np.prod([p if o else 1 - p for o in outcome])
                wins = sum(outcome)
                brute += weight * (1.0 if 2 * wins > votes else 0.5 if 2 * wins == votes else 0.0)
            assert majority_probability(p, votes) == pytest.approx(brute)


def test_bench_human_eval_tiny(tmp_path):
    from benchmarks import bench_human_eval

    system = other_policy(tmp_path / "other")
    common = [
        "--task",
        "BookSentiment-v0",
        "--baseline",
        "tiny-gpt2",
        "--system",
        system,
        "--n",
        "6",
        "--out",
        "-",
    ]
    row = bench_human_eval.main([*common, "--store", str(tmp_path / "s")])
    assert row["complete"] and row["questions"] == 6 and row["answers"] == 18  # 3 votes each
    assert 0.0 <= row["majority_win_rate"] <= 1.0 and 0.0 <= row["expected_majority_win_rate"] <= 1.0
    with pytest.raises(SystemExit):
        bench_human_eval.main([*common, "--labelers", "2"])  # fewer people than votes
