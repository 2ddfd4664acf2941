"""2-process data parallelism: this checkout's engine (``run.parallel``, DDP by default) against another
checkout (e.g. the hand-written flat-buffer all-reduce before it), side by side on the same config.

Each run is ``torchrun --nproc_per_node 2 -m agents.cli train-policy`` on ``tiny_toy`` (a random tiny GPT-2,
gloo on CPU, one thread per rank), with the batch and response length given here; the checkouts alternate
``--repeats`` times so that drift in the machine's load hits both. Reported per checkout: the median over
runs of the median iteration (the first, warm-up iteration dropped) as seconds per episode, and of the
update phase alone (where the gradients are averaged):

    git worktree add /tmp/handwritten 672f06a
    python -m benchmarks.bench_distributed --other /tmp/handwritten [--repeats 3] [--iterations 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def torchrun(port: int) -> list[str]:
    """The launcher of 2 ranks on this machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
    ]


def run(root: Path, args, extra: list[str], port: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = torchrun(port)
        cmd += ["-m", "agents.cli", "train-policy", "--config", "tiny_toy", "--no-progress"]
        cmd += [
            f"--run.out_dir={out}",
            f"--run.iterations={args.iterations}",
            "--run.plot=false",
            "--run.tensorboard=false",
            "--run.checkpoint_every=0",
            f"--ppo.batch_size={args.batch}",
            f"--ppo.total_episodes={args.batch * args.iterations}",
            f"--ppo.minibatches={args.minibatches}",
            f"--env.overrides.response_length={args.response_length}",
            *extra,
        ]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root), TEXTENV_BACKEND="gloo")
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True, timeout=1200)
        rows = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines() if x.strip()][
            1:
        ]
    return {
        "iteration_s": statistics.median(r["time/iteration"] for r in rows),
        "update_s": statistics.median(r["time/update"] for r in rows),
    }


def handwritten_average(params) -> None:
    """The flat-buffer all-reduce after the backward pass that DDP replaced (agents/distributed.py at
    672f06a, verbatim)."""
    import torch
    import torch.distributed as dist

    world = dist.get_world_size()
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def ab_worker(args) -> None:
    """In one 2-process group: a DDP agent and a plain agent whose gradients the hand-written all-reduce
    averages, their updates of the same rollout timed alternately (the machine's load hits both alike)."""
    import time

    import torch
    import torch.distributed as dist

    from agents import distributed as D
    from agents import loop, ppo
    from agents.build import build_agent
    from agents.config import load_config

    D.init_from_env()
    torch.set_num_threads(1)
    cfg = load_config(
        "tiny_toy",
        [
            f"--run.out_dir={args.worker}",
            f"--ppo.batch_size={args.batch}",
            f"--ppo.minibatches={args.minibatches}",
            f"--env.overrides.response_length={args.response_length}",
        ],
    )
    agents = {"ddp": build_agent(cfg)}
    wrap, D.wrap = D.wrap, lambda policy, parallel, trainable: D.Engine(policy)
    agents["handwritten"] = build_agent(cfg)
    D.wrap = wrap
    original = loop.checked_grad_norm

    def handwritten(params, iteration, loss):
        handwritten_average(params)
        return original(params, iteration, loss)

    batch = agents["ddp"].rollout()
    times: dict[str, list[float]] = {k: [] for k in agents}
    for i in range(args.ab_updates + 1):
        for name in list(agents)[:: 1 if i % 2 == 0 else -1]:
            ppo.checked_grad_norm = handwritten if name == "handwritten" else original
            dist.barrier()
            t0 = time.perf_counter()
            agents[name].update(batch)
            dist.barrier()
            if i:  # the first round warms up
                times[name].append(time.perf_counter() - t0)
    if dist.get_rank() == 0:
        (args.worker / "ab.json").write_text(json.dumps(times))
    dist.destroy_process_group()


def update_ab(args) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = torchrun(29399)
        cmd += ["-m", "benchmarks.bench_distributed", "--other", ".", "--worker", out]
        cmd += [
            f"--ab-updates={args.ab_updates}",
            f"--batch={args.batch}",
            f"--minibatches={args.minibatches}",
        ]
        cmd += [f"--response-length={args.response_length}"]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), TEXTENV_BACKEND="gloo")
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=1200)
        times = json.loads((Path(out) / "ab.json").read_text())
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "updates": args.ab_updates,
        "median_update_s": med,
        "ddp_over_handwritten": med["ddp"] / med["handwritten"],
        "per_update_ratios_median": statistics.median(
            a / b for a, b in zip(times["ddp"], times["handwritten"])
        ),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--other", type=Path, required=True, help="the other checkout (a git worktree)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--iterations", type=int, default=6)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--minibatches", type=int, default=4)
    p.add_argument("--response-length", type=int, default=16)
    p.add_argument("--parallel", default="ddp", help="this checkout's run.parallel")
    p.add_argument("--ab-updates", type=int, default=0, help="also time N updates of each, interleaved")
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        return ab_worker(args)
    sides = {"this": (ROOT, [f"--run.parallel={args.parallel}"]), "other": (args.other.resolve(), [])}
    results: dict[str, list[dict]] = {k: [] for k in sides}
    for i in range(args.repeats):
        for name in list(sides)[:: 1 if i % 2 == 0 else -1]:  # alternate which side goes first
            root, extra = sides[name]
            results[name].append(run(root, args, extra, 29400 + i * 2 + (name == "other")))
            print(name, results[name][-1], file=sys.stderr)
    ab = update_ab(args) if args.ab_updates else None
    if not args.repeats:
        print(json.dumps({"config": {k: v for k, v in vars(args).items() if k != "other"}, "update_ab": ab}))
        return
    summary = {
        "config": {k: v for k, v in vars(args).items() if k != "other"},
        "other": str(args.other),
        **{
            name: {
                "s_per_episode": statistics.median(r["iteration_s"] for r in rs) / args.batch,
                "update_s_per_episode": statistics.median(r["update_s"] for r in rs) / args.batch,
                "runs": rs,
            }
            for name, rs in results.items()
        },
    }
    summary["ratio_this_over_other"] = summary["this"]["s_per_episode"] / summary["other"]["s_per_episode"]
    if ab is not None:
        summary["update_ab"] = ab
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
