import time

import numpy as np
import pytest
import torch

from textenv.assets import AssetMissingError
from textenv.models import ModelUnavailableError, load_causal_lm, set_dropout
from textenv.models.tokenization import (
    ensure_pad_token,
    pad_sequences,
    padded_inputs,
    to_left_padding,
    token_id,
)


def _logits(model, ids: np.ndarray, pad: int) -> torch.Tensor:
    with torch.no_grad():
        return model(**padded_inputs(torch.as_tensor(ids), pad)).logits


def test_gpt2_tokenizer_is_real_bpe_with_distinct_pad(gpt2_tokenizer):
    tok = gpt2_tokenizer
    assert tok.eos_token_id == 50256
    assert tok.pad_token_id == 50257 != tok.eos_token_id
    # GPT-2's well-known ids (PAPER.md §1.6: '.' = 13, '\n' = 198)
    assert token_id(tok, ".") == 13
    assert token_id(tok, "\n") == 198
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.decode(tok.encode("Round trip, ok?")) == "Round trip, ok?"


def test_token_id_rejects_multi_token_text(gpt2_tokenizer):
    with pytest.raises(ValueError, match="single token"):
        token_id(gpt2_tokenizer, "TL;DR:")


@pytest.mark.parametrize("spec", ["tiny-gpt2", "tiny-llama"])
def test_tiny_models_are_deterministic_under_seed(spec):
    a, _ = load_causal_lm(spec, seed=3)
    b, _ = load_causal_lm(spec, seed=3)
    c, _ = load_causal_lm(spec, seed=4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))
    assert a.config.vocab_size == 50257


def test_seeded_tiny_model_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_causal_lm("tiny-gpt2", seed=9)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("spec", ["tiny-gpt2", "tiny-llama"])
def test_left_right_and_middle_padding_give_same_logits(spec):
    model, tok = load_causal_lm(spec, seed=0)
    pad = tok.pad_token_id
    seqs = [tok.encode("The cat sat on the mat. It was warm"), tok.encode("Hi there")]
    left = pad_sequences(seqs, pad, 16, side="left")
    right = pad_sequences(seqs, pad, 16, side="right")
    lo, ro = _logits(model, left, pad), _logits(model, right, pad)
    for i, s in enumerate(seqs):
        n = len(s)
        torch.testing.assert_close(lo[i, 16 - n :], ro[i, :n], atol=1e-5, rtol=1e-5)
    # k pads inserted in the middle of the query (PAPER.md must-have 5)
    s = seqs[0]
    middle = np.array([[*s[:4], pad, pad, pad, *s[4:]]])
    mo = _logits(model, middle, pad)[0]
    real = np.array(middle[0]) != pad
    torch.testing.assert_close(mo[torch.as_tensor(real)], ro[0, : len(s)], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(lo).all() and torch.isfinite(ro).all()


def test_padded_inputs_masks_and_positions():
    ids = torch.tensor([[9, 9, 5, 6, 7], [5, 9, 6, 9, 7]])
    out = padded_inputs(ids, pad_id=9)
    assert out["attention_mask"].tolist() == [[0, 0, 1, 1, 1], [1, 0, 1, 0, 1]]
    assert out["position_ids"].tolist() == [[0, 0, 0, 1, 2], [0, 1, 1, 2, 2]]
    assert out["input_ids"].tolist() == [[0, 0, 5, 6, 7], [5, 0, 6, 0, 7]]
    with pytest.raises(ValueError, match="batch, length"):
        padded_inputs(torch.tensor([1, 2]), pad_id=9)


def test_pad_sequences_and_left_padding():
    arr = pad_sequences([[1, 2], [3]], pad_id=0, length=4, side="right")
    assert arr.tolist() == [[1, 2, 0, 0], [3, 0, 0, 0]]
    assert to_left_padding(arr, 0).tolist() == [[0, 0, 1, 2], [0, 0, 0, 3]]
    with pytest.raises(ValueError, match="length=1"):
        pad_sequences([[1, 2]], pad_id=0, length=1)


def test_dropout_is_disabled(tiny_gpt2):
    model, tok = load_causal_lm("tiny-gpt2", seed=0)
    assert model.config.resid_pdrop == 0.0
    model.train()
    ids = torch.tensor([tok.encode("dropout must be off")])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, model(ids).logits)
    set_dropout(model, 0.5)
    with torch.no_grad():
        assert not torch.equal(model(ids).logits, model(ids).logits)


def test_ensure_pad_token_adds_pad_when_it_equals_eos(gpt2_tokenizer):
    tok = gpt2_tokenizer.__class__.from_pretrained(gpt2_tokenizer.name_or_path)
    tok.pad_token = tok.eos_token  # the SmolLM2 situation
    pad = ensure_pad_token(tok)
    assert pad != tok.eos_token_id and tok.pad_token == "<|pad|>"


