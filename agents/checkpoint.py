"""Safe run checkpoints: tensors in safetensors, everything else in JSON, never a pickle.

A checkpoint is a folder (``checkpoints/iter-0000004.rank0/``): ``state.safetensors`` (tensors and numpy
arrays, keyed by their path in the state), ``state.json`` (the rest, with typed placeholders so tuples, int
keys, big ints and inf/nan come back exactly) and ``manifest.json`` (format version, sizes, SHA-256s).
Written in a hidden sibling folder, fsynced and renamed into place: a kill -9 never leaves a half checkpoint
under the final name. Loading verifies the manifest first and never unpickles; tensors come back on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from textenv.asset_cache import sha256_file

FORMAT, VERSION = "textenv-checkpoint", 1
FILES = ("state.safetensors", "state.json")
_NAME = re.compile(r"iter-(\d{7,})\.rank(\d+)")
_TEMP = re.compile(r"\.(.+)\.(tmp|old|del)-[0-9a-f]+")
_LEGACY = (
    "a single-file (pickle) checkpoint from an older textenv version; it is never loaded, since unpickling "
    "can run code: re-run the training, or convert it yourself in a session you trust"
)
_BIG = 2**53  # ints beyond this are stored as strings, so any JSON reader keeps them exact


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: ``path`` and a one-line ``reason`` naming the bad file."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"checkpoint {self.path}: {reason}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.path, self.reason))


def _put(tensors: dict[str, torch.Tensor], seen: set[int], key: str, t: torch.Tensor) -> str:
    """Add ``t`` to ``tensors`` under a unique key, as a contiguous CPU tensor owning its storage."""
    if t.layout != torch.strided:
        raise TypeError(f"cannot checkpoint the {t.layout} tensor at {key!r}")
    t = t.detach().cpu().resolve_conj().resolve_neg().contiguous()
    storage = t.untyped_storage()
    if storage.data_ptr() in seen or storage.nbytes() != t.nbytes:  # shared or a view: own copy
        t = t.clone()
    seen.add(t.untyped_storage().data_ptr())
    key, n = key or ".", 1
    while key in tensors:
        key, n = f"{key.rsplit('#', 1)[0]}#{n}", n + 1
    tensors[key] = t
    return key


def _sub(path: str, key: object) -> str:
    """The path of ``key`` inside ``path`` (``optimizer/state/0/exp_avg``)."""
    return f"{path}/{key}" if path else str(key)


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor], seen: set[int]) -> Any:
    """The JSON skeleton of ``obj``; tensors and arrays go into ``tensors``. Tags are one-key dicts."""
    if isinstance(obj, torch.Tensor):
        return {"tensor": _put(tensors, seen, path, obj)}
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.hasobject or obj.dtype.fields is not None:
            raise TypeError(f"cannot checkpoint the numpy {obj.dtype} value at {path!r}")
        if isinstance(obj, np.generic):
            return {"npscalar": [obj.dtype.str, obj.tobytes().hex()]}
        raw = np.ascontiguousarray(obj).reshape(-1).view(np.uint8)
        raw = torch.from_numpy(raw if raw.flags.writeable else raw.copy())
        return {"ndarray": [_put(tensors, seen, path, raw), obj.dtype.str, list(obj.shape)]}
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, int):
        return int(obj) if -_BIG < obj < _BIG else {"int": str(int(obj))}
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else {"float": repr(float(obj))}
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, _sub(path, i), tensors, seen) for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else {"tuple": items}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"dict": {k: _encode(v, _sub(path, k), tensors, seen) for k, v in obj.items()}}
        if all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in obj):
            pairs = [
                [_encode(k, "", {}, set()), _encode(v, _sub(path, k), tensors, seen)] for k, v in obj.items()
            ]
            return {"items": pairs}
        raise TypeError(f"cannot checkpoint the dict at {path!r}: keys must be str or int")
    raise TypeError(f"cannot checkpoint the {type(obj).__name__} at {path!r}")


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of ``_encode``."""
    if isinstance(node, list):
        return [_decode(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    ((tag, val),) = node.items()
    if tag == "tensor":
        return tensors[val]
    if tag == "ndarray":
        return tensors[val[0]].numpy().view(np.dtype(val[1])).reshape(val[2])
    if tag == "npscalar":
        return np.frombuffer(bytes.fromhex(val[1]), dtype=np.dtype(val[0]))[0]
    if tag in ("int", "float"):
        return int(val) if tag == "int" else float(val)
    if tag == "tuple":
        return tuple(_decode(v, tensors) for v in val)
    if tag == "dict":
        return {k: _decode(v, tensors) for k, v in val.items()}
    if tag == "items":
        return {_decode(k, tensors): _decode(v, tensors) for k, v in val}
    raise ValueError(f"unknown placeholder {tag!r}")


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk (folders only where the OS allows it)."""
    if path.is_dir() and os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _order(p: Path) -> tuple[int, int, bool]:
    """(iteration, rank, is a folder) of ``iter-<I>.rank<R>[.pt]``; (-1, -1, False) for other names."""
    match = _NAME.fullmatch(p.name.removesuffix(".pt"))
    return (int(match.group(1)), int(match.group(2)), p.is_dir()) if match else (-1, -1, False)


def _clean_leftovers(path: Path) -> None:
    """Remove what killed writers of this rank (or of ``path``) left next to ``path``.

    A checkpoint renamed away (``.old-``) whose replacement never arrived is put back instead.
    """
    rank = _order(path)[1]
    for entry in path.parent.iterdir():
        temp = _TEMP.fullmatch(entry.name)
        target = entry.parent / temp.group(1) if temp else path
        if not temp or (target != path and (rank < 0 or _order(target)[1] != rank)):
            continue  # not ours: another rank's writer may be using it right now
        if temp.group(2) == "old" and not target.exists():
            os.replace(entry, target)
        else:
            shutil.rmtree(entry, ignore_errors=True)


def recover(ckpt_dir: Path, rank: int) -> None:
    """Put back the checkpoints of ``rank`` that a kill caught while they were being replaced (renamed
    away, the new one not yet in place), and remove that rank's killed writers' temporary folders. Call
    it only while no writer of ``rank`` runs (before resuming)."""
    if Path(ckpt_dir).is_dir():
        _clean_leftovers(checkpoint_path(ckpt_dir, 0, rank))


def save_state(path: Path, state: dict) -> Path:
    """Write ``state`` as the checkpoint folder ``path`` atomically (replacing one there); return it."""
    path = Path(path)
    if not isinstance(state, dict):
        raise TypeError(f"a checkpoint state is a dict, not {type(state).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = {"format": FORMAT, "version": VERSION, "state": _encode(state, "", tensors, set())}
    token = secrets.token_hex(6)
    tmp, old = (path.parent / f".{path.name}.{kind}-{token}" for kind in ("tmp", "old"))
    tmp.mkdir()
    try:
        save_file(tensors, tmp / FILES[0], metadata={"format": "pt"})
        (tmp / FILES[1]).write_text(json.dumps(skeleton, allow_nan=False))
        files = {
            name: {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)} for name in FILES
        }
        (tmp / "manifest.json").write_text(
            json.dumps({"format": FORMAT, "version": VERSION, "files": files}, indent=1)
        )
        for name in (*FILES, "manifest.json", ""):
            _fsync(tmp / name)
        if path.exists():
            os.replace(path, old)  # a folder cannot be replaced by a rename: move the old one away first
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        if old.exists() and not path.exists():
            os.replace(old, path)  # the new one never arrived: put the old one back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path


def _problem(path: Path) -> str | None:
    """What is wrong with the checkpoint folder ``path`` (file named first), or None if it verifies."""
    if path.is_file():
        return _LEGACY
    if not path.is_dir():
        return "no such checkpoint folder"
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        return "manifest.json: missing (an interrupted or foreign write)"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"manifest.json: unreadable JSON ({exc})"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return f"manifest.json: not a {FORMAT} manifest"
    if manifest.get("version") != VERSION:
        return (
            f"manifest.json: unknown format version {manifest.get('version')!r} (this code reads {VERSION})"
        )
    for name in FILES:
        entry = manifest["files"].get(name) if isinstance(manifest.get("files"), dict) else None
        if not isinstance(entry, dict):
            return f"manifest.json: no entry for {name}"
        if not (path / name).is_file():
            return f"{name}: missing"
        if (size := (path / name).stat().st_size) != entry.get("bytes"):
            return f"{name}: size mismatch ({size} bytes, manifest says {entry.get('bytes')})"
        if sha256_file(path / name) != entry.get("sha256"):
            return f"{name}: checksum mismatch (SHA-256 differs from the manifest)"
    return None


def verify(path: Path) -> None:
    """Check ``path`` against its manifest (presence, version, sizes, SHA-256); raise CheckpointError if bad."""
    if reason := _problem(Path(path)):
        raise CheckpointError(path, reason)


def load_state(path: Path) -> dict:
    """Verify the checkpoint folder ``path``, then rebuild the state ``save_state`` wrote; never unpickles."""
    path = Path(path)
    verify(path)
    try:
        tensors = load_file(path / FILES[0])
    except Exception as exc:
        raise CheckpointError(path, f"{FILES[0]}: unreadable ({str(exc).splitlines()[0]})") from None
    try:
        skeleton = json.loads((path / FILES[1]).read_text())
        if skeleton.get("format") != FORMAT or skeleton.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} version {VERSION} state")
        return _decode(skeleton["state"], tensors)
    except Exception as exc:
        raise CheckpointError(path, f"{FILES[1]}: unreadable ({type(exc).__name__}: {exc})") from None


def checkpoint_path(ckpt_dir: Path, iteration: int, rank: int) -> Path:
    """``ckpt_dir/iter-<iteration, 7 digits>.rank<rank>``."""
    return Path(ckpt_dir) / f"iter-{iteration:07d}.rank{rank}"


def find_checkpoints(ckpt_dir: Path, pattern: str = "iter-*.rank*") -> list[Path]:
    """Checkpoint folders in ``ckpt_dir`` matching the glob ``pattern`` and ``iter-<7 digits>.rank<R>``,
    oldest first (temporary folders and legacy ``.pt`` files are not checkpoints)."""
    return sorted(
        (p for p in Path(ckpt_dir).glob(pattern) if _NAME.fullmatch(p.name) and p.is_dir()), key=_order
    )


def ranks_written(ckpt_dir: Path) -> set[int]:
    """The ranks that have checkpoint folders in ``ckpt_dir`` (a run on N processes writes ranks 0..N-1)."""
    return {_order(p)[1] for p in find_checkpoints(ckpt_dir)}


def latest_intact(ckpt_dir: Path, rank: int) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint of ``rank`` that verifies, and the newer ones that do not with the reason.

    Legacy ``iter-*.rank<R>.pt`` pickles newer than it are listed too (as refused), never returned.
    """
    legacy = [p for p in Path(ckpt_dir).glob(f"iter-*.rank{rank}.pt") if _order(p)[1] == rank and p.is_file()]
    damaged: list[tuple[Path, str]] = []
    for path in sorted(
        [*find_checkpoints(ckpt_dir, f"iter-*.rank{rank}"), *legacy], key=_order, reverse=True
    ):
        if (reason := _problem(path)) is None:
            return path, damaged
        damaged.append((path, reason))
    return None, damaged


def prune(ckpt_dir: Path, rank: int, keep: int, spare: Path | None = None) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints of ``rank``, sparing the newest intact one (``spare``
    when the caller knows it, e.g. the one it has just written; else found by verifying); return the
    deleted ones. Each is renamed away before it is deleted, so none is ever half-deleted in place."""
    intact = spare if spare is not None else latest_intact(ckpt_dir, rank)[0]
    found = find_checkpoints(ckpt_dir, f"iter-*.rank{rank}")
    doomed = [p for p in found[: max(len(found) - max(keep, 0), 0)] if p != intact]
    for path in doomed:
        gone = path.parent / f".{path.name}.del-{secrets.token_hex(6)}"
        os.replace(path, gone)
        shutil.rmtree(gone, ignore_errors=True)
    return doomed
