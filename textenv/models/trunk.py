"""Splitting a Hugging Face decoder into a frozen lower part and trainable top blocks.

Used by the reward model and the policy when only the top ``k`` blocks train (a CPU-friendly option,
not in the paper): the lower part's output is a fixed function of the ids, so it is computed once per
sequence (:func:`lower_features`) and the top blocks run from it (:func:`top_forward`) as often as
needed, and the policy and its frozen reference share the lower part (one pass feeds both).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


class _StopForward(Exception):
    """Raised by a pre-hook to end a forward pass once the lower part's output is captured."""


@dataclass
class Features:
    """Output of the frozen lower part for a batch of sequences."""

    hidden: torch.Tensor  # (B, T, d) input of the first trainable block, or (B, d) final features when k = 0
    attention_mask: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (B, T)
    pool_mask: torch.Tensor | None = None  # (B, T) positions a pooled head averages (reward model only)

    def index(self, idx) -> Features:
        pool = None if self.pool_mask is None else self.pool_mask[idx]
        return Features(self.hidden[idx], self.attention_mask[idx], self.position_ids[idx], pool)


def layers_attr(base: nn.Module) -> str:
    """Name of the ModuleList holding the transformer blocks (``layers`` Llama, ``h`` GPT-2)."""
    for name in ("layers", "h", "blocks"):
        if isinstance(getattr(base, name, None), nn.ModuleList):
            return name
    raise TypeError(
        f"Cannot find the transformer blocks of {type(base).__name__}; train the whole model instead."
    )


def n_blocks(base: nn.Module) -> int:
    return len(getattr(base, layers_attr(base)))


def freeze_lower(lm: nn.Module, top_blocks: int | None) -> None:
    """Freeze everything in the causal LM ``lm`` but the top ``top_blocks`` blocks and the final norm of
    its trunk (``lm.base_model``); None trains everything.

    Embeddings and the output layer (tied to them or not) stay frozen whenever ``top_blocks`` is an int.
    """
    for p in lm.parameters():
        p.requires_grad_(top_blocks is None)
    if top_blocks is None:
        return
    base = lm.base_model
    total = n_blocks(base)
    if not 0 <= top_blocks <= total:
        raise ValueError(f"top_blocks={top_blocks} must lie in [0, {total}] for this model.")
    for block in list(getattr(base, layers_attr(base)))[total - top_blocks :]:
        for p in block.parameters():
            p.requires_grad_(True)
    if top_blocks > 0:
        for name, module in base.named_children():
            if name in ("norm", "ln_f", "final_layernorm"):
                for p in module.parameters():
                    p.requires_grad_(True)


@torch.no_grad()
def lower_features(base: nn.Module, inputs: dict, top_blocks: int) -> torch.Tensor:
    """Hidden states entering block ``n - top_blocks`` for padded ``inputs`` (ids, mask, positions).

    ``top_blocks = 0`` returns the final hidden states (after the final norm). For ``k >= 1`` a pre-hook
    captures the input of the first trainable block and stops the forward, so no block runs twice.
    """
    if top_blocks == 0:
        return base(**inputs).last_hidden_state
    first = getattr(base, layers_attr(base))[n_blocks(base) - top_blocks]
    captured: list[torch.Tensor] = []

    def grab(module, args, kwargs):
        captured.append(args[0] if args else kwargs["hidden_states"])
        raise _StopForward

    handle = first.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        base(**inputs)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured[0]


@contextmanager
def only_top_blocks(base: nn.Module, top_blocks: int):
    """Temporarily make ``base`` hold only its top ``top_blocks`` blocks."""
    attr = layers_attr(base)
    blocks = getattr(base, attr)
    setattr(base, attr, nn.ModuleList(list(blocks)[len(blocks) - top_blocks :]))
    try:
        yield
    finally:
        setattr(base, attr, blocks)


def top_forward(base: nn.Module, feats: Features, top_blocks: int) -> torch.Tensor:
    """Final hidden states (B, T, d) from cached lower features, running only the top blocks + final norm."""
    if top_blocks == 0:
        return feats.hidden
    embeds = feats.hidden
    wpe = getattr(base, "wpe", None)
    if wpe is not None:  # GPT-2 adds absolute position embeddings to inputs_embeds: cancel them
        embeds = embeds - wpe(feats.position_ids)
    with only_top_blocks(base, top_blocks):
        return base(
            inputs_embeds=embeds, attention_mask=feats.attention_mask, position_ids=feats.position_ids
        ).last_hidden_state
