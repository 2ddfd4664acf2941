"""The prepared GPU check (issue 17): everything one GPU call should measure, in one run of a few minutes.

1. ``matmul``: this device's dense matmul rate in float32 (TF32 allowed) and bfloat16 (8192^2, best of 10).
2. ``paper_iteration``: the paper's sentiment configuration (PAPER.md §1.8: GPT-2-124M shape, 512 episodes
   x (64 + 24) tokens, 4 PPO epochs of one minibatch, a reward model of the same size scoring every
   episode) timed per iteration in fp32 (TF32) and bf16: median seconds, the phase split, peak memory, and
   the ratio to the FLOP limit at the measured bf16 matmul rate. The weights are random (speed does not
   depend on them; the embedded weights cannot travel), the prompts synthetic, the tokenizer GPT-2's BPE.
3. ``logprob_agreement``: bf16 autocast against fp32 log-probs of the same sampled batch on that model.
4. ``smoke``: two iterations of every registered algorithm (and stable-baselines3's PPO on the
   TransformerPolicy) on a tiny model on the device, in bf16: they run and stay finite.

Each result is one JSON line (``--out``; BENCHMARKS.md quotes them). ``--dry-run`` shrinks every shape so
the whole check runs on a CPU in seconds (the test suite runs it). On the device::

    bash benchmarks/gpu_check.sh           # installs the carried wheels, then runs this module
"""

from __future__ import annotations

import json
import os
import statistics
import time
import traceback

import numpy as np
import torch

from benchmarks.common import RESULTS, arg_parser, emit, metadata, out_path

PAPER = dict(n_embd=768, n_layer=12, n_head=12, batch=512, query=64, response=24, epochs=4)
DRY = dict(n_embd=64, n_layer=2, n_head=2, batch=8, query=8, response=4, epochs=1)
WORDS = (
    "the sea was calm and the night was long while a small boat drifted past the old harbour lights where "
    "children laughed and sang about the winter that never came to their quiet town by the grey hills"
).split()


def parse_args(argv=None):
    p = arg_parser(__doc__)
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on whatever device there is (CPU)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--iterations", type=int, default=2, help="measured iterations after one warm-up")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--compile-sampler", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--skip", nargs="*", default=[], choices=["matmul", "paper", "agreement", "smoke"])
    p.add_argument("--out", default=str(RESULTS / "gpu_check.jsonl"))
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, repeat: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def tokenizer():
    from textenv.models.tokenization import load_gpt2_tokenizer

    return load_gpt2_tokenizer()


def prompts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=90)) + "." for _ in range(n)]


