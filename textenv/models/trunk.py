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


# the usual places of a decoder's block list, relative to ``lm.base_model`` (Llama/Qwen/Gemma/Mistral/
# Phi3: ``layers``; GPT-2: ``h``; GPT-NeoX: ``layers``; OPT: ``decoder.layers``)
_BLOCK_PATHS = ("layers", "h", "blocks", "decoder.layers", "transformer.h", "model.layers")
# modules after the blocks that train with them (final norms; OPT's optional projection)
_FINAL_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "final_norm", "project_out")


def layers_attr(base: nn.Module) -> str:
    """Dotted path (in ``base``) of the ModuleList holding the transformer blocks: ``layers`` (Llama),
    ``h`` (GPT-2), ``decoder.layers`` (OPT), else the one ModuleList of ``config.num_hidden_layers`` blocks."""
    for path in _BLOCK_PATHS:
        try:
            module = base.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            return path
    n = getattr(getattr(base, "config", None), "num_hidden_layers", None)
    found = [
        name for name, m in base.named_modules() if isinstance(m, nn.ModuleList) and name and len(m) == n
    ]
    if len(found) == 1:
        return found[0]
    raise TypeError(
        f"Cannot find the transformer blocks of {type(base).__name__}: no nn.ModuleList at "
        f"{', '.join(_BLOCK_PATHS)} and {len(found)} ModuleLists of num_hidden_layers={n} modules; "
        "top-block training needs one. Train the whole model (policy.train = 'full') or use LoRA instead."
    )


def blocks_of(base: nn.Module) -> nn.ModuleList:
    """The transformer blocks of the trunk ``base`` (see :func:`layers_attr`)."""
    return base.get_submodule(layers_attr(base))


def _set_blocks(base: nn.Module, blocks: nn.ModuleList) -> None:
    parent, _, name = layers_attr(base).rpartition(".")
    setattr(base.get_submodule(parent) if parent else base, name, blocks)


def n_blocks(base: nn.Module) -> int:
    return len(blocks_of(base))


def keep_lower_blocks(base: nn.Module, k: int) -> None:
    """Cut the trunk ``base`` to its first ``k`` blocks (its final norm kept), for good: its forward then
    returns the final norm of block ``k``'s output, and the dropped blocks' weights are freed. The config's
    ``num_hidden_layers`` and per-layer ``layer_types`` are cut to match (the trunk reads both)."""
    total = n_blocks(base)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= total:
        raise ValueError(f"layer={k!r} must be an int in [1, {total}] for this model (its number of blocks).")
    _set_blocks(base, nn.ModuleList(list(blocks_of(base))[:k]))
    config = getattr(base, "config", None)
    if config is not None:
        if getattr(config, "layer_types", None) is not None:
            config.layer_types = list(config.layer_types)[:k]
        if getattr(config, "num_hidden_layers", None) is not None:
            config.num_hidden_layers = k


def final_modules(base: nn.Module) -> list[nn.Module]:
    """The modules that run after the blocks (the final norm; OPT's ``project_out`` when present)."""
    path = layers_attr(base)
    parent = path.rpartition(".")[0]
    holder = base.get_submodule(parent) if parent else base
    mods = [m for name, m in holder.named_children() if name in _FINAL_NAMES and m is not None]
    if parent:  # e.g. a final norm beside the decoder rather than inside it
        mods += [m for name, m in base.named_children() if name in _FINAL_NAMES and m is not None]
    return mods


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
    for block in list(blocks_of(base))[total - top_blocks :]:
        for p in block.parameters():
            p.requires_grad_(True)
    if top_blocks > 0:
        for module in final_modules(base):
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
    first = blocks_of(base)[n_blocks(base) - top_blocks]
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
    """Temporarily make ``base`` hold only its top ``top_blocks`` blocks, and its config's per-layer
    ``layer_types`` (sliding vs full attention: Gemma2/3, Qwen with a sliding window) only theirs: the
    trunk looks the types up by the blocks' position in the list."""
    blocks = blocks_of(base)
    config = getattr(base, "config", None)
    layer_types = getattr(config, "layer_types", None)
    _set_blocks(base, nn.ModuleList(list(blocks)[len(blocks) - top_blocks :]))
    if layer_types is not None:
        config.layer_types = list(layer_types)[len(layer_types) - top_blocks :]
    try:
        yield
    finally:
        _set_blocks(base, blocks)
        if layer_types is not None:
            config.layer_types = layer_types


def top_forward(base: nn.Module, feats: Features, top_blocks: int) -> torch.Tensor:
    """Final hidden states (B, T, d) from cached lower features, running only the top blocks + final norm.

    The trunk runs with only its top blocks on zero input embeddings, and a pre-hook hands the cached
    features to the first of them in place of whatever the embedding stage made (absolute positions,
    Gemma's sqrt(d) scaling, OPT's projection): exact for every architecture, nothing to undo.
    """
    if top_blocks == 0:
        return feats.hidden
    first = blocks_of(base)[n_blocks(base) - top_blocks]

    def feed(module, args, kwargs):
        if args:
            return (feats.hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": feats.hidden}

    b, t = feats.attention_mask.shape
    dummy = feats.hidden.new_zeros(b, t, base.get_input_embeddings().embedding_dim)
    handle = first.register_forward_pre_hook(feed, with_kwargs=True)
    try:
        with only_top_blocks(base, top_blocks):
            return base(
                inputs_embeds=dummy,
                attention_mask=feats.attention_mask,
                position_ids=feats.position_ids,
                use_cache=False,
            ).last_hidden_state
    finally:
        handle.remove()
