"""Fixed-length ancestral sampling with a Hugging Face causal LM (PAPER.md §1.6, must-have 3).

``generate`` with a KV cache, temperature ``T``, no top-k/top-p, no EOS stop, exactly ``length`` new
tokens per row. The pad id lies outside the model's vocabulary, so it is never sampled. Used by the
demo and the reward-learning pipeline; the PPO agent brings its own sampler that also returns log-probs.
"""

from __future__ import annotations

import numpy as np


def sample_responses(
    model, context: np.ndarray, pad_id: int, length: int, temperature: float, seed: int | None = None
) -> np.ndarray:
    """Sample ``length`` tokens for every row of the left-padded ``context`` (B, Lc); returns (B, length).

    ``seed`` seeds torch's global generator for this call only (its state is restored afterwards).
    """
    import torch

    from textenv.models.tokenization import padded_inputs

    context = np.asarray(context)
    if context.ndim != 2:
        raise ValueError(f"context must be (batch, length), got shape {context.shape}.")
    inputs = padded_inputs(torch.as_tensor(context, device=model.device), pad_id)
    state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        with torch.no_grad():
            out = model.generate(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=length,
                min_new_tokens=length,
                eos_token_id=None,
                pad_token_id=0,
            )
    finally:
        if seed is not None:
            torch.random.set_rng_state(state)
    responses = out[:, context.shape[1] :].cpu().numpy()
    if responses.shape[1] != length:
        raise RuntimeError(f"generate returned {responses.shape[1]} tokens instead of {length}.")
    return responses