def test_local_folder_roundtrip(tmp_path, tiny_gpt2):
    model, tok = tiny_gpt2
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, tok2 = load_causal_lm(tmp_path / "m")
    ids = torch.tensor([tok.encode("same weights, same logits")])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert tok2.pad_token_id == tok.pad_token_id


def test_dtype_option_and_bad_dtype():
    model, _ = load_causal_lm("tiny-gpt2", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype 'float33'"):
        load_causal_lm("tiny-gpt2", dtype="float33")


def test_non_gguf_file_is_rejected(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"not a \.gguf"):
        load_causal_lm(f)


def test_hub_id_offline_fails_fast_and_names_embedded_default(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    t0 = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as e:
        load_causal_lm("gpt2")
    assert time.perf_counter() - t0 < 20
    msg = str(e.value)
    assert "'gpt2'" in msg and "smollm2-135m" in msg and "offline" in msg


def test_missing_embedded_model_names_setup_command(empty_cache):
    with pytest.raises(AssetMissingError, match="textenv setup"):
        load_causal_lm("smollm2-135m")


@pytest.mark.embedded
def test_embedded_model_loads_fast_and_pads_correctly(embedded):
    model, tok = embedded
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.pad_token_id >= model.config.vocab_size  # pad can never be sampled
    t0 = time.perf_counter()
    load_causal_lm("smollm2-135m")
    assert time.perf_counter() - t0 < 30  # generous: the < 5 s target is printed by `make demo`
    pad = tok.pad_token_id
    seqs = [tok.encode("It was a bright cold day in April."), tok.encode("Hello")]
    lo = _logits(model, pad_sequences(seqs, pad, 12, "left"), pad)
    ro = _logits(model, pad_sequences(seqs, pad, 12, "right"), pad)
    for i, s in enumerate(seqs):
        torch.testing.assert_close(lo[i, 12 - len(s) :], ro[i, : len(s)], atol=1e-4, rtol=1e-4)


@pytest.mark.embedded
def test_gguf_file_loads_through_the_cache(embedded):
    from textenv.assets import smollm2_gguf_path

    model, tok = load_causal_lm(smollm2_gguf_path())
    ref, _ = embedded
    ids = torch.tensor([tok.encode("A gguf file and its converted folder agree.")])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits)


@pytest.mark.parametrize("spec", ["tiny-gpt2", "tiny-llama"])
def test_shared_prefix_sampler_decodes_like_a_full_forward(spec):
    """Near temperature 0 the shared-prefix sampler is greedy decoding: every row, repeated or not and
    padded or not, must equal a greedy loop over full forwards of the unpadded sequence."""
    from textenv.models.sampling import sample_shared_prefix

    lm, _ = load_causal_lm(spec, seed=0)
    pad = lm.config.vocab_size - 1
    rows = [
        [5, 6, 7, 8],
        [5, 6, 7, 8],
        [5, 6, 7, 8],
        [pad, 9, 10, 11],
        [pad, pad, 12, 13],
        [pad, pad, 12, 13],
    ]
    before = torch.random.get_rng_state()
    got = sample_shared_prefix(lm, np.array(rows), pad, 5, 1e-6, seed=3, vocab_size=pad)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is untouched
    assert got.shape == (6, 5)
    with torch.no_grad():
        for row, out in zip(rows, got):
            ids = [t for t in row if t != pad]
            for _ in range(5):
                logits = lm(input_ids=torch.tensor([ids])).logits[0, -1, :pad]
                ids.append(int(logits.argmax()))
            assert list(out) == ids[-5:]


def test_shared_prefix_sampler_never_draws_the_pad_and_is_seeded():
    from textenv.models.sampling import hf_sample_fn, sample_shared_prefix

    lm, _ = load_causal_lm("tiny-gpt2", seed=0)
    pad = 7  # a token inside the vocabulary, made the most likely: it must still never be drawn
    hook = lm.lm_head.register_forward_hook(
        lambda m, a, out: out.index_add(-1, torch.tensor([pad]), out[..., :1] * 0 + 30)
    )
    try:
        ctx = np.array([[1, 2, 3]] * 8 + [[4, 5, 6]] * 8)
        a = sample_shared_prefix(lm, ctx, pad, 6, 1.0, seed=11)
        assert (a != pad).all()
        np.testing.assert_array_equal(a, hf_sample_fn(lm, pad, 1.0, share_prefix=True)(ctx, 6, 11))
        assert not np.array_equal(a, sample_shared_prefix(lm, ctx, pad, 6, 1.0, seed=12))
    finally:
        hook.remove()
    with pytest.raises(ValueError, match=r"context must be \(batch >= 1, length\)"):
        sample_shared_prefix(lm, np.zeros((0, 3), dtype=int), pad, 2, 1.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample_shared_prefix(lm, ctx, pad, 2, 0.0)
    with pytest.raises(ValueError, match="length must be >= 1 new tokens, got 0"):
        sample_shared_prefix(lm, ctx, pad, 0, 1.0)
