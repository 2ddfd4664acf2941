"""Evaluation metrics on hand-made examples: ROUGE against hand-counted values, lead-3, novelty, copying."""

import pytest

from textenv.metrics import (
    copies_start,
    has_preamble,
    lead3,
    novel_sentence_share,
    rouge,
    rouge_table,
    sentences,
    win_rate,
)


def test_rouge_matches_hand_counts():
    r = rouge("the cat sat on the mat", "the cat sat")
    # unigrams: 3 of 3 summary tokens match, 3 of 6 reference tokens: P 1, R 0.5, F 2/3
    assert r["rouge1"] == pytest.approx(200 / 3, abs=1e-6)
    # bigrams: "the cat", "cat sat" both in the reference (5 bigrams): P 1, R 0.4, F 4/7
    assert r["rouge2"] == pytest.approx(400 / 7, abs=1e-6)
    assert r["rougeL"] == pytest.approx(200 / 3, abs=1e-6)  # LCS = 3
    assert r["ravg"] == pytest.approx((200 / 3 + 400 / 7 + 200 / 3) / 3)
    assert rouge("a b c", "a b c")["ravg"] == pytest.approx(100.0)
    assert rouge("a b c", "x y z")["ravg"] == 0.0
    table = rouge_table(["a b c", "a b c"], ["a b c", "x y z"])
    assert table["ravg"] == pytest.approx(50.0) and table["n"] == 2
    with pytest.raises(ValueError, match="as many"):
        rouge_table(["a"], [])


def test_sentences_and_lead3():
    text = 'First one. "Second!" he said. Third? Fourth.\nFifth line'
    assert sentences(text) == ["First one.", '"Second!"', "he said.", "Third?", "Fourth.", "Fifth line"]
    assert lead3("A b. C d. E f. G h.") == "A b. C d. E f."


def test_sentence_novelty_on_constructed_summaries():
    source = "The storm hit the coast on Monday. Thousands lost power. Schools stayed closed."
    assert novel_sentence_share(source, "Thousands lost power.") == 0.0  # copied
    assert novel_sentence_share(source, "thousands LOST power!") == 0.0  # case and punctuation aside
    assert novel_sentence_share(source, "Thousands lost power. A new dam was built.") == 0.5
    assert novel_sentence_share(source, "Nobody noticed anything.") == 1.0
    assert novel_sentence_share(source, "") is None


def test_copying_from_the_start_and_preambles():
    article = "LONDON, England: The prime minister resigned on Friday after a vote. More followed."
    assert has_preamble(article, "cnndm") and not has_preamble("The prime minister resigned.", "cnndm")
    assert copies_start(article, "London, England: the prime minister resigned on Friday.")
    assert not copies_start(article, "The prime minister resigned on Friday after a vote.")  # skipped it
    post = "Hey everyone, so my roommate keeps eating my food and I do not know what to do."
    assert has_preamble(post, "tldr") and has_preamble("ok. so here goes", "tldr")
    assert not has_preamble("My roommate eats my food.", "tldr")
    assert copies_start("short text", "short text and more")  # the whole (short) source opens it
    with pytest.raises(ValueError, match="family"):
        has_preamble(post, "books")


def test_win_rate():
    assert win_rate([2, 3, 0, 1, 2], a_indices=[2, 3]) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        win_rate([], [0])


def test_optimal_frontier_on_a_gaussian_with_a_closed_form():
    import numpy as np

    from textenv.metrics import optimal_frontier

    # rho = N(0, 1), r(y) = y: pi* = N(1/beta, 1), so E[r] = 1/beta and KL = 1/(2 beta^2)
    y = np.random.default_rng(0).normal(size=(4, 200_000))
    for point in optimal_frontier(y, [1.0, 2.0]):
        b = point["beta"]
        assert point["reward"] == pytest.approx(1 / b, rel=0.03)
        assert point["kl"] == pytest.approx(1 / (2 * b * b), rel=0.05)
    # beta -> infinity: pi* = rho (no reward gain, no KL); small beta: best of the samples
    far = optimal_frontier(y[:, :100], [1e6])[0]
    assert far["kl"] == pytest.approx(0.0, abs=1e-6) and far["reward"] == pytest.approx(
        y[:, :100].mean(), abs=1e-4
    )
    near = optimal_frontier(y[:, :100], [1e-4])[0]
    assert near["reward"] == pytest.approx(y[:, :100].max(axis=1).mean()) and near["kl"] == pytest.approx(
        np.log(100), rel=1e-3
    )
    with pytest.raises(ValueError, match="samples"):
        optimal_frontier(np.zeros((3, 1)), [1.0])
