"""The PPO run: configs and overrides, exact resume (in process and after kill -9), the andon cord,
top-k / LoRA training modes, and the same command under ``accelerate launch`` on 2 processes (the
2-process updates under DDP and FSDP: tests/test_distributed.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.build import build_agent
from agents.checkpoint import load_state
from agents.config import apply_overrides, load_config
from agents.loop import TrainingHalted
from agents.train import train_policy

ROOT = Path(__file__).resolve().parent.parent


def tiny_config(tmp_path, *extra):
    return load_config(
        "tiny_toy",
        [f"--run.out_dir={tmp_path / 'run'}", "--run.tensorboard=false", "--run.plot=false", *extra],
    )


def metric_rows(folder):
    rows = [json.loads(x) for x in (Path(folder) / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_overrides_and_config_errors(tmp_path):
    cfg = tiny_config(tmp_path, "--optim.lr=2e-4", "--epochs=3", "--env.overrides.response_length=5")
    assert cfg.optim.lr == 2e-4 and cfg.ppo.epochs == 3 and cfg.env.overrides["response_length"] == 5
    with pytest.raises(ValueError, match="no key 'lrr' in \\[ppo\\]"):
        apply_overrides({}, ["--ppo.lrr=1"])
    with pytest.raises(ValueError, match=r"several tables|in no table"):
        apply_overrides({}, ["--nonsense=1"])
    with pytest.raises(FileNotFoundError, match="presets"):
        load_config("no_such_config")
    with pytest.raises(
        ValueError, match=r"policy\.train = 'half': input should be 'full', 'top_blocks' or 'lora'"
    ):
        tiny_config(tmp_path, "--policy.train=half")


def test_every_shipped_config_loads():
    for path in sorted((ROOT / "configs").glob("*.toml")):
        cfg = load_config(path)
        assert cfg.iterations >= 1, path


def test_run_writes_metrics_samples_curves_and_resumes_exactly(tmp_path):
    full = tiny_config(tmp_path / "a", "--run.plot=true", "--run.tensorboard=true")
    out = train_policy(full, progress=False)
    assert out["iterations"] == 4
    run = Path(out["out_dir"])
    assert (run / "curves.png").stat().st_size > 1000 and any((run / "tensorboard").iterdir())
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert {s["iteration"] for s in samples} == {2, 4}
    # 2 iterations, then resume to 4: the same metrics bit for bit
    part = tiny_config(tmp_path / "b", "--run.iterations=2")
    train_policy(part, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train_policy(part, progress=False)
    train_policy(tiny_config(tmp_path / "b"), resume=True, progress=False)
    assert metric_rows(tmp_path / "b" / "run") == metric_rows(run)
    with pytest.raises(ValueError, match=r"differs from the checkpoint's in \['kl\.coef'\]"):
        train_policy(tiny_config(tmp_path / "b", "--kl.coef=0.5"), resume=True, progress=False)


def _cli(out_dir, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "agents.cli", "train-policy", "--config", "tiny_toy", "--no-progress"]
    cmd += [f"--run.out_dir={out_dir}", "--run.iterations=6", "--run.plot=false", "--run.tensorboard=false"]
    return cmd + list(extra), env


def test_kill_minus_9_then_resume_equals_uninterrupted(tmp_path):
    cmd, env = _cli(tmp_path / "ref")
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True)
    cmd, env = _cli(tmp_path / "killed", "--run.keep_checkpoints=0")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = tmp_path / "killed" / "checkpoints" / "iter-0000003.rank0"
    deadline = time.time() + 120
    while not target.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.exists()
    done = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").glob("iter-*"))
    assert len(done) < 6, f"the run finished before the kill ({done}); nothing was tested"
    cmd, env = _cli(tmp_path / "killed", "--resume")
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True)
    assert metric_rows(tmp_path / "killed") == metric_rows(tmp_path / "ref")


def test_andon_cord_stops_on_nan_and_kl_runaway(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path)
    agent = build_agent(cfg)
    task = agent.envs.task
    task.reward_fn = lambda q, r: np.full(len(q), np.nan)
    with pytest.raises(TrainingHalted, match="non-finite"):
        agent.step()
    # the same through train_policy: halt.json and a resumable checkpoint at the last good iteration
    import agents.train as train_mod

    real_build = train_mod.build_agent

    def nan_after_two(cfg):
        agent = real_build(cfg)
        rt = agent.envs.task
        good = rt.reward_fn
        rt.reward_fn = lambda q, r: good(q, r) if agent.iteration < 2 else np.full(len(q), np.inf)
        return agent

    monkeypatch.setattr(train_mod, "build_agent", nan_after_two)
    with pytest.raises(TrainingHalted):
        train_policy(cfg, progress=False)
    halt = json.loads((tmp_path / "run" / "halt.json").read_text())
    assert halt["iteration"] == 3 and halt["resume_from"].endswith("iter-0000002.rank0")
    # KL runaway: a target far below the KL a high learning rate produces
    cfg = tiny_config(tmp_path / "kl", "--optim.lr=0.05", "--kl.target=0.01", "--halt.kl_patience=2")
    monkeypatch.setattr(train_mod, "build_agent", real_build)
    with pytest.raises(TrainingHalted, match="KL"):
        train_policy(cfg, progress=False)


def test_top_blocks_share_the_frozen_trunk_with_the_reference(tmp_path):
    cfg = tiny_config(tmp_path, "--policy.train=top_blocks", "--policy.top_blocks=1")
    agent = build_agent(cfg)
    policy, ref = agent.policy, agent.reference
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("lm.transformer.h.1.", "lm.transformer.ln_f", "value_head")) for n in trainable
    )
    wte = policy.lm.transformer.wte.weight
    assert (
        ref.lm.transformer.wte.weight is wte
        and ref.lm.transformer.h[0].attn.c_attn.weight is policy.lm.transformer.h[0].attn.c_attn.weight
    )
    assert ref.lm.transformer.h[1].attn.c_attn.weight is not policy.lm.transformer.h[1].attn.c_attn.weight
    # the features path gives the same stats as a full forward
    batch = agent.rollout()
    full = torch.cat([batch.context, batch.responses], 1)
    via_feats = policy.forward_stats(full, agent.context_length, batch.features)
    policy.top_blocks, saved = None, policy.top_blocks
    try:
        direct = policy.forward_stats(full, agent.context_length)
    finally:
        policy.top_blocks = saved
    torch.testing.assert_close(via_feats.logprobs, direct.logprobs, atol=1e-5, rtol=1e-5)
    m = agent.step()
    assert abs(m["objective/kl"]) < 1e-4
    m = agent.step()
    assert m["objective/kl"] != 0.0  # the top block moved
    lower_before = ref.lm.transformer.h[0].mlp.c_fc.weight.clone()
    assert torch.equal(policy.lm.transformer.h[0].mlp.c_fc.weight, lower_before)


def test_lora_trains_only_adapters_and_reference_is_the_base(tmp_path):
    pytest.importorskip("peft")
    cfg = tiny_config(tmp_path, "--policy.train=lora", "--policy.lora_r=4")
    agent = build_agent(cfg)
    trainable = [n for n, p in agent.policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("value_head") for n in trainable)
    m1 = agent.step()
    assert abs(m1["objective/kl"]) < 1e-4
    for _ in range(2):
        m = agent.step()
    assert m["objective/kl"] != 0.0  # the adapters moved the policy away from the base
    vf_coef = agent.config.vf_coef
    assert m["ppo/loss/total"] == pytest.approx(
        m["ppo/loss/policy"] + vf_coef * m["ppo/loss/value"], rel=1e-5
    )


def test_the_same_command_under_accelerate_launch(tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate's launcher is not installed next to this python")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += [
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(29700 + os.getpid() % 200),
    ]
    cmd += ["-m", "agents.cli", "train-policy", "--config", "tiny_toy", "--no-progress"]
    cmd += [f"--run.out_dir={tmp_path}", "--run.iterations=2", "--run.plot=false", "--run.tensorboard=false"]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True, timeout=300)
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("iter-*"))
    assert "iter-0000002.rank0" in ckpts and "iter-0000002.rank1" in ckpts
    state0 = load_state(tmp_path / "checkpoints" / "iter-0000002.rank0")["state"]
    state1 = load_state(tmp_path / "checkpoints" / "iter-0000002.rank1")["state"]
    assert state0["world"] == 2 and state0["rank"] == 0 and state1["rank"] == 1
    for name, t in state0["trainable"].items():  # all-reduced gradients keep the replicas identical
        torch.testing.assert_close(t, state1["trainable"][name])
    assert len(metric_rows(tmp_path)) == 2


def test_separate_value_network_from_a_reward_model(tmp_path):
    from rewards.model import RewardModel

    rm = RewardModel.from_spec("tiny-gpt2", seed=3)
    rm.save(tmp_path / "rm")
    cfg = tiny_config(tmp_path, f"--policy.value={tmp_path / 'rm'}")
    agent = build_agent(cfg)
    policy = agent.policy
    assert policy.value_head is None and policy.value_model is not None
    assert any(n.startswith("value_model.") for n, p in policy.named_parameters() if p.requires_grad)
    batch = agent.rollout()
    assert batch.values.abs().sum() > 0  # initialised from the reward model's head, not zero
    before = policy.value_model.head.weight.detach().clone()
    agent.step()
    assert not torch.equal(before, policy.value_model.head.weight)


def test_resume_skips_a_damaged_newest_checkpoint_and_never_unpickles(tmp_path, monkeypatch, capsys):
    import pickle

    full = train_policy(tiny_config(tmp_path / "a"), progress=False)
    part = tiny_config(tmp_path / "b", "--run.iterations=3", "--run.keep_checkpoints=0")
    train_policy(part, progress=False)
    ckpts = tmp_path / "b" / "run" / "checkpoints"
    newest = ckpts / "iter-0000003.rank0" / "state.safetensors"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the checksum no longer matches
    newest.write_bytes(bytes(data))
    (ckpts / "iter-0000009.rank0.pt").write_bytes(pickle.dumps({"evil": 1}))  # a legacy pickle: never loaded

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    out = train_policy(tiny_config(tmp_path / "b"), resume=True, progress=False)
    err = capsys.readouterr().err
    assert "iter-0000003.rank0 is damaged (state.safetensors: checksum mismatch" in err
    assert "resuming from iter-0000002.rank0" in err and "iter-0000009.rank0.pt" in err
    assert out["start"] == 2 and out["iterations"] == full["iterations"] == 4
    assert metric_rows(tmp_path / "b" / "run") == metric_rows(tmp_path / "a" / "run")


def test_a_kl_halt_checkpoints_the_exact_state_and_resume_may_relax_the_halt(tmp_path, capsys):
    ref = train_policy(tiny_config(tmp_path / "ref"), progress=False)
    halting = tiny_config(tmp_path / "h", "--halt.kl_threshold=0.001", "--halt.kl_patience=1")
    with pytest.raises(TrainingHalted, match=r"halt\.kl_threshold"):
        train_policy(halting, progress=False)
    halt = json.loads((tmp_path / "h" / "run" / "halt.json").read_text())
    assert 2 <= halt["iteration"] <= 4
    # the checkpoint written at the halt is the state after the previous iteration, RNGs included: resuming
    # with the halt rule relaxed (allowed on --resume) reproduces the uninterrupted run bit for bit
    out = train_policy(tiny_config(tmp_path / "h", "--halt.kl_patience=0"), resume=True, progress=False)
    assert out["start"] == halt["iteration"] - 1 and out["iterations"] == ref["iterations"]
    assert "resuming with changed ['halt.kl_threshold', 'halt.kl_patience']" in capsys.readouterr().err
    assert metric_rows(tmp_path / "h" / "run") == metric_rows(tmp_path / "ref" / "run")
    with pytest.raises(
        ValueError, match=r"in \['run.algo'\]; only \[halt\], .*run\.iterations, .*may change"
    ):
        train_policy(tiny_config(tmp_path / "h", "--algo=rloo"), resume=True, progress=False)


def test_an_empty_config_or_a_missing_model_is_a_config_error(tmp_path):
    from agents.config import ConfigError

    empty = tmp_path / "empty.toml"
    empty.write_text("\n# nothing\n")
    with pytest.raises(ConfigError, match="the config file is empty"):
        load_config(empty)
    with pytest.raises(ConfigError, match=r"\[policy\] top_blocks=99"):
        build_agent(tiny_config(tmp_path, "--policy.train=top_blocks", "--policy.top_blocks=99"))


def test_kl_stop_at_target_ends_the_run_after_the_first_iteration_at_the_target(tmp_path, capsys):
    """``kl.stop_at_target`` (a KL budget): the run ends, with a checkpoint, after the first iteration whose
    KL reaches the target; every iteration before it is the unstopped run's, and it ends no halt."""
    ref = train_policy(tiny_config(tmp_path / "ref", "--kl.target=0.02"), progress=False)
    out = train_policy(
        tiny_config(tmp_path / "s", "--kl.target=0.02", "--kl.stop_at_target=true"), progress=False
    )
    kls = [r["objective/kl"] for r in metric_rows(tmp_path / "s" / "run")]
    # the tiny run's KLs are about 0, -0.03, 0.05, -0.01: two iterations under the target, then the stop
    assert 2 <= out["iterations"] < ref["iterations"] and len(kls) == out["iterations"]
    assert kls[-1] >= 0.02 and all(k < 0.02 for k in kls[:-1])
    assert out["stopped"] == f"KL {kls[-1]:.3g} reached kl.target 0.02"
    assert metric_rows(tmp_path / "s" / "run") == metric_rows(tmp_path / "ref" / "run")[: out["iterations"]]
    assert (tmp_path / "s" / "run" / "checkpoints").is_dir() and not (
        tmp_path / "s" / "run" / "halt.json"
    ).exists()
    assert ref["stopped"] is None
    # the budget may be lifted on resume: the run goes on exactly as the one that never stopped
    resumed = train_policy(
        tiny_config(tmp_path / "s", "--kl.target=0.02", "--kl.stop_at_target=false"),
        resume=True,
        progress=False,
    )
    assert resumed["stopped"] is None and resumed["iterations"] == ref["iterations"]
    assert metric_rows(tmp_path / "s" / "run") == metric_rows(tmp_path / "ref" / "run")
    assert "resuming with changed ['kl.stop_at_target']" in capsys.readouterr().err


