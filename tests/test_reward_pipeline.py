"""sample -> label -> train-reward, through the library and the CLI, on a tiny model."""

import json

import pytest

from agents.cli import main
from rewards.comparisons import ComparisonStore
from rewards.pipeline import sample_questions
from textenv.models import load_causal_lm


class PeriodModel:
    """A stand-in policy whose generate() emits a period at a chosen index, else token 100."""

    device = "cpu"

    def __init__(self, period_at):
        self.period_at = list(period_at)
        self.calls = 0

    def generate(self, input_ids, max_new_tokens, **kw):
        import torch

        b = input_ids.shape[0]
        out = torch.full((b, max_new_tokens), 100)
        for i in range(b):
            k = self.period_at[(self.calls * b + i) % len(self.period_at)]
            if k is not None:
                out[i, k] = 13
        self.calls += 1
        return torch.cat([input_ids, out], dim=1)


def test_sample_questions_rejects_invalid_samples(tmp_path):
    _, tok = load_causal_lm("tiny-gpt2")
    model = PeriodModel([20, None, 5, 18])  # every other sample has no period in [16, 24)
    with ComparisonStore(tmp_path / "s.db") as store:
        stats = sample_questions(
            store, "BookSentiment-v0", model, tok, n_queries=3, n_samples=4, batch_size=8
        )
        # deterministic: the stand-in's pattern makes 12 valid samples (3 questions x 4) out of 23 drawn
        assert (stats["questions"], stats["valid"], stats["sampled"]) == (3, 12, 23)
        assert stats["valid_rate"] == 12 / 23
        for c in store.pending():
            assert len(c.samples) == 4
            assert all(s[-1] == 13 and len(s) in (19, 21) for s in c.samples)  # truncated after the period
            assert c.sample_texts[0].endswith(".")
            assert c.query_text and c.task == "BookSentiment-v0"


def test_sample_questions_skips_queries_that_never_validate(tmp_path):
    _, tok = load_causal_lm("tiny-gpt2")
    with ComparisonStore(tmp_path / "s.db") as store:
        stats = sample_questions(
            store, "BookSentiment-v0", PeriodModel([None]), tok, n_queries=2, max_rounds=2
        )
        assert stats["questions"] == 0 and stats["skipped_queries"] == 2


def test_cli_sample_label_train_reward(tmp_path, capsys):
    store = str(tmp_path / "labels.db")
    assert (
        main(
            [
                "sample",
                "--store",
                store,
                "--model",
                "tiny-gpt2",
                "--queries",
                "24",
                "--batch-size",
                "32",
                "--no-require-valid",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["questions"] == 24
    # the random tiny model never ends a sentence: requiring valid samples stores nothing, and says so
    assert (
        main(["sample", "--store", store, "--model", "tiny-gpt2", "--queries", "2", "--batch-size", "2"]) == 1
    )
    err = capsys.readouterr().err
    assert "stored 0 questions" in err and "pass --no-require-valid" in err
    assert (
        main(
            [
                "label",
                "--store",
                store,
                "--labeler",
                "descriptiveness",
                "--duplicate-rate",
                "0.25",
                "--temperature",
                "0.01",
            ]
        )
        == 0
    )
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["labelled"] == 24
    rm_dir = tmp_path / "rm"
    args = [
        "train-reward",
        "--store",
        store,
        "--model",
        "tiny-gpt2",
        "--out",
        str(rm_dir),
        "--top-blocks",
        "1",
    ]
    assert main([*args, "--normalize-samples", "16", "--holdout", "0.25"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["train_n"] + metrics["holdout_n"] == 24 + stats["duplicates"]
    assert "eval/accuracy" in metrics and "after/norm/gain" in metrics
    assert (rm_dir / "reward_model.json").exists() and (rm_dir / "weights.safetensors").exists()
    with ComparisonStore(store) as s:
        assert s.count(labelled=False) == 0


def test_cli_train_reward_without_labels_fails_clearly(tmp_path):
    store = str(tmp_path / "empty.db")
    ComparisonStore(store).close()
    with pytest.raises(ValueError, match="No labelled comparisons"):
        main(
            [
                "train-reward",
                "--store",
                store,
                "--model",
                "tiny-gpt2",
                "--out",
                str(tmp_path / "rm"),
                "--normalize-samples",
                "0",
            ]
        )


def test_sample_questions_names_them_and_skips_what_a_killed_request_stored(tmp_path):
    _, tok = load_causal_lm("tiny-gpt2")
    model = PeriodModel([20, None, 5, 18])
    kw = dict(n_queries=5, n_samples=4, batch_size=8, seed=3, question_id_prefix="run-r0-q")  # 2 per batch
    with ComparisonStore(tmp_path / "full.db") as store:
        sample_questions(store, "BookSentiment-v0", PeriodModel([20, None, 5, 18]), tok, **kw)
        full = [(c.question_id, c.query, c.samples) for c in store.all()]
    assert [q[0] for q in full] == [f"run-r0-q{j}" for j in range(5)]
    with ComparisonStore(tmp_path / "resumed.db") as store:
        stats = sample_questions(store, "BookSentiment-v0", model, tok, skip=3, **kw)
        assert stats["questions"] == 2  # the first 3 made again, not stored
        assert [(c.question_id, c.query, c.samples) for c in store.all()] == full[3:]


def test_mock_reward_model_normalises_before_and_after_on_fresh_samples(tmp_path, normalisation_events):
    from rewards.labelers import make_labeler
    from rewards.pipeline import mock_reward_model

    events = normalisation_events
    lm, tok = load_causal_lm("tiny-gpt2")
    overrides = dict(
        query_length=8, response_length=4, min_query_length=4, truncate_token=None, truncate_after=0
    )
    kw = dict(model_spec="tiny-gpt2", questions=4, epochs=1, normalize_samples=8, seed=5, **overrides)
    labeler = make_labeler("sentiment")
    rm, metrics = mock_reward_model("BookSentiment-v0", lm, tok, labeler, out_dir=tmp_path / "a", **kw)
    assert [e[0] for e in events] == ["normalize", "train", "normalize"]
    (_, seed_before, qb, rb), (_, seed_after, qa, ra) = events[0], events[2]
    assert (seed_before, seed_after) == (17, 16) and (qb, rb) != (qa, ra)  # fresh samples each time
    assert metrics["before/norm/seed"] == 17 and metrics["norm/seed"] == 16
    scores = rm.score(qa, ra)  # after training, on the "after" samples: mean 0, std 1 (§1.3)
    assert abs(scores.mean()) < 1e-5 and abs(scores.std() - 1.0) < 1e-4
    events.clear()
    rm2, metrics = mock_reward_model(
        "BookSentiment-v0", lm, tok, labeler, out_dir=tmp_path / "b", normalize="after", **kw
    )
    assert [e[0] for e in events] == ["train", "normalize"] and events[1][1] == 16  # the old behaviour
    assert not any(k.startswith("before/") for k in metrics)
    with pytest.raises(ValueError, match="before_and_after"):
        mock_reward_model("BookSentiment-v0", lm, tok, labeler, out_dir=tmp_path / "c", normalize="x", **kw)
