"""PPO speed: our agent and TRL's ``trl.experimental.ppo.PPOTrainer`` side by side, identical settings.

Cases (each implementation and mode runs in its own subprocess, so peak RSS is its own):

* ``tiny``: a GPT-2 config with 2 layers, width 64 and a 1,024-token BPE vocabulary trained on the books
  corpus; 16 episodes x (16 query + 16 response) tokens, 1 PPO epoch.
* ``embedded``: SmolLM2-135M, 8 episodes x (64 + 24) tokens, 4 epochs, full fine-tuning; our top-2-blocks
  and LoRA (r = 16) modes are reported separately (their speed-up over our full mode); on request,
  ``full_loop`` is full fine-tuning with Adam's per-tensor loop instead of its fused kernel and
  ``full_blas`` full fine-tuning with ``TEXTENV_CPU_MATMUL=blas`` (PyTorch's own float32 matmul instead of
  oneDNN's, :mod:`textenv.models.cpu_linear`) and ``full_recompute`` full fine-tuning with
  ``old_logprobs = "recompute"`` (a second policy pass per rollout for the old log-probs and values,
  where the default records them while sampling) and ``full_compiled`` full fine-tuning with the static
  sampler compiled by ``torch.compile`` (``run.compile_sampler = "on"``; its compilation falls in the
  warm-up iteration, reported as ``warmup_s`` in every row).
* ``gemma3``: the optional Gemma-3-270M (262,144-token vocabulary; ``textenv setup --only gemma3-270m``),
  4 episodes x (32 + 16) tokens, 1 epoch: what its vocabulary costs in time and peak memory.

Both sides: T = 0.7, lr 1e-5, 1 minibatch, reward whitening, beta 0.15, a reward model of the policy's
size (a trunk + scalar head on the last token) scored every episode, fixed-length responses. TRL
trains a separate value network (its design), we use a value head on the policy trunk (the paper's).
Reported: episodes/s (the median iteration after one warm-up), peak RSS, the phase split (sample / score
/ reference / update; TRL's "score" includes its value-network pass, timed by wrapping its functions),
and, for our embedded full mode, the iteration's FLOPs divided by this machine's fp32 matmul rate
measured in the same run (the faster of the BLAS and oneDNN, both recorded; ``flop_bound_s``) and a roofline (``roofline_s``): the same FLOPs at that rate,
except that each decode step costs the larger of its FLOPs and its memory traffic (all weights plus the
KV cache read) at the memory bandwidth measured in the same worker, per phase (``roofline_phases_s``,
``phase_ratio_to_roofline``). ``optimizer_traffic_s`` is what the AdamW steps' memory traffic alone
costs at that bandwidth (paid by the update, not counted in the roofline).

Every worker, TRL's too, keeps freed memory in the process as the ``textenv`` training commands do
(:mod:`agents.allocator`; ``TEXTENV_MALLOC=default`` runs both on glibc's defaults; each row records
``malloc``), and both sides' linear layers run on the same float32 kernels (``TEXTENV_CPU_MATMUL``; each
row records ``cpu_matmul``).

TRL is installed outside the project's environment (``pip install --no-deps --target DIR trl==1.12.0``)
and put on ``sys.path`` in the TRL worker only:

    python -m benchmarks.bench_ppo --trl-path /tmp/trl-1.12 [--cases tiny embedded] [--iterations 3]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, arg_parser, best_seconds, emit, metadata
from textenv.models import cpu_linear

CASES = {
    "tiny": dict(batch=16, query=16, response=16, epochs=1),
    "embedded": dict(batch=8, query=64, response=24, epochs=4),
    # the optional Gemma-3-270M (textenv setup --only gemma3-270m): 262k vocabulary, 268M parameters
    "gemma3": dict(batch=4, query=32, response=16, epochs=1),
}


# our modes other than full fine-tuning, reported against it (the embedded case only)
VARIANTS = ("top_blocks", "lora", "full_loop", "full_blas", "full_recompute", "full_compiled")


# ------------------------------------------------------------------------------------------ models
def tiny_tokenizer():
    """A 1,024-token BPE tokenizer trained on the books corpus (seconds), with EOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from textenv.data import load_books

    texts = [b.text for b in load_books("train")[:3000]]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=1024,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    from tokenizers import decoders

    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>")


