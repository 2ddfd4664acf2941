"""What a Hugging Face causal LM needs to work here, checked up front with errors that name what is missing.

Every decoder family in the compatibility matrix (``tests/test_compat_matrix.py``: GPT-2, Llama,
Mistral, Qwen2/3, Gemma2/3, GPT-NeoX, Phi/Phi3, OPT, StableLM, OLMo2) passes; a model that cannot take
part (Mamba: no attention mask, no position ids) is refused by :func:`check_causal_lm` with the reason.
"""

from __future__ import annotations

import inspect

from torch import nn

from textenv.models.trunk import blocks_of

# what the padding-invariant forward passes (textenv.models.tokenization.padded_inputs) and the KV-cached
# sampler hand to the model
_NEEDED = {
    "attention_mask": "pads are masked out of attention",
    "position_ids": "padding invariance: pads must not advance the positions",
}


def check_causal_lm(lm: nn.Module) -> None:
    """Raise a TypeError naming the first thing ``lm`` lacks that padding-invariant training needs."""
    name = type(lm).__name__
    params = inspect.signature(lm.forward).parameters
    for arg, why in _NEEDED.items():
        if arg not in params:
            raise TypeError(
                f"{name} cannot be used: its forward takes no {arg} ({why}); pick a transformer decoder "
                "(GPT-2, Llama, Mistral, Qwen, Gemma, GPT-NeoX, Phi, OPT, ...)."
            )
    if "cache" not in params and "past_key_values" not in params:
        raise TypeError(f"{name} cannot be used: its forward takes no KV cache (the sampler needs one).")
    if lm.get_output_embeddings() is None:
        raise TypeError(f"{name} has no output layer (get_output_embeddings() is None); load a *ForCausalLM.")


def lora_target_modules(lm: nn.Module) -> list[str]:
    """The LoRA targets for ``lm``'s family: peft's default for the architecture when it has one, else
    every linear projection inside the transformer blocks (attention and MLP), by module name."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAPPING

    model_type = getattr(lm.config, "model_type", "")
    if model_type in MAPPING:
        return list(MAPPING[model_type])
    from transformers.pytorch_utils import Conv1D

    names = {
        name.rsplit(".", 1)[-1]
        for name, m in blocks_of(lm.base_model).named_modules()
        if isinstance(m, (nn.Linear, Conv1D))
    }
    if not names:
        raise TypeError(f"{type(lm).__name__}: no linear projections in its blocks to put LoRA adapters on.")
    return sorted(names)
