"""Safe checkpoints (agents.checkpoint): exact round trips, damage detection, no unpickling, atomic writes."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.checkpoint import (
    CheckpointError,
    checkpoint_path,
    find_checkpoints,
    latest_intact,
    load_state,
    prune,
    save_state,
)


def assert_same(a, b, where: str = "state") -> None:
    """``a`` and ``b`` are the same structure: same types (tuple vs list, int vs str keys), key order,
    tensor dtypes, shapes and bits, numpy dtypes and bytes, float bits (nan, -0.0)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert [(type(k), k) for k in a] == [(type(k), k) for k in b], where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)), where
    elif isinstance(a, (np.ndarray, np.generic)):
        assert (a.dtype, a.shape) == (b.dtype, b.shape) and a.tobytes() == b.tobytes(), where
    elif isinstance(a, float):
        assert a.hex() == b.hex(), where
    else:
        assert a == b, where


def _train(model: torch.nn.Linear, opt: torch.optim.Optimizer, steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 4, generator=gen), torch.randn(8, 3, generator=gen)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def _agent_state() -> tuple[dict, torch.nn.Linear, torch.optim.Adam]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    _train(model, opt, 2)
    gen = torch.Generator().manual_seed(7)
    torch.rand(3, generator=gen)
    rng = np.random.default_rng(0)
    rng.random(3)
    state = {
        "iteration": 2,
        "trainable": {n: p.detach().clone() for n, p in model.named_parameters()},
        "optimizer": opt.state_dict(),
        "kl_ctl": {"value": 0.2, "target": 6.0, "horizon": math.inf, "floor": -math.inf, "last": math.nan},
        "generator": gen.get_state(),
        "np_rng": rng.bit_generator.state,
        "nested": [1, (2.5, [None, True, False]), {3: "three", "x": (-0.0,)}, [], ()],
        "half": torch.tensor([[1.5, -2.25], [3.0, 1e-3]], dtype=torch.bfloat16),
        "scalar": torch.tensor(3.5),
        "count": torch.tensor(5, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "big": 2**70 + 3,
        "numpy": {"arr": np.arange(6, dtype=">i4").reshape(2, 3), "f": np.float32(0.1), "0d": np.array(2.0)},
    }
    return state, model, opt


def test_round_trip_of_an_agent_state_is_exact_and_resumes_bit_for_bit(tmp_path: Path) -> None:
    state, model, opt = _agent_state()
    path = save_state(checkpoint_path(tmp_path, 2, 0), state)
    assert path == tmp_path / "iter-0000002.rank0"
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "state.json", "state.safetensors"]
    loaded = load_state(path)
    assert_same(state, loaded)
    assert list(loaded["optimizer"]["state"]) == [0, 1]  # int keys stay ints
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)

    fresh = torch.nn.Linear(4, 3)
    with torch.no_grad():
        for n, p in fresh.named_parameters():
            p.copy_(loaded["trainable"][n])
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.01)
    fresh_opt.load_state_dict(loaded["optimizer"])
    _train(model, opt, 1)
    _train(fresh, fresh_opt, 1)
    for (name, a), b in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), name

    gen, resumed = torch.Generator(), torch.Generator()
    gen.set_state(state["generator"])
    resumed.set_state(loaded["generator"])
    assert torch.equal(torch.rand(5, generator=gen), torch.rand(5, generator=resumed))
    rng, rng2 = np.random.default_rng(), np.random.default_rng()
    rng.bit_generator.state, rng2.bit_generator.state = state["np_rng"], loaded["np_rng"]
    assert np.array_equal(rng.random(5), rng2.random(5))
    assert rng.integers(0, 2**62, 4).tolist() == rng2.integers(0, 2**62, 4).tolist()


def test_views_and_shared_storage_are_saved_as_their_values(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    state = {
        "base": base,
        "t": base.t(),
        "row": base[1],
        "again": base,
        "step": base[:, ::2],
        "empty": base[:0],
    }
    loaded = load_state(save_state(tmp_path / "c", state))
    for key, value in state.items():
        assert_same(value.contiguous(), loaded[key], key)


def test_unsupported_values_are_refused_naming_their_path(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="object at 'a/b'"):
        save_state(tmp_path / "c", {"a": {"b": object()}})
    with pytest.raises(TypeError, match="keys must be str or int"):
        save_state(tmp_path / "c", {"a": {(1, 2): 3}})
    assert list(tmp_path.iterdir()) == []


def _truncate(path: Path) -> None:
    data = (path / "state.safetensors").read_bytes()
    (path / "state.safetensors").write_bytes(data[: len(data) // 2])


def _flip(path: Path) -> None:
    data = bytearray((path / "state.safetensors").read_bytes())
    data[-1] ^= 0x01
    (path / "state.safetensors").write_bytes(bytes(data))


def _set_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, **changes}))


