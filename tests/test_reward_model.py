"""RewardModel: head init, padding invariance, cached features, save/load, env integration (must-haves 6, 8, 9, 12)."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import textenv  # noqa: F401
from rewards.comparisons import Comparison
from rewards.model import RewardModel
from rewards.train import (
    PRESETS,
    RewardTrainConfig,
    evaluate,
    get_preset,
    normalize,
    split_holdout,
    train_reward_model,
)


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-llama"])
def rm(request):
    return RewardModel.from_spec(request.param, seed=1)


def test_head_init_std_matches_paper():
    lm = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=4, n_embd=768, vocab_size=100))
    rm = RewardModel(lm, pad_id=100, seed=0)
    assert rm.head.weight.std().item() == pytest.approx(1 / np.sqrt(769), rel=0.05)  # ~0.036
    assert rm.head.bias.item() == 0.0 and rm.gain.item() == 1.0 and rm.bias.item() == 0.0


def test_padding_anywhere_leaves_scores_unchanged(rm):
    pad = rm.pad_id
    q, r = [5, 6, 7, 8], [10, 11, 12]
    base = rm(torch.tensor([q + r])).item()
    variants = [
        [pad, pad, *q, *r],  # left pads on the query
        [*q, *r, pad, pad, pad],  # right pads after the truncated response
        [*q[:2], pad, *q[2:], pad, *r],  # pads in the middle
    ]
    with torch.no_grad():
        for v in variants:
            assert rm(torch.tensor([v])).item() == pytest.approx(base, abs=1e-5)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_cached_features_give_the_full_forward(rm, k):
    ids = rm.sequences([[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14, 15]])
    with torch.no_grad():
        full = rm(ids)
        rm.set_trainable(k)
        torch.testing.assert_close(rm.score_features(rm.features(ids)), full, atol=1e-5, rtol=1e-5)
    rm.set_trainable(None)


def test_set_trainable_freezes_lower_blocks():
    rm = RewardModel.from_spec("tiny-llama", seed=0)
    rm.set_trainable(1)
    trainable = {n for n, p in rm.named_parameters() if p.requires_grad}
    assert "lm.model.layers.1.self_attn.q_proj.weight" in trainable
    assert "lm.model.layers.0.self_attn.q_proj.weight" not in trainable
    assert "lm.model.embed_tokens.weight" not in trainable
    assert {"head.weight", "head.bias", "gain", "bias"} <= trainable
    with pytest.raises(ValueError, match="top_blocks=5"):
        rm.set_trainable(5)


def _toy_questions(n: int, seed: int, marker: int = 500) -> list[Comparison]:
    """Best-of-4 questions whose 'best' sample is the one with the most marker tokens."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        samples = []
        for _ in range(4):
            s = rng.integers(1000, 2000, size=6)
            s[rng.random(6) < rng.random()] = marker
            samples.append([int(x) for x in s])
        best = int(np.argmax([s.count(marker) + 1e-3 * j for j, s in enumerate(samples)]))
        out.append(
            Comparison(
                task="toy",
                query=[int(x) for x in rng.integers(1000, 2000, 5)],
                samples=samples,
                label={"best": best},
                question_id=f"t{seed}-{i}",
            )
        )
    return out


def test_training_schedule_must_have_8():
    rm = RewardModel.from_spec("tiny-gpt2", seed=0)
    items = _toy_questions(50, seed=0)
    cfg = RewardTrainConfig(lr=1e-3, batch_size=8, top_blocks=0)
    out = train_reward_model(rm, items, cfg)
    assert out["train/steps"] == 7  # ceil(50 / 8)
    assert out["lrs"] == pytest.approx([1e-3 * (1 - k * 8 / 50) for k in range(7)])
    assert out["lrs"][-1] > 0


def test_training_learns_a_toy_preference_above_chance():
    rm = RewardModel.from_spec("tiny-gpt2", seed=0)
    train, held = _toy_questions(300, seed=1), _toy_questions(100, seed=2)
    cfg = RewardTrainConfig(lr=3e-3, batch_size=16, epochs=3, optimizer="torch_adam", top_blocks=1)
    out = train_reward_model(rm, train, cfg, eval_items=held)
    assert out["eval/accuracy"] > 0.6 > out["eval/chance"]
    assert out["train/loss_last_10pct"] < out["train/loss_first"]


def test_dropout_is_off_in_train_mode():
    rm = RewardModel.from_spec("tiny-gpt2", seed=0)
    rm.train()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(rm(ids), rm(ids))