def build_models(case: str):
    """(policy LM, tokenizer, reward trunk LM): the same architecture for the policy and the reward."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from textenv.models import load_causal_lm
    from textenv.models.tokenization import ensure_pad_token

    torch.manual_seed(0)
    if case == "tiny":
        tok = tiny_tokenizer()
        ensure_pad_token(tok)
        cfg = GPT2Config(
            vocab_size=tok.vocab_size,
            n_positions=64,
            n_embd=64,
            n_layer=2,
            n_head=2,
            resid_pdrop=0,
            embd_pdrop=0,
            attn_pdrop=0,
        )
        lm = GPT2LMHeadModel(cfg).eval()
        rm_lm = GPT2LMHeadModel(cfg).eval()
        if cpu_linear.wanted():  # as load_causal_lm does for the real models
            cpu_linear.use_onednn(lm)
            cpu_linear.use_onednn(rm_lm)
        return lm, tok, rm_lm
    spec = "gemma3-270m" if case == "gemma3" else "smollm2-135m"
    lm, tok = load_causal_lm(spec)
    rm_lm, _ = load_causal_lm(spec)
    return lm, tok, rm_lm


def prompts_for(tok, n: int, length: int) -> list[list[int]]:
    """``n`` book passages of exactly ``length`` tokens (the same for both implementations)."""
    from textenv.data import load_books

    out = []
    for b in load_books("train"):
        ids = tok.encode(b.text)
        if len(ids) >= length:
            out.append(ids[:length])
        if len(out) == n:
            return out
    raise RuntimeError(f"not enough book passages of {length} tokens")


# ------------------------------------------------------------------------------------------ ours
def run_ours(case: str, mode: str, iterations: int) -> dict:
    from agents.policy import PolicyWithValue
    from agents.ppo import PPOAgent, PPOConfig
    from agents.sections import HaltConfig, KLConfig, OptimConfig
    from rewards.model import RewardModel
    from textenv.models.tokenization import real_vocab_size
    from textenv.vector import TextVectorEnv

    c = CASES[case]
    lm, tok, rm_lm = build_models(case)
    rm = RewardModel(rm_lm, tok.pad_token_id)
    rm.requires_grad_(False)
    policy = PolicyWithValue(lm, tok.pad_token_id, temperature=0.7, vocab_size=real_vocab_size(tok))
    policy.tokenizer = tok
    if mode == "top_blocks":
        policy.set_trainable(2)
    elif mode == "lora":
        policy.enable_lora(r=16, alpha=32)
    elif mode == "full_compiled":
        policy.compile_sampler = True
    texts = [tok.decode(p) for p in prompts_for(tok, 64, c["query"])]
    envs = TextVectorEnv(
        "BookSentiment-v0",
        num_envs=c["batch"],
        tokenizer=tok,
        reward_fn=rm.as_reward_fn(batch_size=c["batch"]),
        prompts=texts,
        query_length=c["query"],
        min_query_length=1,
        response_length=c["response"],
        truncate_token=None,
        truncate_after=0,
    )
    config = PPOConfig(
        batch_size=c["batch"],
        total_episodes=c["batch"] * (iterations + 1),
        epochs=c["epochs"],
        minibatches=1,
        # full_loop: full fine-tuning with the per-tensor TF-Adam loop (optim.fused = false), the before
        optim=OptimConfig(lr=1e-5, fused=mode != "full_loop"),
        old_logprobs="recompute" if mode == "full_recompute" else "sampling",
        kl=KLConfig(coef=0.15),
        halt=HaltConfig(kl_patience=0),
    )
    agent = PPOAgent(policy, envs, config)
    times, phases = [], []
    for _ in range(iterations + 1):
        m = agent.step()
        times.append(m["time/iteration"])
        phases.append(
            {
                "sample": m["time/sample"],
                "score": m["time/score"],
                "reference": m["time/reference"],
                "policy_forward": m["time/forward"],
                "update": m["time/update"],
            }
        )
    out = {"iteration_s": times[1:], "phases": phases[1:], "warmup_s": times[0]}
    if case in ("embedded", "gemma3") and mode == "full":
        policy_pass = not agent.sample_values  # old values recorded while sampling: no second pass
        out["flops_per_iteration"] = iteration_flops(lm, c, policy_pass)
        out["roofline_work"] = roofline_work(lm, c, policy_pass)
    return out


def iteration_flops(lm, c: dict, policy_pass: bool = False) -> float:
    """Matmul FLOPs one iteration of our algorithm needs (forward 2 x params x tokens, backward 2 x that).

    Per episode: sampling runs the trunk on Lq + Lr - 1 tokens and the output layer on Lr positions;
    the reference and reward passes run the trunk on Lq + Lr tokens (the output layer on Lr positions,
    none for the reward), and so does the policy's second pass when it runs (``policy_pass``:
    ``old_logprobs = "recompute"``; by default the old values are recorded while sampling); each epoch
    runs forward + backward (3 x forward). Attention score FLOPs (4 x T x d per token per layer) are
    included.
    """
    from textenv.models.trunk import blocks_of

    blocks = blocks_of(lm.base_model)
    p_blocks = sum(p.numel() for b in blocks for p in b.parameters() if p.dim() == 2)
    d, v, n_layers = lm.config.hidden_size, lm.get_output_embeddings().weight.shape[0], len(blocks)
    t = c["query"] + c["response"]
    per_token = 2 * p_blocks + 4 * t * d * n_layers
    head = 2 * d * v
    passes = 3 if policy_pass else 2  # reward, reference (and the policy's second pass)
    trunk_tokens = (t - 1) + passes * t + 3 * c["epochs"] * t
    head_positions = c["response"] * (1 + (passes - 1) + 3 * c["epochs"])
    return float(c["batch"] * (trunk_tokens * per_token + head_positions * head))


def roofline_work(lm, c: dict, policy_pass: bool = False) -> dict:
    """Per phase, the work :func:`iteration_flops` counts, split so that a roofline can be drawn:
    ``flops`` for every phase, and for sampling the prefill FLOPs plus, per decode step, its FLOPs and the
    bytes it must read (every weight matrix once, the output layer's whole matrix, and the KV cache so
    far). The phases' FLOPs sum to :func:`iteration_flops`. Also the AdamW step's memory traffic (read
    parameters, gradients and both moments, write parameters and moments: 7 x 4 bytes per parameter per
    step), which the roofline does not count but the update pays.
    """
    from textenv.models.trunk import blocks_of

    cfg = lm.config
    blocks = blocks_of(lm.base_model)
    p_blocks = sum(p.numel() for b in blocks for p in b.parameters() if p.dim() == 2)
    d, v, n_layers = cfg.hidden_size, lm.get_output_embeddings().weight.shape[0], len(blocks)
    b, lq, lr, t = c["batch"], c["query"], c["response"], c["query"] + c["response"]
    per_token = 2 * p_blocks + 4 * t * d * n_layers  # as iteration_flops (attention at the full length)
    head = 2 * d * v
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or d // heads
    kv_bytes_per_token = 2 * n_layers * kv_heads * head_dim * 4  # K and V, float32
    weight_bytes = 4 * (p_blocks + d * v)  # block matrices and the output layer, float32
    forward = b * (t * per_token + lr * head)
    steps = [  # decode step k (1 .. Lr-1) feeds the k-th sampled token with Lq + k - 1 cached positions
        {"flops": b * (per_token + head), "bytes": weight_bytes + b * (lq + k - 1) * kv_bytes_per_token}
        for k in range(1, lr)
    ]
    trainable = sum(p.numel() for p in lm.parameters() if p.requires_grad)
    return {
        "sample": {"prefill_flops": b * (lq * per_token + head), "decode_steps": steps},
        "score": {"flops": b * t * per_token},  # the reward model: the trunk only
        "reference": {"flops": forward},
        "policy_forward": {"flops": forward if policy_pass else 0.0},  # see iteration_flops
        "update": {"flops": 3 * c["epochs"] * forward},
        "optimizer_bytes": c["epochs"] * 7 * 4 * trainable,
    }


def roofline(work: dict, flops_per_s: float, bytes_per_s: float) -> dict:
    """Seconds per phase at the roofline: FLOPs at ``flops_per_s``; each decode step the larger of its
    FLOPs at that rate and its bytes at ``bytes_per_s`` (decoding 8 rows is memory-bound on CPU)."""
    s = work["sample"]
    sample = s["prefill_flops"] / flops_per_s + sum(
        max(st["flops"] / flops_per_s, st["bytes"] / bytes_per_s) for st in s["decode_steps"]
    )
    phases = {"sample": sample}
    for k in ("score", "reference", "policy_forward", "update"):
        phases[k] = work[k]["flops"] / flops_per_s
    return phases


def memory_bandwidth(n: int = 64 * 2**20, repeat: int = 8) -> dict:
    """This machine's memory bandwidth, bytes/s, best of ``repeat``: ``read`` (sum of a 256 MiB float32
    tensor) and ``copy`` (bytes read + written by a copy into another one)."""
    a, b = torch.ones(n), torch.empty(n)
    b.copy_(a)  # touch the pages
    read = copy_ = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a.sum()
        read = min(read, time.perf_counter() - t)
        t = time.perf_counter()
        b.copy_(a)
        copy_ = min(copy_, time.perf_counter() - t)
    return {"read": 4 * n / read, "copy": 8 * n / copy_}


def matmul_rate(n: int = 1024, repeat: int = 10) -> dict:
    """fp32 matmul FLOP/s of this machine (best of ``repeat``) through PyTorch's BLAS (``torch.mm``) and,
    where this PyTorch has it, through oneDNN (the kernel :mod:`textenv.models.cpu_linear` uses); the
    roofline takes the larger."""
    from textenv.models.cpu_linear import onednn_available

    a, b = torch.randn(n, n), torch.randn(n, n)
    kernels = {"blas": lambda: a @ b}
    if onednn_available():
        kernels["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    return {name: 2 * n**3 / best_seconds(fn, repeat) for name, fn in kernels.items()}


# -------------------------------------------------------------------------------------------- TRL
def trl_models(case: str):
    """(policy, tokenizer, reward, value, reference): TRL's reward and value nets classify sequences."""
    from transformers import AutoModelForSequenceClassification

    lm, tok, rm_lm = build_models(case)
    lm.generation_config.eos_token_id = None
    lm.generation_config.pad_token_id = tok.pad_token_id

    def seq_classifier(src):
        cfg = copy.deepcopy(src.config)
        cfg.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(cfg)
        model.base_model.load_state_dict(src.base_model.state_dict())
        model.config.pad_token_id = tok.pad_token_id
        return model.eval()

    reward = seq_classifier(rm_lm)
    value = seq_classifier(lm)
    if cpu_linear.wanted():  # the same float32 kernels as ours (load_causal_lm gave lm and rm_lm them)
        cpu_linear.use_onednn(reward)
        cpu_linear.use_onednn(value)
    return lm, tok, reward, value, copy.deepcopy(lm)


