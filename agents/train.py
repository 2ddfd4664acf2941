"""``textenv train-policy``: a PPO run from a TOML config, with metrics, samples, checkpoints and resume.

A config has these tables (see ``configs/*.toml``)::

    [run]     iterations, out_dir, checkpoint_every, sample_every, samples_shown, tensorboard, device
    [env]     task, reward ("builtin" or a reward-model folder), and [env.overrides] for the task
    [policy]  model, temperature, train ("full" | "top_blocks" | "lora"), top_blocks, lora_*, value
    [ppo]     any :class:`agents.ppo.PPOConfig` field
    [rloo]    any :class:`agents.rloo.RLOOConfig` field (used when ``run.algo = "rloo"`` or ``--algo rloo``)
    [online]  :class:`agents.online.OnlineConfig`: labels collected while training (``--online``, §1.7)

``--key=value`` overrides any entry (``--ppo.lr=2e-5``, ``--run.iterations=3``; a bare ``--lr=2e-5``
works when the name is unique, or names a setting of the algorithm that runs). A run directory holds
``config.toml`` (the resolved config), ``metrics.jsonl`` (one line per iteration, the reference code's
keys), TensorBoard events, ``samples.jsonl``, ``checkpoints/`` and ``curves.png``. ``--resume`` continues from the latest checkpoint exactly: on CPU
with the same seed the metrics equal an uninterrupted run's bit for bit (tested with ``kill -9``).

The andon cord (:class:`agents.ppo.TrainingHalted`): a NaN/inf or a KL runaway stops the run with the
diagnostic in ``halt.json`` and on stderr, and a checkpoint to ``--resume`` from.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
import torch

from agents import distributed as D
from agents.online import OnlineConfig, OnlineLoop
from agents.ppo import PPOAgent, PPOConfig, TrainingHalted
from agents.rloo import RLOOAgent, RLOOConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class RunSection:
    """``[run]``: the algorithm (``ppo`` or ``rloo``), iterations (0 = ``total_episodes / batch_size`` of the
    algorithm's table), where and how often to write."""

    algo: str = "ppo"
    iterations: int = 0
    out_dir: str = "runs/policy"
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    sample_every: int = 10
    samples_shown: int = 4
    tensorboard: bool = True
    plot: bool = True
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.algo not in ("ppo", "rloo"):
            raise ValueError(f"run.algo={self.algo!r}; use 'ppo' or 'rloo'.")


@dataclass
class EnvSection:
    """``[env]``: the task id, the reward ("builtin": the task's own score; else a reward-model folder)."""

    task: str = "BookSentiment-v0"
    reward: str = "builtin"
    reward_batch_size: int = 64
    overrides: dict = field(default_factory=dict)


@dataclass
class PolicySection:
    """``[policy]``: the LM spec, temperature (0: the task's), what trains, and the value function."""

    model: str = "smollm2-135m"
    temperature: float = 0.0
    train: str = "full"
    top_blocks: int = 2
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    value: str = "shared"  # "shared" (the paper's head on the policy trunk) or a reward-model folder

    def __post_init__(self) -> None:
        if self.train not in ("full", "top_blocks", "lora"):
            raise ValueError(f"policy.train={self.train!r}; use 'full', 'top_blocks' or 'lora'.")


@dataclass
class TrainConfig:
    run: RunSection = field(default_factory=RunSection)
    env: EnvSection = field(default_factory=EnvSection)
    policy: PolicySection = field(default_factory=PolicySection)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    rloo: RLOOConfig = field(default_factory=RLOOConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)

    SECTIONS = {
        "run": RunSection,
        "env": EnvSection,
        "policy": PolicySection,
        "ppo": PPOConfig,
        "rloo": RLOOConfig,
        "online": OnlineConfig,
    }

    @property
    def algo_config(self) -> PPOConfig | RLOOConfig:
        """The table of the algorithm that runs (``[ppo]`` or ``[rloo]``)."""
        return self.rloo if self.run.algo == "rloo" else self.ppo

    @property
    def iterations(self) -> int:
        return self.run.iterations or self.algo_config.num_updates

    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in self.SECTIONS}

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        unknown = set(data) - set(cls.SECTIONS)
        if unknown:
            raise ValueError(f"unknown config tables {sorted(unknown)}; the tables are {list(cls.SECTIONS)}.")
        sections = {}
        for name, klass in cls.SECTIONS.items():
            values = dict(data.get(name, {}))
            names = {f.name for f in dataclasses.fields(klass)}
            bad = set(values) - names
            if bad:
                raise ValueError(f"unknown keys {sorted(bad)} in [{name}]; valid keys: {sorted(names)}.")
            sections[name] = klass(**values)
        return cls(**sections)


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` / ``--key=value`` strings (dotted or unique bare keys) to a config dict."""
    data = json.loads(json.dumps(data))
    defaults = TrainConfig().to_dict()
    algo = data.get("run", {}).get("algo", "ppo")
    for item in overrides:  # the last --run.algo / --algo given wins, wherever it stands
        key, _, raw = (item[2:] if item.startswith("--") else item).partition("=")
        if key in ("run.algo", "algo"):
            algo = _parse_value(raw)
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ValueError(f"override {item!r} must look like --table.key=value (e.g. --ppo.lr=2e-5).")
        key, raw = text.split("=", 1)
        parts = key.split(".")
        if len(parts) == 1:
            owners = [s for s, keys in defaults.items() if parts[0] in keys]
            if set(owners) == {"ppo", "rloo"}:  # an algorithm setting: the table of the algorithm that runs
                owners = [algo]
            if len(owners) != 1:
                raise ValueError(
                    f"override {item!r}: {parts[0]!r} is "
                    + ("in no table" if not owners else f"in several tables {owners}")
                    + "; write it as --table.key=value."
                )
            parts = [owners[0], parts[0]]
        section = parts[0]
        if section not in defaults:
            raise ValueError(f"override {item!r}: no table {section!r}; tables are {list(defaults)}.")
        if len(parts) == 2 and parts[1] not in defaults[section]:
            raise ValueError(
                f"override {item!r}: no key {parts[1]!r} in [{section}]; valid keys: {sorted(defaults[section])}."
            )
        node = data.setdefault(section, {})
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_value(raw)
    return data


def resolve_config_path(path: str | Path) -> Path:
    """A config file path, or the name of a shipped preset (``book_sentiment`` -> configs/book_sentiment.toml)."""
    p = Path(path)
    if p.exists():
        return p
    shipped = CONFIG_DIR / (p.name if p.suffix == ".toml" else p.name + ".toml")
    if shipped.exists():
        return shipped
    names = sorted(x.stem for x in CONFIG_DIR.glob("*.toml"))
    raise FileNotFoundError(f"no config file {str(path)!r}; pass a path or one of the presets {names}.")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    data = {}
    if path is not None:
        with open(resolve_config_path(path), "rb") as fh:
            data = tomllib.load(fh)
    return TrainConfig.from_dict(apply_overrides(data, list(overrides)))


def dump_toml(data: dict) -> str:
    """A small TOML writer for the resolved config (tables of scalars, lists and one nested table)."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v) if not (isinstance(v, float) and math.isinf(v)) else ("inf" if v > 0 else "-inf")
        if v is None:
            return '""'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))

    lines = []
    for name, table in data.items():
        lines.append(f"[{name}]")
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        for k, v in table.items():
            if not isinstance(v, dict) and v is not None:
                lines.append(f"{k} = {value(v)}")
        for k, sub in nested.items():
            lines.append(f"\n[{name}.{k}]")
            lines.extend(f"{kk} = {value(vv)}" for kk, vv in sub.items())
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- building
def policy_temperature(cfg: TrainConfig) -> float:
    """``policy.temperature``, or the task's own when it is 0."""
    from textenv.tasks import get_task

    return cfg.policy.temperature or get_task(cfg.env.task, **cfg.env.overrides).temperature


def build_policy(cfg: TrainConfig):
    from agents.policy import PolicyWithValue

    value_model = None
    if cfg.policy.value != "shared":
        from rewards.model import RewardModel

        value_model = RewardModel.load(cfg.policy.value, device=cfg.run.device)
    policy = PolicyWithValue.from_spec(
        cfg.policy.model,
        temperature=policy_temperature(cfg),
        seed=cfg.algo_config.seed,
        device=cfg.run.device,
        value_model=value_model,
    )
    if cfg.policy.train == "top_blocks":
        policy.set_trainable(cfg.policy.top_blocks)
    elif cfg.policy.train == "lora":
        policy.enable_lora(cfg.policy.lora_r, cfg.policy.lora_alpha, cfg.policy.lora_dropout)
    return policy


def _no_reward_model_yet(queries, responses):
    raise RuntimeError("the online loop has not trained a reward model yet (OnlineLoop.before_iteration).")


def build_reward(cfg: TrainConfig, tokenizer):
    """``None`` (the task's built-in score), a reward model's ``as_reward_fn``, or (online) a placeholder
    that the online loop replaces with its first reward model before any episode."""
    if cfg.online.enabled:
        return _no_reward_model_yet
    if cfg.env.reward == "builtin":
        return None
    from rewards.model import RewardModel

    folder = Path(cfg.env.reward)
    if not (folder / "reward_model.json").exists():
        raise FileNotFoundError(
            f"env.reward={cfg.env.reward!r} is neither 'builtin' nor a reward-model folder (no "
            "reward_model.json there); train one with `textenv train-reward --out FOLDER`."
        )
    rm = RewardModel.load(folder, device=cfg.run.device)
    if rm.tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ValueError(
            f"the reward model in {folder} uses another tokenizer ({rm.base_spec!r}) than the policy "
            f"({cfg.policy.model!r}); train the reward model on the policy's tokenizer."
        )
    return rm.as_reward_fn(batch_size=cfg.env.reward_batch_size)


def build_agent(cfg: TrainConfig) -> PPOAgent | RLOOAgent:
    from textenv.vector import TextVectorEnv

    algo = cfg.algo_config
    world = D.world_size()
    if algo.batch_size % world:
        raise ValueError(
            f"{cfg.run.algo}.batch_size={algo.batch_size} is not divisible by {world} processes."
        )
    torch.manual_seed(algo.seed)
    policy = build_policy(cfg)
    envs = TextVectorEnv(
        cfg.env.task,
        num_envs=algo.batch_size // world,
        tokenizer=policy.tokenizer,
        reward_fn=build_reward(cfg, policy.tokenizer),
        **cfg.env.overrides,
    )
    return (RLOOAgent if cfg.run.algo == "rloo" else PPOAgent)(policy, envs, algo)


# ------------------------------------------------------------------------------------- run folder
class RunFiles:
    """The run folder: metrics, samples, TensorBoard and checkpoints (metrics written by rank 0 only)."""

    def __init__(self, out_dir: str | Path, cfg: TrainConfig, rank: int) -> None:
        self.dir = Path(out_dir)
        self.ckpt_dir = self.dir / "checkpoints"
        self.cfg, self.rank = cfg, rank
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.tb = None

    def open_logs(self, start_iteration: int) -> None:
        if self.rank != 0:
            return
        metrics = self.dir / "metrics.jsonl"
        if start_iteration == 0:
            metrics.write_text("")
            (self.dir / "samples.jsonl").write_text("")
        else:  # drop what a killed run wrote after its last checkpoint
            for name in ("metrics.jsonl", "samples.jsonl"):
                path = self.dir / name
                if path.exists():
                    kept = [
                        line
                        for line in path.read_text().splitlines()
                        if line.strip() and json.loads(line).get("iteration", 0) <= start_iteration
                    ]
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

    def checkpoint_path(self, iteration: int) -> Path:
        return self.ckpt_dir / f"iter-{iteration:07d}.rank{self.rank}.pt"

    def save_checkpoint(self, agent: PPOAgent) -> Path:
        path = self.checkpoint_path(agent.iteration)
        tmp = path.with_suffix(".tmp")
        torch.save({"state": agent.state_dict(), "config": self.cfg.to_dict()}, tmp)
        os.replace(tmp, path)  # atomic: a kill -9 never leaves a half-written checkpoint
        old = sorted(self.ckpt_dir.glob(f"iter-*.rank{self.rank}.pt"))[: -self.cfg.run.keep_checkpoints]
        for p in old:
            p.unlink()
        return path

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.ckpt_dir.glob(f"iter-*.rank{self.rank}.pt"))
        return found[-1] if found else None

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _decode(tokenizer, ids, pad_id: int) -> str:
    return tokenizer.decode([int(t) for t in ids if int(t) != pad_id])


def sample_rows(agent: PPOAgent, n: int) -> list[dict]:
    batch = agent.last_batch
    tok = agent.policy.tokenizer
    rows = []
    for i in range(min(n, batch.context.shape[0])):
        rows.append(
            {
                "iteration": agent.iteration,
                "query": _decode(tok, batch.context[i], agent.policy.pad_id),
                "response": batch.texts[i],
                "score": float(batch.scores[i]),
                "valid": bool(batch.valid[i]),
            }
        )
    return rows


CURVES = (
    ("objective/score", "score"),
    ("objective/kl", "KL (nats)"),
    ("objective/kl_coef", "beta"),
    ("objective/entropy", "entropy"),
    ("ppo/val/var_explained", "value var. explained"),
    ("ppo/policy/clipfrac", "policy clip fraction"),
)
RLOO_CURVES = (
    *CURVES[:4],
    ("rloo/advantage_std", "advantage std"),
    ("rloo/policy/clipfrac", "policy clip fraction"),
)


def plot_curves(metrics_path: Path, out: Path, target_kl: float | None = None) -> Path:
    """A 2 x 3 PNG of the learning curves in ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    curves = RLOO_CURVES if rows and "rloo/loss" in rows[-1] else CURVES
    for ax, (key, title) in zip(axes.flat, curves):
        xs = [r["episodes"] for r in rows if key in r]
        ax.plot(xs, [r[key] for r in rows if key in r])
        if key == "objective/kl" and target_kl:
            ax.axhline(target_kl, color="gray", linestyle="--", label="target")
            ax.legend()
        ax.set_title(title)
        ax.set_xlabel("episodes")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------- the run
def train_policy(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Run PPO as ``cfg`` says; returns a summary (first/last score and KL, folder, iterations)."""
    rank, world = D.init_from_env()
    if cfg.online.enabled and (resume or world > 1):
        raise ValueError(
            "--online runs in one process and cannot --resume yet (the labels stay in the store: start a new "
            "run with online.store pointing at it)."
        )
    files = RunFiles(cfg.run.out_dir, cfg, rank)
    agent = build_agent(cfg)
    online = None
    if cfg.online.enabled:
        online = OnlineLoop.from_config(agent, cfg, cfg.online.store or str(files.dir / "labels.db"))
    start = 0
    if resume:
        ckpt = files.latest_checkpoint()
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {files.ckpt_dir}; start without --resume.")
        saved = torch.load(ckpt, weights_only=False)
        mine, theirs = cfg.to_dict(), saved["config"]
        changed = [
            f"{t}.{k}" for t in mine if t != "run" for k in mine[t] if mine[t][k] != theirs.get(t, {}).get(k)
        ]
        if changed:
            raise ValueError(
                f"--resume: the config differs from the checkpoint's in {changed}; only [run] may change."
            )
        agent.load_state_dict(saved["state"])
        start = agent.iteration
    elif any(files.ckpt_dir.glob("iter-*.pt")):
        raise FileExistsError(
            f"{files.ckpt_dir} already holds checkpoints; pass --resume to continue, or another run.out_dir."
        )
    if rank == 0:
        (files.dir / "config.toml").write_text(dump_toml(cfg.to_dict()))
    files.open_logs(start)
    total = cfg.iterations
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc="PPO", unit="it", file=sys.stderr)
    history: list[dict] = []
    t_start = time.perf_counter()
    try:
        while agent.iteration < total:
            try:
                online_stats = online.before_iteration() if online is not None else {}
                metrics = agent.step()
                if online is not None:
                    metrics.update(
                        online_stats, **{"online/labeler_score": online.labeler_score(agent.last_batch.texts)}
                    )
            except TrainingHalted as exc:
                saved = files.save_checkpoint(agent) if exc.phase == "rollout" else files.latest_checkpoint()
                report = {"iteration": agent.iteration + 1, "reason": str(exc), "resume_from": str(saved)}
                if rank == 0:
                    (files.dir / "halt.json").write_text(json.dumps(report, indent=1))
                print(f"[train-policy] HALTED: {exc}\n  resumable checkpoint: {saved}", file=sys.stderr)
                raise
            files.log(metrics)
            history.append(metrics)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    score=f"{metrics['objective/score']:.3f}",
                    kl=f"{metrics['objective/kl']:.2f}",
                    beta=f"{metrics['objective/kl_coef']:.3f}",
                )
            if cfg.run.sample_every and agent.iteration % cfg.run.sample_every == 0:
                rows = sample_rows(agent, cfg.run.samples_shown)
                files.log_samples(rows)
                if bar is not None:
                    for row in rows[:2]:
                        bar.write(f"  [{agent.iteration}] {row['score']:+.2f} | {row['response']!r}")
            if cfg.run.checkpoint_every and agent.iteration % cfg.run.checkpoint_every == 0:
                files.save_checkpoint(agent)
        if files.latest_checkpoint() != files.checkpoint_path(agent.iteration):
            files.save_checkpoint(agent)
    finally:
        if bar is not None:
            bar.close()
        files.close()
        if online is not None:
            online.close()
    curves = None
    if rank == 0 and cfg.run.plot and (files.dir / "metrics.jsonl").exists():
        curves = plot_curves(files.dir / "metrics.jsonl", files.dir / "curves.png", cfg.algo_config.target_kl)
    return {
        "out_dir": str(files.dir),
        "iterations": agent.iteration,
        "first": history[0] if history else None,
        "last": history[-1] if history else None,
        "seconds": time.perf_counter() - t_start,
        "curves": str(curves) if curves else None,
        "agent": agent,
    }


def add_parser(sub) -> dict:
    p = sub.add_parser(
        "train-policy",
        help="train a policy with PPO from a TOML config",
        description=__doc__,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default=None, help="a TOML file or a preset name from configs/")
    p.add_argument(
        "--algo",
        choices=["ppo", "rloo"],
        default=None,
        help="the algorithm (default: the config's run.algo, ppo)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in run.out_dir")
    p.add_argument("--online", action="store_true", help="collect labels while training (the [online] table)")
    p.add_argument("--no-progress", action="store_true")
    return {"train-policy": cli_train_policy}


def cli_train_policy(args, extra: list[str] = ()) -> int:
    flags = [
        *([f"--run.algo={args.algo}"] if args.algo else []),
        *(["--online.enabled=true"] if args.online else []),
    ]
    cfg = load_config(args.config, [*extra, *flags])
    try:
        out = train_policy(cfg, resume=args.resume, progress=not args.no_progress)
    except TrainingHalted:
        return 3
    if D.rank() == 0:
        first, last = out["first"], out["last"]
        if first and last:
            print(
                f"[train-policy] {out['iterations']} iterations in {out['seconds']:.0f}s; score "
                f"{first['objective/score']:.3f} -> {last['objective/score']:.3f}, KL "
                f"{last['objective/kl']:.2f} (beta {last['objective/kl_coef']:.4f}); {out['out_dir']}"
            )
    return 0