def gpt2(shape: dict, vocab: int, device, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=vocab,
        n_positions=1024,
        n_embd=shape["n_embd"],
        n_layer=shape["n_layer"],
        n_head=shape["n_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(cfg).to(device).eval()


def ppo_agent(shape: dict, device, precision: str, compile_sampler: bool, algo: str = "ppo", seed: int = 0):
    """The agent of ``algo`` on a GPT-2 of ``shape`` with a same-size reward model, on ``device``."""
    from agents.algos import ALGOS
    from agents.policy import PolicyWithValue
    from agents.sections import HaltConfig, KLConfig, OptimConfig
    from rewards.model import RewardModel
    from textenv.models.tokenization import real_vocab_size
    from textenv.vector import TextVectorEnv

    tok = tokenizer()
    lm = gpt2(shape, len(tok) - 1, device, seed)
    rm = RewardModel(gpt2(shape, len(tok) - 1, device, seed + 1), tok.pad_token_id).to(device)
    rm.requires_grad_(False)
    policy = PolicyWithValue(lm, tok.pad_token_id, temperature=0.7, vocab_size=real_vocab_size(tok)).to(
        device
    )
    policy.tokenizer = tok
    policy.set_precision(precision)
    policy.compile_sampler = compile_sampler
    envs = TextVectorEnv(
        "BookSentiment-v0",
        num_envs=shape["batch"],
        tokenizer=tok,
        reward_fn=rm.as_reward_fn(batch_size=shape["batch"]),
        prompts=prompts(4 * shape["batch"], seed),
        query_length=shape["query"],
        min_query_length=1,
        response_length=shape["response"],
        truncate_token=None,
        truncate_after=0,
    )
    entry = ALGOS[algo]
    extra = {} if algo == "ppo" else {"k": 2}
    config = entry.config(
        batch_size=shape["batch"],
        total_episodes=shape["batch"] * 1000,
        epochs=shape["epochs"],
        minibatches=1,
        optim=OptimConfig(lr=1e-5),
        kl=KLConfig(coef=0.15),
        halt=HaltConfig(kl_patience=0),
        **extra,
    )
    return entry.agent(policy, envs, config), rm


def paper_iteration(shape, device, precision, compile_sampler, iterations, bf16_rate) -> dict:
    from benchmarks.bench_ppo import iteration_flops

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    agent, _ = ppo_agent(shape, device, precision, compile_sampler)
    times, phases = [], []
    for i in range(iterations + 1):
        sync(device)
        m = agent.step()
        sync(device)
        if i:  # the first iteration warms up (and compiles)
            times.append(m["time/iteration"])
            phases.append({k: m[f"time/{k}"] for k in ("sample", "score", "reference", "forward", "update")})
        else:
            warmup = m["time/iteration"]
    c = {
        "batch": shape["batch"],
        "query": shape["query"],
        "response": shape["response"],
        "epochs": shape["epochs"],
    }
    flops = iteration_flops(agent.policy.lm, c)
    it = statistics.median(times)
    return {
        "check": "paper_iteration",
        "precision": precision,
        "compile_sampler": compile_sampler,
        "iteration_s_median": it,
        "iteration_s_all": times,
        "warmup_s": warmup,
        "episodes_per_s": shape["batch"] / it,
        "phases_s": {k: float(np.median([p[k] for p in phases])) for k in phases[0]},
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "flops_per_iteration": flops,
        "flop_bound_s_at_bf16_rate": flops / bf16_rate,
        "ratio_to_flop_bound": it / (flops / bf16_rate),
        "paper_8xV100_s": 8.9,
        **shape,
    }


def logprob_agreement(shape, device) -> dict:
    agent, _ = ppo_agent(shape, device, "fp32", False)
    policy = agent.policy
    obs = agent.reset_envs()
    context = torch.as_tensor(obs[:, : agent.context_length]).to(device)
    with torch.no_grad():
        responses, _ = policy.sample(context, shape["response"], generator=agent.generator)
        full = torch.cat([context, responses], 1)
        fp32 = policy.forward_stats(full, agent.context_length).logprobs
        policy.set_precision("bf16")
        bf16 = policy.forward_stats(full, agent.context_length).logprobs
    diff = (bf16 - fp32).abs()
    return {
        "check": "logprob_agreement",
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "p99_abs_diff": float(diff.flatten().quantile(0.99)),
        "tokens": int(diff.numel()),
        **shape,
    }


def smoke(device, precision: str) -> list[dict]:
    from agents.algos import ALGOS

    tiny = dict(DRY, batch=8)
    rows = []
    for algo in sorted(ALGOS):
        t = time.perf_counter()
        try:
            agent, _ = ppo_agent(tiny, device, precision, False, algo=algo)
            scores = [agent.step()["objective/score"] for _ in range(2)]
            ok = bool(np.isfinite(scores).all())
            rows.append({"check": "smoke", "algo": algo, "ok": ok, "scores": scores})
        except Exception as exc:  # report and go on: the check's value is the whole table
            rows.append(
                {
                    "check": "smoke",
                    "algo": algo,
                    "ok": False,
                    "error": traceback.format_exc(limit=3),
                    "exc": repr(exc),
                }
            )
        rows[-1]["seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    try:
        rows.append({"check": "smoke", "algo": "sb3-ppo", **sb3_smoke(device)})
    except Exception as exc:
        rows.append(
            {
                "check": "smoke",
                "algo": "sb3-ppo",
                "ok": False,
                "error": traceback.format_exc(limit=3),
                "exc": repr(exc),
            }
        )
    rows[-1]["seconds"] = time.perf_counter() - t
    return rows


def sb3_smoke(device) -> dict:
    from stable_baselines3 import PPO

    from agents.sb3 import TransformerPolicy
    from textenv.env import TextEnv

    tok = tokenizer()
    lm = gpt2(DRY, len(tok) - 1, device, 0)
    env = TextEnv(
        "BookSentiment-v0",
        tokenizer=tok,
        reward_fn=lambda q, r: (r % 7).mean(axis=1) / 7.0,
        prompts=prompts(8),
        query_length=8,
        min_query_length=1,
        response_length=4,
        truncate_token=None,
        truncate_after=0,
    )
    model = PPO(
        TransformerPolicy,
        env,
        n_steps=8,
        batch_size=8,
        n_epochs=1,
        device=device,
        policy_kwargs={"model": lm, "pad_id": tok.pad_token_id},
        seed=0,
    )
    model.learn(16)
    return {"ok": True, "timesteps": int(model.num_timesteps)}


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shape = DRY if args.dry_run else PAPER
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    compile_sampler = args.compile_sampler == "on" or (
        args.compile_sampler == "auto" and device.type == "cuda"
    )
    meta = {**metadata(str(device)), "dry_run": args.dry_run}
    out = out_path(args.out)
    results = []

    def record(row):
        row = {"bench": "gpu_check", **row, **meta}
        results.append(row)
        emit(row, out)

    n = 256 if args.dry_run else 8192
    rates = {}
    if "matmul" not in args.skip:
        for name, dtype in (("fp32_tf32", torch.float32), ("bf16", torch.bfloat16)):
            rates[name] = matmul_rate(device, dtype, n)
        record({"check": "matmul", "n": n, "tflops": {k: v / 1e12 for k, v in rates.items()}})
    bf16_rate = rates.get("bf16") or matmul_rate(device, torch.bfloat16, n)
    if "paper" not in args.skip:
        for precision in args.precisions:
            record(paper_iteration(shape, device, precision, compile_sampler, args.iterations, bf16_rate))
    if "agreement" not in args.skip:
        record(logprob_agreement(shape, device))
    if "smoke" not in args.skip:
        for row in smoke(device, "bf16"):
            record(row)
    return results


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
    print(json.dumps({"done": True}))
