"""Data parallelism on PyTorch's engines (agents.distributed): 2 gloo processes on CPU under DDP and FSDP2
give the single-process update, FSDP checkpoints restore exactly, and checkpoints of N processes refuse
to resume on M in one line naming both counts."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents import distributed as D
from agents.build import build_agent
from agents.checkpoint import checkpoint_path, save_state
from agents.config import ConfigError, load_config
from agents.runfiles import RunFiles
from agents.train import _resume, train_policy
from textenv.models.trunk import Features

ROOT = Path(__file__).resolve().parent.parent

# (name, algo, overrides): PPO over two accumulated micro-batches (DDP no_sync / FSDP without gradient
# sync on the first), RLOO on the top block only (frozen lower blocks, cached features, and a value head
# that requires a gradient but that a group algorithm does not train: DDP must leave it out)
CASES = [
    ("ppo", "ppo", ["--ppo.minibatches=1", "--ppo.grad_accum=2"]),
    ("rloo_top", "rloo", ["--run.algo=rloo", "--policy.train=top_blocks", "--policy.top_blocks=1"]),
    # bf16 autocast; FSDP gathers bfloat16 weights (MixedPrecisionPolicy), DDP casts float32 ones
    ("ppo_bf16", "ppo", ["--ppo.minibatches=1", "--run.precision=bf16"]),
    # LoRA adapters (peft): only they train, and the reference is the policy with its adapters disabled
    ("ppo_lora", "ppo", ["--ppo.minibatches=1", "--policy.train=lora", "--policy.lora_r=4"]),
]


def config(out, case, *extra):
    return load_config("tiny_toy", [f"--run.out_dir={out}", "--run.tensorboard=false", *case[2], *extra])


def half(batch, rank):
    """Rank ``rank``'s half of a batch of 8 episodes (each half: whole prompt groups)."""
    rows = slice(rank * 4, rank * 4 + 4)
    if hasattr(batch, "index"):
        return batch.index(rows)
    values = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    return type(batch)(
        **{
            k: v if v is None else v.index(rows) if isinstance(v, Features) else v[rows]
            for k, v in values.items()
        }
    )