def test_kl_stop_window_stops_on_the_mean_kl_of_the_last_iterations(tmp_path):
    """``kl.stop_window = 3``: the budget reads the mean KL of the last 3 iterations (fewer at the start),
    checked against a plain loop over the unstopped run's KLs, and the stop message says so."""
    from agents.config import ConfigError
    from agents.train import reached_kl_budget

    ref = train_policy(tiny_config(tmp_path / "ref"), progress=False)
    kls = [r["objective/kl"] for r in metric_rows(tmp_path / "ref" / "run")]
    assert len(kls) >= 4
    target = (kls[1] + kls[2] + kls[3]) / 3 - 1e-9  # the window of iterations 2-4 reaches it
    first = next(
        i
        for i in range(len(kls))
        if sum(kls[max(0, i - 2) : i + 1]) / len(kls[max(0, i - 2) : i + 1]) >= target
    )
    cfg = tiny_config(
        tmp_path / "s", f"--kl.target={target!r}", "--kl.stop_at_target=true", "--kl.stop_window=3"
    )
    out = train_policy(cfg, progress=False)
    assert out["iterations"] == first + 1 < ref["iterations"]
    w = min(3, first + 1)
    mean = sum(kls[first + 1 - w : first + 1]) / w
    assert out["stopped"] == (
        f"KL {mean:.3g}{f' (mean of the last {w})' if w > 1 else ''} reached kl.target {target:g}"
    )

    # the function itself, on made-up KLs (none recorded: no stop)
    def with_kl(**kl):
        return tiny_config(
            tmp_path, "--kl.stop_at_target=true", *(f"--kl.{k}={str(v).lower()}" for k, v in kl.items())
        )

    hist = [3.0, 0.0, 0.0, 2.5]
    assert reached_kl_budget(with_kl(target=2.0, stop_window=3), hist[:1])  # 3.0 alone
    assert not reached_kl_budget(with_kl(target=2.0, stop_window=3), hist)  # (0 + 0 + 2.5) / 3
    assert reached_kl_budget(with_kl(target=2.0, stop_window=1), hist)
    assert not reached_kl_budget(with_kl(target=2.0, stop_window=1), [])  # no KL recorded yet
    assert not reached_kl_budget(with_kl(target=2.0, stop_at_target=False), hist)
    with pytest.raises(ConfigError, match=r"kl\.stop_window = 0: input should be greater than or equal to 1"):
        tiny_config(tmp_path, "--kl.stop_window=0")