DAMAGE = {
    "truncated": (_truncate, r"state\.safetensors: size mismatch \(\d+ bytes, manifest says \d+\)"),
    "flipped byte": (_flip, r"state\.safetensors: checksum mismatch"),
    "no state.json": (lambda p: (p / "state.json").unlink(), r"state\.json: missing"),
    "no manifest": (lambda p: (p / "manifest.json").unlink(), r"manifest\.json: missing"),
    "bad manifest": (lambda p: (p / "manifest.json").write_text("{oops"), r"manifest\.json: unreadable JSON"),
    "new version": (lambda p: _set_manifest(p, version=99), r"manifest\.json: unknown format version 99"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_checkpoint_raises_one_line_naming_the_file(tmp_path: Path, damage: str) -> None:
    path = save_state(checkpoint_path(tmp_path, 6, 0), {"w": torch.arange(64.0), "step": 6})
    spoil, reason = DAMAGE[damage]
    spoil(path)
    with pytest.raises(CheckpointError, match=reason) as info:
        load_state(path)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"checkpoint {path}: ") and "\n" not in str(info.value)
    assert info.value.path == path
    assert pickle.loads(pickle.dumps(info.value)).reason == info.value.reason


def test_a_corrupt_skeleton_with_a_matching_manifest_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = save_state(tmp_path / "c", {"w": torch.ones(2)})
    (path / "state.json").write_text(
        '{"format": "textenv-checkpoint", "version": 1, "state": {"dict": {"w": {"tensor": "nope"}}}}'
    )
    data = (path / "state.json").read_bytes()
    _set_manifest(
        path,
        files={
            "state.safetensors": json.loads((path / "manifest.json").read_text())["files"][
                "state.safetensors"
            ],
            "state.json": {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        },
    )
    with pytest.raises(CheckpointError, match=r"state\.json: unreadable \(KeyError: 'nope'\)"):
        load_state(path)


def test_latest_intact_skips_damaged_newer_checkpoints_with_their_reason(tmp_path: Path) -> None:
    for it in (2, 4, 6):
        save_state(checkpoint_path(tmp_path, it, 0), {"it": it, "w": torch.full((8,), float(it))})
    save_state(checkpoint_path(tmp_path, 9, 1), {"it": 9})  # another rank: never considered
    (tmp_path / ".iter-0000008.rank0.tmp-abc123").mkdir()  # a killed writer's leftover: ignored
    _flip(checkpoint_path(tmp_path, 6, 0))
    assert [p.name for p in find_checkpoints(tmp_path, "iter-*.rank0")] == [
        "iter-0000002.rank0",
        "iter-0000004.rank0",
        "iter-0000006.rank0",
    ]
    intact, damaged = latest_intact(tmp_path, 0)
    assert intact == checkpoint_path(tmp_path, 4, 0)
    assert load_state(intact)["it"] == 4
    assert [(p.name, r.split(" (")[0]) for p, r in damaged] == [
        ("iter-0000006.rank0", "state.safetensors: checksum mismatch")
    ]
    assert latest_intact(tmp_path, 1)[0] == checkpoint_path(tmp_path, 9, 1)


def test_latest_intact_is_none_when_nothing_verifies(tmp_path: Path) -> None:
    assert latest_intact(tmp_path / "missing", 0) == (None, [])
    for it in (1, 2):
        _truncate(save_state(checkpoint_path(tmp_path, it, 0), {"w": torch.ones(16)}))
    intact, damaged = latest_intact(tmp_path, 0)
    assert intact is None
    assert [p.name for p, _ in damaged] == ["iter-0000002.rank0", "iter-0000001.rank0"]
    assert all(r.startswith("state.safetensors: size mismatch") for _, r in damaged)


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = _agent_state()[0]
    path = save_state(tmp_path / "c", state)

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    for module, name in ((pickle, "loads"), (pickle, "load"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    assert_same(state, load_state(path))
    assert latest_intact(tmp_path, 0) == (None, [])


def test_a_failed_replace_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_state(checkpoint_path(tmp_path, 4, 0), {"v": 1})
    real_replace = os.replace

    def killed(src, dst):
        if ".tmp-" in str(src):
            raise OSError("simulated crash while renaming into place")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(OSError, match="simulated crash"):
        save_state(path, {"v": 2})
    monkeypatch.undo()
    assert load_state(path) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter-0000004.rank0"]
    save_state(path, {"v": 3})
    assert load_state(path) == {"v": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter-0000004.rank0"]


def test_leftovers_of_a_killed_writer_are_ignored_then_cleaned(tmp_path: Path) -> None:
    old = save_state(checkpoint_path(tmp_path, 2, 0), {"v": 2})
    # killed while writing iteration 4: a half temp folder
    half = tmp_path / ".iter-0000004.rank0.tmp-0a1b2c"
    shutil.copytree(old, half)
    _truncate(half)
    # killed between moving iteration 3 away and moving its replacement in
    three = save_state(checkpoint_path(tmp_path, 3, 0), {"v": 3})
    os.replace(three, tmp_path / ".iter-0000003.rank0.old-00ff00")
    shutil.copytree(old, tmp_path / ".iter-0000003.rank0.tmp-00ff00")
    other_rank = tmp_path / ".iter-0000004.rank1.tmp-123456"  # rank 1 may be writing it right now
    other_rank.mkdir()

    assert latest_intact(tmp_path, 0) == (old, [])
    assert load_state(old) == {"v": 2}
    save_state(checkpoint_path(tmp_path, 5, 0), {"v": 5})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".iter-0000004.rank1.tmp-123456",
        "iter-0000002.rank0",
        "iter-0000003.rank0",
        "iter-0000005.rank0",
    ]
    assert load_state(three) == {"v": 3}  # the complete old copy was put back
    assert latest_intact(tmp_path, 0) == (checkpoint_path(tmp_path, 5, 0), [])


def test_legacy_pickle_checkpoints_are_refused_never_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    intact = save_state(checkpoint_path(tmp_path, 4, 0), {"v": 4})
    legacy = tmp_path / "iter-0000009.rank0.pt"
    torch.save({"state": {"v": 9}}, legacy)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    assert find_checkpoints(tmp_path) == [intact]
    found, damaged = latest_intact(tmp_path, 0)
    assert found == intact
    assert [p for p, _ in damaged] == [legacy] and "older textenv version" in damaged[0][1]
    with pytest.raises(
        CheckpointError, match=r"iter-0000009\.rank0\.pt: a single-file \(pickle\) checkpoint"
    ) as info:
        load_state(legacy)
    assert "re-run" in str(info.value) and "\n" not in str(info.value)


def test_prune_keeps_the_newest_and_never_the_last_intact(tmp_path: Path) -> None:
    for it in range(1, 6):
        save_state(checkpoint_path(tmp_path, it, 0), {"it": it})
    save_state(checkpoint_path(tmp_path, 1, 1), {"it": 1})
    deleted = prune(tmp_path, 0, keep=3)
    assert [p.name for p in deleted] == ["iter-0000001.rank0", "iter-0000002.rank0"]
    assert [p.name for p in find_checkpoints(tmp_path)] == [
        "iter-0000001.rank1",
        "iter-0000003.rank0",
        "iter-0000004.rank0",
        "iter-0000005.rank0",
    ]
    _flip(checkpoint_path(tmp_path, 4, 0))
    (checkpoint_path(tmp_path, 5, 0) / "state.json").unlink()
    assert [p.name for p in prune(tmp_path, 0, keep=1)] == ["iter-0000004.rank0"]
    assert [p.name for p in find_checkpoints(tmp_path, "iter-*.rank0")] == [
        "iter-0000003.rank0",
        "iter-0000005.rank0",
    ]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    # a caller that has just written a checkpoint names it as the one to spare (nothing is re-verified)
    save_state(checkpoint_path(tmp_path, 6, 0), {"it": 6})
    spared = checkpoint_path(tmp_path, 3, 0)
    assert [p.name for p in prune(tmp_path, 0, keep=1, spare=spared)] == ["iter-0000005.rank0"]
    assert [p.name for p in find_checkpoints(tmp_path, "iter-*.rank0")] == [
        "iter-0000003.rank0",
        "iter-0000006.rank0",
    ]
