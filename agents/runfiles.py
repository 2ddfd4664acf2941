"""A ``train-policy`` run folder: its layout, logs, safe checkpoints, curves, and :func:`load_policy`.

Layout of ``run.out_dir``::

    config.toml                      the resolved config
    metrics.jsonl                    one line per iteration (the reference code's keys)
    samples.jsonl                    decoded samples every ``sample_every`` iterations
    tensorboard/                     TensorBoard events
    checkpoints/iter-0000010.rank0/  state.safetensors + state.json + manifest.json (agents.checkpoint);
                                     an online run's also hold the online loop's state and reward model
    labels.db                        an online run's comparison store (unless online.store says otherwise)
    curves.png                       the learning curves (the algorithm's, from the registry)
    halt.json                        why the andon cord stopped the run, when it did

Checkpoints are safetensors and JSON, never pickles, written atomically with checksums; ``--resume``
verifies them and falls back to the newest intact one, saying which file was damaged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from agents import checkpoint as ckpt
from agents.algos import ALGOS
from agents.config import ConfigError, TrainConfig, dump_toml, load_config
from textenv.models import cpu_linear


class RunFiles:
    """The run folder: metrics, samples, TensorBoard and checkpoints (logs written by rank 0 only)."""

    def __init__(self, out_dir: str | Path, cfg: TrainConfig, rank: int) -> None:
        self.dir = Path(out_dir)
        self.ckpt_dir = self.dir / "checkpoints"
        self.cfg, self.rank = cfg, rank
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.tb = None

    def write_config(self) -> None:
        if self.rank == 0:
            (self.dir / "config.toml").write_text(dump_toml(self.cfg))

    def open_logs(self, start_iteration: int) -> None:
        if self.rank != 0:
            return
        for name in ("metrics.jsonl", "samples.jsonl"):
            path = self.dir / name
            kept = []
            if start_iteration and path.exists():  # drop what a killed run wrote after its checkpoint
                rows = [line for line in path.read_text().splitlines() if line.strip()]
                kept = [line for line in rows if json.loads(line).get("iteration", 0) <= start_iteration]
            path.write_text("".join(line + "\n" for line in kept))
        if self.cfg.run.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.dir / "tensorboard"), purge_step=start_iteration + 1)

    def log(self, metrics: dict) -> None:
        if self.rank != 0:
            return
        with open(self.dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if self.tb is not None:
            for key, value in metrics.items():
                if key != "iteration" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, metrics["iteration"])

    def log_samples(self, rows: list[dict]) -> None:
        if self.rank != 0:
            return
        with open(self.dir / "samples.jsonl", "a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")

    # ------------------------------------------------------------------------------- checkpoints
    def checkpoint_path(self, iteration: int) -> Path:
        return ckpt.checkpoint_path(self.ckpt_dir, iteration, self.rank)

    def save_checkpoint(self, agent, online=None) -> Path:
        """The agent's state (and the online loop's, :meth:`agents.online.OnlineLoop.state_dict`) as the
        checkpoint of its iteration (replacing one there: an online run re-saves after a retrain)."""
        state = {"state": agent.state_dict(), "config": self.cfg.to_dict(), "cpu_matmul": cpu_linear.kernel()}
        if online is not None:
            state["online"] = online.state_dict()
        path = ckpt.save_state(self.checkpoint_path(agent.iteration), state)
        if self.cfg.run.keep_checkpoints:
            ckpt.prune(self.ckpt_dir, self.rank, self.cfg.run.keep_checkpoints, spare=path)  # no re-hash
        return path

    def latest_checkpoint(self) -> Path | None:
        found, _damaged = ckpt.latest_intact(self.ckpt_dir, self.rank)
        return found

    def has_checkpoints(self) -> bool:
        return bool(ckpt.find_checkpoints(self.ckpt_dir, f"iter-*.rank{self.rank}")) or any(
            self.ckpt_dir.glob("iter-*.pt")
        )

    def resume(self, agent, online=None) -> int:
        """Load the newest intact checkpoint into ``agent`` and ``online`` (an
        :class:`agents.online.OnlineLoop`; saying which newer checkpoints are damaged); refuses a config
        that differs outside ``[run]``. Returns the iteration it resumes after."""
        ckpt.recover(self.ckpt_dir, self.rank)  # a checkpoint a kill caught while it was being replaced
        path, damaged = ckpt.latest_intact(self.ckpt_dir, self.rank)
        for bad, reason in damaged:
            print(
                f"[train-policy] checkpoint {bad.name} is damaged ({reason}); skipping it.", file=sys.stderr
            )
        if path is None:
            legacy = sorted(self.ckpt_dir.glob("iter-*.pt"))
            raise FileNotFoundError(
                f"--resume: no intact checkpoint in {self.ckpt_dir}"
                + (
                    f" (found {len(legacy)} pickled .pt file(s) from an older version, never loaded)"
                    if legacy
                    else ""
                )
                + "; start without --resume."
            )
        if damaged:
            print(f"[train-policy] resuming from {path.name}.", file=sys.stderr)
        saved = ckpt.load_state(path)
        _check_resumable(self.cfg.to_dict(), _with_defaults(saved["config"]))
        # versions before the oneDNN linear layers ran PyTorch's BLAS
        ran, now = saved.get("cpu_matmul", "blas"), cpu_linear.kernel()
        if ran != now and self.cfg.run.torch_device == "cpu":
            print(
                f"[train-policy] resuming on the {now} float32 kernel where the checkpoint ran on {ran} "
                f"({cpu_linear.ENV}): the run continues, but not bit for bit as it would have; set "
                f"{cpu_linear.ENV}={ran} for that.",
                file=sys.stderr,
            )
        if online is not None and "online" not in saved:
            raise ConfigError(
                f"--resume: {path} holds no online-loop state (written by a textenv that could not resume "
                "online runs); start a new run with online.store pointing at the same store."
            )
        agent.load_state_dict(saved["state"])
        if online is not None:
            online.load_state_dict(saved["online"])
        return agent.iteration

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# What may differ on --resume (dotted keys at any depth; a trailing dot: a whole table): where and how
# often to write, the remedies the andon cord suggests (the halt rule and the learning rate), Adam's
# kernel or loop (the same optimiser state either way), whether the KL target ends the run, and how often
# and how long the online loop waits for labels; everything else would silently make another run.
RESUMABLE = {
    *(
        f"run.{key}"
        for key in (
            "iterations",
            "out_dir",
            "checkpoint_every",
            "keep_checkpoints",
            "sample_every",
            "samples_shown",
            "tensorboard",
            "plot",
            "device",
            "parallel",  # the engine's own check refuses an FSDP checkpoint without FSDP and the reverse
        )
    ),
    "halt.",
    "optim.lr",
    "optim.fused",
    "online.reward.fused",
    "online.poll_s",
    "online.max_wait_s",
    "kl.stop_at_target",  # the KL budget: when to end
    "kl.stop_window",
}
# the changes among those that are said on resume (the others only move files and clocks)
SAID = ("halt.", "optim.", "kl.", "online.reward.")


def _flat(config: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` at any depth (an empty table adds no key)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _matches(key: str, patterns) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


def _with_defaults(saved: dict) -> dict:
    """A checkpoint's config with the defaults of the keys added since it was written (an older version's
    checkpoint lacks them; their defaults are the behaviour it ran with), as it would load today."""
    try:
        out = TrainConfig.from_dict(saved).to_dict()
    except ConfigError:  # a key since removed or renamed: compared as saved, so the change is named
        return saved
    # Adam's fused kernel came with a default of true, but a checkpoint without the key ran the loop
    if "fused" not in saved.get("optim", {}):
        out["optim"]["fused"] = False
    reward = saved.get("online", {}).get("reward")
    if isinstance(reward, dict) and "fused" not in reward and isinstance(out["online"].get("reward"), dict):
        out["online"]["reward"]["fused"] = False
    return out


def _check_resumable(mine: dict, theirs: dict) -> None:
    mine, theirs = _flat(mine), _flat(theirs)
    missing = object()
    keys = [*mine, *(k for k in theirs if k not in mine)]  # the config's order
    differ = [k for k in keys if mine.get(k, missing) != theirs.get(k, missing)]
    changed = [k for k in differ if not _matches(k, RESUMABLE)]
    if changed:
        allowed = ", ".join(f"[{p[:-1]}]" if p.endswith(".") else p for p in sorted(RESUMABLE))
        raise ConfigError(
            f"--resume: the config differs from the checkpoint's in {changed}; only {allowed} may change "
            "on resume."
        )
    moved = [k for k in differ if _matches(k, SAID)]
    if moved:
        print(f"[train-policy] resuming with changed {moved}.", file=sys.stderr)


def sample_rows(agent, n: int) -> list[dict]:
    """The first ``n`` episodes of the agent's last batch, decoded, for ``samples.jsonl``."""
    batch, tok, pad = agent.last_batch, agent.policy.tokenizer, agent.policy.pad_id
    return [
        {
            "iteration": agent.iteration,
            "query": tok.decode([int(t) for t in batch.context[i] if int(t) != pad]),
            "response": batch.texts[i],
            "score": float(batch.scores[i]),
            "valid": bool(batch.valid[i]),
        }
        for i in range(min(n, batch.context.shape[0]))
    ]