def test_kl_stop_window_after_a_resume_stops_where_the_uninterrupted_run_stops(tmp_path):
    """The agent checkpoints its last KLs: a run cut short and resumed reads the same 3-iteration window
    as one that never stopped, so it stops at the same iteration with the same message."""
    kls = [r["objective/kl"] for r in _unstopped_kls(tmp_path)]
    target = (kls[1] + kls[2] + kls[3]) / 3 - 1e-9
    stop = [f"--kl.target={target!r}", "--kl.stop_at_target=true", "--kl.stop_window=3"]
    whole = train_policy(tiny_config(tmp_path / "whole", *stop), progress=False)
    n = whole["iterations"]
    assert n >= 2
    cut = train_policy(
        tiny_config(tmp_path / "cut", *stop, f"--run.iterations={n - 1}", "--run.checkpoint_every=1"),
        progress=False,
    )
    assert cut["stopped"] is None and cut["iterations"] == n - 1
    resumed = train_policy(tiny_config(tmp_path / "cut", *stop), resume=True, progress=False)
    assert resumed["iterations"] == n and resumed["stopped"] == whole["stopped"]
    assert metric_rows(tmp_path / "cut" / "run") == metric_rows(tmp_path / "whole" / "run")
    # killed after its last checkpoint, before it exited: the resume ends at once, no extra iteration
    again = train_policy(tiny_config(tmp_path / "whole", *stop), resume=True, progress=False)
    assert again["iterations"] == n and again["stopped"] == whole["stopped"]
    assert metric_rows(tmp_path / "whole" / "run") == metric_rows(tmp_path / "cut" / "run")