def trl_timers(T, timings: dict) -> None:
    """Wrap TRL's sampling, scoring and reference-pass functions to add their seconds to ``timings``."""

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timings[name] += time.perf_counter() - t

        return wrapper

    T.batch_generation = timed("sample", T.batch_generation)
    T.get_reward = timed("score", T.get_reward)
    T.forward = timed("reference", T.forward)


def trl_config(c: dict, iterations: int):
    from trl.experimental.ppo import PPOConfig

    return PPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=c["batch"],
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        num_ppo_epochs=c["epochs"],
        total_episodes=c["batch"] * (iterations + 1),
        response_length=c["response"],
        temperature=0.7,
        stop_token=None,
        missing_eos_penalty=None,
        local_rollout_forward_batch_size=c["batch"],
        num_sample_generations=0,
        learning_rate=1e-5,
        kl_coef=0.15,
        whiten_rewards=True,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )


def run_trl(case: str, iterations: int, trl_path: str) -> dict:
    sys.path.insert(0, trl_path)
    import trl.experimental.ppo.ppo_trainer as T
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.ppo import PPOTrainer

    c = CASES[case]
    lm, tok, reward, value, ref_model = trl_models(case)
    prompts = prompts_for(tok, 64, c["query"])
    data = Dataset.from_dict({"input_ids": prompts})
    timings: dict[str, float] = {"sample": 0.0, "score": 0.0, "reference": 0.0}
    trl_timers(T, timings)
    marks: list[tuple[float, dict]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            marks.append((time.perf_counter(), dict(timings)))

    trainer = PPOTrainer(
        args=trl_config(c, iterations),
        processing_class=tok,
        model=lm,
        ref_model=ref_model,
        reward_model=reward,
        value_model=value,
        train_dataset=data,
        callbacks=[Clock()],
    )
    start = time.perf_counter()
    trainer.train()
    # per-iteration seconds and phase split from the cumulative timers stamped at each step's end
    stamps = [(start, {"sample": 0.0, "score": 0.0, "reference": 0.0}), *marks]
    times, phases = [], []
    for (t0, p0), (t1, p1) in itertools.pairwise(stamps):
        times.append(t1 - t0)
        ph = {k: p1[k] - p0[k] for k in p0}
        ph["update"] = times[-1] - sum(ph.values())
        phases.append(ph)
    return {"iteration_s": times[1:], "phases": phases[1:]}


# ------------------------------------------------------------------------------------------ driver
def worker(args) -> None:
    from agents.allocator import keep_freed_memory

    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the textenv commands do, for both sides (TEXTENV_MALLOC=default: glibc's own)
    if args.impl == "trl":
        out = run_trl(args.case, args.iterations, args.trl_path)
    else:
        out = run_ours(args.case, args.impl, args.iterations)
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if args.case in ("embedded", "gemma3") and args.impl == "full":
        out["matmul_flops_per_s_by_kernel"] = rates = matmul_rate()
        out["matmul_flops_per_s"] = max(rates.values())  # the best the machine showed: the stricter bound
        out["memory_bytes_per_s"] = memory_bandwidth()
    print("RESULT " + json.dumps(out), flush=True)


def summarize(case: str, impl: str, raw: dict) -> dict:
    it = statistics.median(raw["iteration_s"])
    phases = {k: float(np.median([p[k] for p in raw["phases"]])) for k in raw["phases"][0]}
    row = {
        "bench": "ppo",
        "case": case,
        "impl": impl,
        "episodes_per_s": CASES[case]["batch"] / it,
        "iteration_s_median": it,
        "iteration_s_all": raw["iteration_s"],
        **({"warmup_s": raw["warmup_s"]} if "warmup_s" in raw else {}),
        "phases_s": phases,
        "peak_rss_gb": raw["peak_rss_gb"],
        **CASES[case],
    }
    if "flops_per_iteration" in raw:
        ideal = raw["flops_per_iteration"] / raw["matmul_flops_per_s"]
        row.update(
            flops_per_iteration=raw["flops_per_iteration"],
            matmul_gflops=raw["matmul_flops_per_s"] / 1e9,
            matmul_gflops_by_kernel={
                k: v / 1e9 for k, v in raw.get("matmul_flops_per_s_by_kernel", {}).items()
            },
            flop_bound_s=ideal,
            ratio_to_flop_bound=it / ideal,
        )
    if "roofline_work" in raw:
        bw = raw["memory_bytes_per_s"]
        bandwidth = max(bw.values())  # the best the machine showed: the stricter roofline
        bound = roofline(raw["roofline_work"], raw["matmul_flops_per_s"], bandwidth)
        total = sum(bound.values())
        row.update(
            bandwidth_gb_s=bandwidth / 1e9,
            bandwidth_read_gb_s=bw["read"] / 1e9,
            bandwidth_copy_gb_s=bw["copy"] / 1e9,
            roofline_s=total,
            ratio_to_roofline=it / total,
            roofline_phases_s=bound,
            phase_ratio_to_roofline={k: phases[k] / bound[k] for k in bound if bound[k] > 0},
            optimizer_traffic_s=raw["roofline_work"]["optimizer_bytes"] / bandwidth,
        )
    return row


def main(argv=None) -> None:
    parser = arg_parser(__doc__)
    parser.add_argument(
        "--cases", nargs="+", default=["tiny", "embedded"], choices=list(CASES), help="gemma3 needs its asset"
    )
    parser.add_argument(
        "--impls",
        nargs="+",
        default=["trl", "full", "top_blocks", "lora"],
        choices=["trl", "full", *VARIANTS],
        help="full_loop: full fine-tuning with optim.fused = false (Adam's per-tensor loop); full_blas: full "
        "fine-tuning with TEXTENV_CPU_MATMUL=blas (PyTorch's own float32 matmul, not oneDNN); "
        "full_recompute: full fine-tuning with old_logprobs = recompute (a second policy pass); "
        "full_compiled: full fine-tuning with the compiled static sampler; side by side",
    )
    parser.add_argument("--iterations", type=int, default=3, help="measured iterations (after 1 warm-up)")
    parser.add_argument(
        "--trl-path", default=None, help="folder where trl==1.12.0 was installed with --target"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=str(RESULTS / "ppo.jsonl"))
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.case, args.impl = args.worker
        worker(args)
        return
    from agents.allocator import setting

    try:
        setting()
        cpu_linear.wanted()
    except (ValueError, RuntimeError) as exc:
        parser.error(str(exc))
    if "trl" in args.impls and not args.trl_path:
        parser.error(
            "--trl-path is required for the TRL side (pip install --no-deps --target DIR trl==1.12.0)"
        )
    meta = metadata()
    for case in args.cases:
        rows = {}
        for impl in args.impls:
            if case == "tiny" and impl in VARIANTS:
                continue  # the tiny case compares full fine-tuning only
            cmd = [sys.executable, "-m", "benchmarks.bench_ppo", "--worker", case, impl]
            cmd += ["--iterations", str(args.iterations), "--threads", str(args.threads)]
            if impl == "trl":
                cmd += ["--trl-path", args.trl_path]
            env = {**os.environ, cpu_linear.ENV: "blas"} if impl == "full_blas" else None
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not lines:
                raise SystemExit(f"{case}/{impl} failed:\n{proc.stderr[-3000:]}")
            rows[impl] = summarize(case, impl, json.loads(lines[-1][7:]))
        for impl, row in rows.items():
            if "trl" in rows and impl != "trl":
                row["speedup_vs_trl"] = row["episodes_per_s"] / rows["trl"]["episodes_per_s"]
                row["peak_rss_vs_trl"] = row["peak_rss_gb"] / rows["trl"]["peak_rss_gb"]
            if "full" in rows and impl in VARIANTS:
                row["speedup_vs_our_full"] = row["episodes_per_s"] / rows["full"]["episodes_per_s"]
            matmul = "blas" if impl == "full_blas" else cpu_linear.kernel()
            emit(
                {**row, **meta, "threads": args.threads, "malloc": setting(), "cpu_matmul": matmul},
                out=Path(args.out),
            )


if __name__ == "__main__":
    main()