def plot_curves(metrics_path: Path, out: Path, algo: str, target_kl: float | None = None) -> Path:
    """A 2 x 3 PNG of the learning curves in ``metrics.jsonl`` (the algorithm's curves from the registry)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    for ax, (key, title) in zip(axes.flat, ALGOS[algo].curves):
        ax.plot([r["episodes"] for r in rows if key in r], [r[key] for r in rows if key in r])
        if key == "objective/kl" and target_kl:
            ax.axhline(target_kl, color="gray", linestyle="--", label="target")
            ax.legend()
        ax.set_title(title)
        ax.set_xlabel("episodes")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def load_policy(run_dir: str | Path, device: str = "cpu") -> tuple[Any, TrainConfig]:
    """The trained policy of a ``train-policy`` run folder (its newest intact checkpoint on rank 0) and
    the run's config. Never unpickles: checkpoints are safetensors + JSON."""
    from agents.build import build_policy

    run = Path(run_dir)
    if not (run / "config.toml").exists():
        raise FileNotFoundError(f"{run} is not a train-policy run folder (no config.toml).")
    cfg = load_config(run / "config.toml", [f"--run.device={device}", "--online.enabled=false"])
    policy = build_policy(cfg)
    path, damaged = ckpt.latest_intact(run / "checkpoints", 0)
    for bad, reason in damaged if path is not None else ():
        print(
            f"[load_policy] {run}: checkpoint {bad.name} is damaged ({reason}); using {path.name}.",
            file=sys.stderr,
        )
    if path is None:
        reasons = "; ".join(f"{p.name}: {why}" for p, why in damaged)
        raise FileNotFoundError(
            f"no intact checkpoint in {run / 'checkpoints'}" + (f" ({reasons})" if reasons else "") + "."
        )
    trainable = ckpt.load_state(path)["state"]["trainable"]
    named = dict(policy.named_parameters())
    unknown = [n for n in trainable if n not in named]
    if unknown:
        raise ValueError(
            f"{path}: tensors {unknown[:3]} are not in the policy built from {run / 'config.toml'}."
        )
    import torch

    with torch.no_grad():
        for name, tensor in trainable.items():
            named[name].copy_(tensor)
    return policy.eval(), cfg


def git_sha() -> str:
    """The short commit of the checkout in the working directory ("unknown" outside one): results files
    record it beside each row."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