def _unstopped_kls(tmp_path):
    train_policy(tiny_config(tmp_path / "ref"), progress=False)
    return metric_rows(tmp_path / "ref" / "run")


def test_a_checkpoint_from_before_fused_adam_ran_the_loop_and_may_switch(tmp_path, capsys):
    """A checkpoint without ``optim.fused`` ran Adam's loop: it compares as ``fused = false`` (resuming
    with today's default is a named change, allowed), and ``online.reward.fused`` may change on resume."""
    from agents.runfiles import _check_resumable, _with_defaults

    mine = tiny_config(tmp_path).to_dict()
    old = json.loads(json.dumps(mine))
    del old["optim"]["fused"]
    assert _with_defaults(old)["optim"]["fused"] is False
    _check_resumable(mine, _with_defaults(old))  # allowed, and said
    assert "resuming with changed ['optim.fused']" in capsys.readouterr().err
    online = tiny_config(tmp_path, "--online.enabled=true").to_dict()
    other = json.loads(json.dumps(online))
    other["online"]["reward"]["fused"] = not online["online"]["reward"]["fused"]
    _check_resumable(online, other)  # no error


def test_resume_names_nested_changes_by_their_dotted_key(tmp_path, capsys):
    """Keys are compared at any depth: a change inside a nested table (online.reward, env.overrides) is
    named by its dotted key, a key only the checkpoint has counts, and online.reward.fused (allowed) is
    said like optim.fused."""
    from agents.config import ConfigError
    from agents.runfiles import _check_resumable

    mine = tiny_config(tmp_path, "--online.enabled=true").to_dict()
    theirs = json.loads(json.dumps(mine))
    theirs["online"]["reward"]["lr"] = 0.5
    with pytest.raises(ConfigError, match=r"in \['online\.reward\.lr'\]; only \[halt\], kl\.stop_at_target"):
        _check_resumable(mine, theirs)
    theirs = json.loads(json.dumps(mine))
    theirs["env"]["overrides"] = {**mine["env"]["overrides"], "query_length": 99}
    with pytest.raises(ConfigError, match=r"in \['env\.overrides\.query_length'\]"):
        _check_resumable(mine, theirs)
    theirs = json.loads(json.dumps(mine))
    theirs["run"]["algo"] = "rloo"
    theirs["run"]["iterations"] = mine["run"]["iterations"] + 5  # allowed, not named
    with pytest.raises(ConfigError, match=r"in \['run\.algo'\]"):
        _check_resumable(mine, theirs)
    theirs = json.loads(json.dumps(mine))
    theirs["online"]["reward"]["fused"] = not mine["online"]["reward"]["fused"]
    theirs["halt"]["kl_patience"] = 7
    _check_resumable(mine, theirs)
    assert "resuming with changed ['halt.kl_patience', 'online.reward.fused']" in capsys.readouterr().err


