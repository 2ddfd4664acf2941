"""Model plumbing: loading causal LMs and tokenizers, padding, trunk splitting, sampling.

The layers inside (each imports only those below it): ``loading`` -> ``tokenization`` -> ``textenv.assets``;
``trunk``, ``sampling`` and ``cpu_linear`` (float32 CPU linear layers through oneDNN) stand apart.
``from textenv.models import load_causal_lm`` is the public entry.
"""

from textenv.models.loading import (
    EMBEDDED_DEFAULT,
    TINY_MODELS,
    ModelUnavailableError,
    embedded_available,
    hub_reachable,
    load_causal_lm,
    load_tokenizer,
    resolve_spec,
    set_dropout,
)

__all__ = [
    "EMBEDDED_DEFAULT",
    "TINY_MODELS",
    "ModelUnavailableError",
    "embedded_available",
    "hub_reachable",
    "load_causal_lm",
    "load_tokenizer",
    "resolve_spec",
    "set_dropout",
]