def test_normalize_gain_bias_formula_must_have_9():
    rm = RewardModel.from_spec("tiny-gpt2", seed=0)
    rng = np.random.default_rng(0)
    q = [list(rng.integers(0, 50000, 6)) for _ in range(64)]
    r = [list(rng.integers(0, 50000, 4)) for _ in range(64)]
    stats = normalize(rm, q, r, target_mean=0.0, target_std=1.0)
    scores = rm.score(q, r)
    assert abs(scores.mean()) < 1e-6 and abs(scores.std() - 1) < 1e-6
    assert stats["norm/gain"] == pytest.approx(1 / stats["norm/std_before"])
    assert stats["norm/bias"] == pytest.approx(-stats["norm/mean_before"] / stats["norm/std_before"])
    normalize(rm, q, r, target_mean=2.0, target_std=3.0)
    scores = rm.score(q, r)
    assert scores.mean() == pytest.approx(2.0, abs=1e-5) and scores.std() == pytest.approx(3.0, rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        normalize(rm, q[:1], r[:1])


def test_save_load_roundtrip(tmp_path):
    rm = RewardModel.from_spec("tiny-gpt2", seed=3)
    train_reward_model(
        rm, _toy_questions(20, seed=0), RewardTrainConfig(lr=1e-2, batch_size=10, top_blocks=1)
    )
    with torch.no_grad():
        rm.gain.fill_(1.7)
    q, r = [[5, 6, 7]], [[9, 10]]
    rm.save(tmp_path / "rm")
    loaded = RewardModel.load(tmp_path / "rm")
    assert loaded.score(q, r) == pytest.approx(rm.score(q, r), abs=1e-6)
    with pytest.raises(FileNotFoundError, match="not a saved reward model"):
        RewardModel.load(tmp_path)


def test_env_score_equals_reward_model_called_directly_must_have_12():
    rm = RewardModel.from_spec("tiny-gpt2", seed=0)
    env = gym.make("BookSentiment-v0", tokenizer=rm.tokenizer, reward_fn=rm.as_reward_fn())
    obs, _ = env.reset(seed=0)
    tokens = [100] * 24
    tokens[18] = 13
    for t in tokens:
        obs, reward, term, _, info = env.step(t)
    rt = env.unwrapped.task
    ctx = obs[: rt.context_length]
    query = [int(t) for t in ctx if t != rt.pad_id]
    assert reward == pytest.approx(rm.score([query], [tokens[:19]])[0], abs=1e-6)


def test_presets_and_bad_items():
    assert get_preset("books").lr == 5e-5 and get_preset("books").batch_size == 32
    assert PRESETS["summarize"].lr == 2.5e-5 and PRESETS["summarize"].batch_size == 16
    assert PRESETS["paper-books"].lr == 1.77e-5
    with pytest.raises(ValueError, match="Unknown reward-training preset"):
        get_preset("nope")
    rm = RewardModel.from_spec("tiny-gpt2", seed=0)
    with pytest.raises(ValueError, match="No labelled comparisons"):
        train_reward_model(rm, [])
    pending = Comparison(task="t", query=[1], samples=[[2], [3]])
    with pytest.raises(ValueError, match="have no label"):
        evaluate(rm, [pending])


def test_split_holdout_keeps_duplicates_together():
    items = _toy_questions(200, seed=0)
    dup = Comparison(**{**items[0].__dict__, "id": None})
    train, held = split_holdout([*items, dup], 0.2)
    assert 20 < len(held) < 60
    same = [c for c in train + held if c.question_id == items[0].question_id]
    assert len(same) == 2 and (all(c in train for c in same) or all(c in held for c in same))


@pytest.mark.parametrize("k", [0, 2])
def test_cached_features_train_like_the_uncached_path(k):
    from rewards.train import cache_features

    items, held = _toy_questions(40, seed=5), _toy_questions(12, seed=6)
    cfg = RewardTrainConfig(lr=1e-2, batch_size=8, epochs=2, top_blocks=k, optimizer="torch_adam")
    a = RewardModel.from_spec("tiny-llama", seed=0)
    out_a = train_reward_model(a, items, cfg, eval_items=held)
    b = RewardModel.from_spec("tiny-llama", seed=0)
    b.set_trainable(k)
    out_b = train_reward_model(
        b,
        items,
        cfg,
        eval_items=held,
        features=cache_features(b, items, batch_size=5),
        eval_features=cache_features(b, held),
    )
    assert out_b["losses"] == pytest.approx(out_a["losses"], rel=1e-4, abs=1e-5)
    assert out_b["eval/accuracy"] == out_a["eval/accuracy"]


def test_cached_final_features_of_different_lengths_stack():
    """top_blocks=0 with questions of different lengths cached in separate batches (a regression)."""
    from rewards.train import cache_features

    rm = RewardModel.from_spec("tiny-gpt2", seed=0)
    rm.set_trainable(0)
    items = _toy_questions(12, seed=4)
    for i, c in enumerate(items[6:]):  # longer queries in the second half
        c.query = c.query + [1500 + i] * 3
    feats = cache_features(rm, items, batch_size=6)
    assert {f.attention_mask.shape[1] for f in feats} == {
        feats[0].attention_mask.shape[1],
        feats[-1].attention_mask.shape[1],
    } and feats[0].attention_mask.shape[1] != feats[-1].attention_mask.shape[1]
    out = train_reward_model(
        rm, items, RewardTrainConfig(lr=1e-3, batch_size=12, top_blocks=0), features=feats
    )
    plain = RewardModel.from_spec("tiny-gpt2", seed=0)
    plain.set_trainable(0)
    ref = train_reward_model(plain, items, RewardTrainConfig(lr=1e-3, batch_size=12, top_blocks=0))
    assert out["train/steps"] == ref["train/steps"] == 1
    assert out["train/loss_first"] == pytest.approx(ref["train/loss_first"], rel=1e-5)  # as if uncached


def test_mean_pool_averages_the_response_tokens_and_is_saved(tmp_path):
    rm = RewardModel.from_spec("tiny-gpt2", seed=0, pool="mean")
    q, r = [11, 12, 13], [14, 15]
    with torch.no_grad():
        # reference: the unpadded sequence, the final hidden states of the response positions averaged
        hidden = rm.base(input_ids=torch.tensor([q + r])).last_hidden_state[0, len(q) :]
        expected = (rm.gain * rm.head(hidden.mean(0)) + rm.bias).item()
        # pads on either side of the query and after the response change nothing
        got = rm.score([q, [1, 2, 3, 4, 5]], [r, [6, 7, 8]])[0]
        assert got == pytest.approx(expected, abs=1e-5)
        ids, start = rm.sequences_with_start([q], [r])
        last = RewardModel.from_spec("tiny-gpt2", seed=0)(ids)
        assert not torch.allclose(rm(ids, start), last)
        with pytest.raises(ValueError, match="response_start"):
            rm(ids)
        # cached features (k = 0 and k = 1) give the full forward's scores
        ids, start = rm.sequences_with_start([q, [1, 2, 3, 4, 5]], [r, [6, 7, 8]])
        full = rm(ids, start)
        for k in (0, 1):
            rm.set_trainable(k)
            torch.testing.assert_close(rm.score_features(rm.features(ids, start)), full, atol=1e-5, rtol=1e-5)
        stale = rm.features(ids, start)
        stale.pool_mask = None  # as features cached by format-1 code: refused, not silently re-pooled
        with pytest.raises(ValueError, match="pool mask"):
            rm.score_features(stale)
    rm.save(tmp_path / "rm")
    again = RewardModel.load(tmp_path / "rm")
    assert again.pool == "mean"
    np.testing.assert_allclose(again.score([q], [r]), rm.score([q], [r]), atol=1e-6)
    meta = json.loads((tmp_path / "rm" / "reward_model.json").read_text())
    meta["format"] = 1  # format 1 averaged the query too: refuse rather than score differently
    (tmp_path / "rm" / "reward_model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="retrain"):
        RewardModel.load(tmp_path / "rm")
    with pytest.raises(ValueError, match="pool"):
        RewardModel.from_spec("tiny-gpt2", pool="max")


@pytest.mark.parametrize("spec", ["tiny-gpt2", "tiny-llama"])
def test_feature_layer_reads_that_blocks_output_and_is_saved(tmp_path, spec):
    full = RewardModel.from_spec(spec, seed=0, pool="mean")
    rm = RewardModel.from_spec(spec, seed=0, pool="mean", layer=1)
    assert rm.n_blocks == 1 and full.n_blocks == 2 and rm.base.config.num_hidden_layers == 1
    q, r = [11, 12, 13], [14, 15]
    with torch.no_grad():
        # reference: block 1's output of the whole model, through the final norm, response tokens averaged
        out = full.base(input_ids=torch.tensor([q + r]), output_hidden_states=True)
        norm = full.base.ln_f if spec == "tiny-gpt2" else full.base.norm
        hidden = norm(out.hidden_states[1][0, len(q) :])
        expected = (rm.gain * rm.head(hidden.mean(0)) + rm.bias).item()
        assert rm.score([q, [1, 2, 3, 4, 5]], [r, [6, 7, 8]])[0] == pytest.approx(expected, abs=1e-5)
        assert full.score([q], [r])[0] != pytest.approx(expected, abs=1e-3)
        rm.set_trainable(0)  # cached features give the same scores
        ids, start = rm.sequences_with_start([q], [r])
        torch.testing.assert_close(rm.score_features(rm.features(ids, start)), rm(ids, start))
    rm.save(tmp_path / "rm")
    assert json.loads((tmp_path / "rm" / "reward_model.json").read_text())["layer"] == 1
    again = RewardModel.load(tmp_path / "rm")
    assert again.layer == 1 and again.n_blocks == 1
    np.testing.assert_allclose(again.score([q], [r]), rm.score([q], [r]), atol=1e-6)
    for bad in (0, 3, 1.5, True):
        with pytest.raises(ValueError, match=rf"layer={bad!r} must be an int in \[1, 2\]"):
            RewardModel.from_spec(spec, layer=bad)