_SCRIPT = r"""
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[3]); sys.path.insert(0, sys.argv[3] + "/tests")
rank, tmp = int(sys.argv[1]), sys.argv[2]
os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[4])
torch.set_num_threads(1)
from agents import distributed as D
D.init_from_env()
from agents.build import build_agent
from agents.checkpoint import checkpoint_path, load_state, save_state
from test_distributed import CASES, config, half

def params(agent):  # every rank gathers (FSDP), rank 0 keeps them
    return {n: D.full(p.detach()).clone() for n, p in agent.policy.named_parameters()}

ddp_state = None
for mode in ("ddp", "fsdp"):
    for case in CASES:
        cfg = config(f"{tmp}/{mode}-{case[0]}", case, f"--run.parallel={mode}")
        agent = build_agent(cfg)
        assert agent.engine.mode == mode, agent.engine.mode
        batch = half(torch.load(f"{tmp}/{case[0]}.batch.pt", weights_only=False), rank)
        agent.update(batch)
        out = {"params": params(agent)}
        if case[0] == "ppo":
            path = checkpoint_path(f"{tmp}/{mode}/checkpoints", 1, rank)
            save_state(path, {"state": agent.state_dict(), "config": cfg.to_dict()})
            state = load_state(path)["state"]
            again = build_agent(cfg)
            if mode == "ddp":
                ddp_state = state
            else:
                try:
                    again.load_state_dict(ddp_state)
                    raise AssertionError("an FSDP agent loaded a DDP checkpoint")
                except D.ResumeMismatch as exc:
                    out["mismatch"] = str(exc)
            again.load_state_dict(state)
            agent.update(batch)
            again.update(batch)  # the restored optimiser state (FSDP: its shards) steps exactly alike
            out["resumed"] = params(again)
            out["continued"] = params(agent)
        if rank == 0:
            torch.save(out, f"{tmp}/{mode}-{case[0]}.out.pt")
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The single-process updates and the 2-process runs of every case under DDP and FSDP (one launch)."""
    tmp = tmp_path_factory.mktemp("dist")
    torch.set_num_threads(1)
    single = {}
    for case in CASES:
        agent = build_agent(config(tmp / "single", case))
        assert agent.engine.mode == "plain"
        initial = {n: p.detach().clone() for n, p in agent.policy.named_parameters()}
        batch = agent.rollout()
        torch.save(batch, tmp / f"{case[0]}.batch.pt")
        agent.update(batch)
        single[case[0]] = (initial, {n: p.detach().clone() for n, p in agent.policy.named_parameters()})
    (tmp / "dist.py").write_text(_SCRIPT)
    port = str(29800 + os.getpid() % 150)
    env = dict(os.environ, OMP_NUM_THREADS="1", TEXTENV_BACKEND="gloo")
    procs = [
        subprocess.Popen(
            [sys.executable, str(tmp / "dist.py"), str(r), str(tmp), str(ROOT), port],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    return tmp, single


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_two_processes_give_the_single_process_update(two_ranks, mode, case):
    tmp, single = two_ranks
    initial, expected = single[case]
    got = torch.load(tmp / f"{mode}-{case}.out.pt")["params"]
    assert got.keys() == expected.keys()
    moved = 0
    for name, p in got.items():
        if case == "ppo_bf16":
            # bf16 rounds differently on half batches (and FSDP's bf16 layer-norm weights): the update
            # itself agrees within 5% of its norm
            step, want = p - initial[name], expected[name] - initial[name]
            assert (step - want).norm() <= 0.05 * want.norm() + 1e-12, (
                name,
                (step - want).norm(),
                want.norm(),
            )
        else:
            torch.testing.assert_close(
                p, expected[name], atol=2e-6, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}"
            )
        moved += int(not torch.equal(initial[name], expected[name]))
    assert moved > 0


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_a_restored_checkpoint_continues_exactly(two_ranks, mode):
    out = torch.load(two_ranks[0] / f"{mode}-ppo.out.pt")
    for name, p in out["continued"].items():
        assert torch.equal(p, out["resumed"][name]), name
    if mode == "fsdp":
        assert "run.parallel = 'ddp'" in out["mismatch"] and "'fsdp'" in out["mismatch"]


def test_checkpoints_of_two_processes_refuse_one(two_ranks, tmp_path):
    tmp, _ = two_ranks
    for mode in ("ddp", "fsdp"):
        cfg = config(tmp / mode, CASES[0], f"--run.parallel={mode}")
        with pytest.raises(ConfigError) as err:
            train_policy(cfg, resume=True, progress=False)
        msg = str(err.value)
        assert "\n" not in msg and "written by 2 process(es) and this run has 1; resume it on 2" in msg
    # one process's checkpoints on two: the second rank has none of its own
    cfg = config(tmp_path, CASES[0])
    agent = build_agent(cfg)
    save_state(checkpoint_path(tmp_path / "checkpoints", 1, 0), {"state": agent.state_dict(), "config": {}})
    with pytest.raises(ConfigError, match=r"written by 1 process\(es\) and this run has 2; resume on 1\.$"):
        _resume(RunFiles(tmp_path, cfg, 1), agent, None, rank=1, world=2)


def test_the_parallel_setting():
    with pytest.raises(ConfigError) as err:
        load_config("tiny_toy", ["--run.parallel=zero"])
    assert str(err.value) == "run.parallel = 'zero': input should be 'none', 'ddp' or 'fsdp'"
    for mode in ("none", "ddp", "fsdp"):  # one process: always the plain path, nothing wrapped
        assert D.wrap(torch.nn.Linear(2, 2), mode, []).mode == "plain"
    with pytest.raises(ValueError, match="choose one of"):
        D.wrap(torch.nn.Linear(2, 2), "zero", [])


@pytest.mark.parametrize(
    "device, forced, backend",
    [
        ("auto", None, "nccl"),
        ("cuda", None, "nccl"),
        ("cpu", None, "gloo"),
        ("auto", "gloo", "gloo"),
    ],
)
def test_the_process_group_backend_follows_run_device(monkeypatch, device, forced, backend):
    """On a machine with a GPU, ``run.device = "cpu"`` joins over gloo (nccl cannot carry CPU tensors)."""
    seen = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: seen.setdefault("gpu", i))
    monkeypatch.setattr(D.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(D.dist, "init_process_group", lambda backend: seen.setdefault("backend", backend))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    if forced:
        monkeypatch.setenv("TEXTENV_BACKEND", forced)
    else:
        monkeypatch.delenv("TEXTENV_BACKEND", raising=False)
    D.init_from_env(device)
    assert seen["backend"] == backend and seen.get("gpu") == (1 if backend == "nccl" else None)


def test_a_fixed_gpu_is_refused_under_a_launch_of_several_processes(monkeypatch):
    """``run.device = "cuda:1"`` under torchrun would put every rank on GPU 1 (nccl refuses duplicate GPUs
    with an obscure error): refused first, naming the fix; ``"cuda"`` resolves to ``cuda:LOCAL_RANK``."""
    from agents.config import load_config

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(
        ValueError, match=r"run.device='cuda:1' would put all 2 processes .* use run.device='cuda'"
    ):
        D.init_from_env("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert load_config("tiny_toy", ["--run.device=cuda"]).run.torch_device == "cuda:1"


def test_fsdp_gathers_blocks_in_bf16_only_under_bf16():
    policy = D.mixed_precision("bf16")
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert D.mixed_precision("fp32") is None and D.mixed_precision("fp16") is None