def test_resuming_on_another_float32_kernel_is_said(tmp_path, monkeypatch, capsys):
    """A checkpoint records the float32 CPU kernel it ran on; resuming on the other one continues (the
    numbers differ in the last bits only) and says so, naming the setting that would replay it."""
    monkeypatch.setenv("TEXTENV_CPU_MATMUL", "blas")
    train_policy(tiny_config(tmp_path), progress=False)
    capsys.readouterr()
    more = tiny_config(tmp_path, "--run.iterations=5")
    train_policy(more, resume=True, progress=False)
    assert "float32 kernel" not in capsys.readouterr().err  # the same kernel: nothing to say
    monkeypatch.setenv("TEXTENV_CPU_MATMUL", "onednn")
    train_policy(tiny_config(tmp_path, "--run.iterations=6"), resume=True, progress=False)
    err = capsys.readouterr().err
    assert "resuming on the onednn float32 kernel where the checkpoint ran on blas" in err
    assert "set TEXTENV_CPU_MATMUL=blas for that" in err


def test_a_checkpoint_from_before_a_new_config_key_resumes_with_its_default(tmp_path):
    """A checkpoint written by an older version lacks the keys added since (e.g. kl.stop_at_target): they
    compare as their defaults, the behaviour it ran with, and a key that really differs is still named."""
    from agents.config import ConfigError
    from agents.runfiles import _check_resumable, _with_defaults

    mine = tiny_config(tmp_path).to_dict()
    old = json.loads(json.dumps(mine))
    del old["kl"]["stop_at_target"]
    _check_resumable(mine, _with_defaults(old))  # no error
    old["ppo"]["gamma"] = 0.5
    with pytest.raises(ConfigError, match=r"differs from the checkpoint's in \['ppo.gamma'\]"):
        _check_resumable(mine, _with_defaults(old))
