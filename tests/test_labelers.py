"""Mock labelers, Boltzmann noise and agreement statistics."""

import numpy as np
import pytest

from rewards.comparisons import Comparison, ComparisonStore
from rewards.labelers import (
    DescriptivenessLabeler,
    GoldRewardLabeler,
    SentimentLabeler,
    SummarizationLabeler,
    agreement,
    calibrate_temperature,
    expected_agreement,
    make_labeler,
)
from rewards.pipeline import label_pending

SAMPLES = ["It was a terrible, miserable day.", "Nothing happened.", "What a wonderful, happy day!", "Rain."]


def test_sentiment_labeler_picks_the_happy_one():
    best, conf = SentimentLabeler()("q", SAMPLES)
    assert best == 2 and conf == 1.0


def test_descriptiveness_labeler():
    samples = ["He went there.", "The cold grey mist curled over the dark, glittering river stones."]
    assert DescriptivenessLabeler()("q", samples)[0] == 1


def test_summarization_labeler_uses_reference():
    ref = "the council approved the new bridge budget"
    samples = ["a dog barked loudly", "council approved bridge budget", "weather was nice"]
    assert SummarizationLabeler()("article", samples, reference=ref)[0] == 1
    with pytest.raises(ValueError, match="needs the reference"):
        SummarizationLabeler()("article", samples)


def test_gold_reward_labeler_and_bad_scores():
    gold = GoldRewardLabeler(lambda q, s: [len(x) for x in s])
    assert gold("q", ["a", "abc", "ab"])[0] == 1
    bad = GoldRewardLabeler(lambda q, s: [np.nan] * len(s))
    with pytest.raises(ValueError, match="one finite float"):
        bad("q", ["a", "b"])


def test_boltzmann_noise_matches_expected_agreement():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(400, 4))
    labeler = GoldRewardLabeler(lambda q, s: scores[int(q)], temperature=0.5, seed=1)
    a = [labeler(str(i), ["", "", "", ""])[0] for i in range(400)]
    b = [labeler(str(i), ["", "", "", ""])[0] for i in range(400)]
    assert agreement(a, b) == pytest.approx(expected_agreement(scores, 0.5), abs=0.06)
    assert expected_agreement(scores, 1e6) == pytest.approx(0.25, abs=1e-3)  # chance on 4-way questions
    assert expected_agreement(scores, 0.0) == 1.0


def test_calibrate_temperature_to_human_agreement():
    scores = np.random.default_rng(1).normal(size=(500, 4))
    t = calibrate_temperature(scores, target=0.6)
    assert expected_agreement(scores, t) == pytest.approx(0.6, abs=1e-3)
    with pytest.raises(ValueError, match=r"\(1/N, 1\)"):
        calibrate_temperature(scores, target=0.2)


def test_label_pending_with_duplicates(tmp_path):
    with ComparisonStore(tmp_path / "s.db") as store:
        store.add(
            [
                Comparison(
                    task="t", query=[1], samples=[[i] for i in range(4)], query_text="q", sample_texts=SAMPLES
                )
                for _ in range(30)
            ]
        )
        stats = label_pending(store, make_labeler("sentiment"), name="mock", duplicate_rate=0.5, seed=0)
        assert stats["labelled"] == 30 and 5 < stats["duplicates"] < 25 and stats["agreement"] == 1.0
        assert store.count(labelled=False) == 0
        assert all(c.best == 2 for c in store.labelled())
    with pytest.raises(ValueError, match="Unknown labeler 'happy'"):
        make_labeler("happy")


def test_pairwise_outcome_counts_a_noiseless_tie_as_one_half():
    from rewards.labelers import SentimentLabeler, pairwise_outcome

    judge = SentimentLabeler()
    assert pairwise_outcome(judge, "", "a happy day", "a sad day") == 1.0
    assert pairwise_outcome(judge, "", "a sad day", "a happy day") == 0.0
    assert pairwise_outcome(judge, "", "the table", "the chair") == 0.5  # VADER 0 vs 0: not a win for a
    assert judge("", ["the table", "the chair"])[0] == 0  # (the argmax alone would hand it to the first)
    assert pairwise_outcome(lambda q, s, r=None: 1, "", "x", "y") == 0.0  # any callable labeler
    noisy = [
        pairwise_outcome(SentimentLabeler(temperature=1.0, seed=i), "", "the table", "the chair")
        for i in range(200)
    ]
    assert 0.35 < sum(noisy) / 200 < 0.65 and set(noisy) == {0.0, 1.0}
