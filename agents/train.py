"""``textenv train-policy``: a run of any registered algorithm from a TOML config, with metrics, samples,
checkpoints and exact resume.

The config's tables are described in :mod:`agents.config` (``configs/*.toml`` are the presets); the run
folder's layout in :mod:`agents.runfiles`; the algorithms in :mod:`agents.algos`. ``--key=value``
overrides any entry (``--optim.lr=2e-5``, ``--run.iterations=3``; a bare ``--lr=2e-5`` works when the
name is unique, or names a setting of the algorithm that runs). ``--resume`` continues from the newest
intact checkpoint exactly: on CPU with the same seed the metrics equal an uninterrupted run's bit for bit
(tested with ``kill -9``).

``--online --resume`` continues an online run (:mod:`agents.online`) killed anywhere, while waiting for
labels, in a reward-model retrain or mid-PPO: the checkpoints also hold the loop's state and the reward
model in use (an online run also checkpoints before its first iteration and after every retrain, when
``run.checkpoint_every`` is not 0), and the store is the record of what was asked and answered: nothing
already asked is asked again, and the answers that came in while the run was down are used.

The andon cord (:class:`agents.loop.TrainingHalted`): a NaN/inf or a KL runaway stops the run with the
diagnostic in ``halt.json`` and on stderr, and a checkpoint to ``--resume`` from (exit status 3). A bad
config value prints one line per problem and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from agents import checkpoint as ckpt
from agents import distributed as D
from agents.algos import ALGOS
from agents.build import build_agent
from agents.config import ConfigError, TrainConfig, load_config
from agents.loop import TrainingHalted
from agents.online import OnlineLoop
from agents.runfiles import RunFiles, plot_curves, sample_rows
from textenv.reward_plugins import RewardEndpointError


def _progress_bar(total: int, start: int, algo: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc=algo.upper(), unit="it", file=sys.stderr)


def _halt(files: RunFiles, agent, exc: TrainingHalted, online: OnlineLoop | None) -> None:
    saved = files.save_checkpoint(agent, online) if exc.phase == "rollout" else files.latest_checkpoint()
    report = {"iteration": agent.iteration + 1, "reason": str(exc), "resume_from": str(saved)}
    if files.rank == 0:
        (files.dir / "halt.json").write_text(json.dumps(report, indent=1))
    print(f"[train-policy] HALTED: {exc}\n  resumable checkpoint: {saved}", file=sys.stderr)


def _after_iteration(
    cfg: TrainConfig, files: RunFiles, agent, metrics: dict, bar, online: OnlineLoop | None
) -> None:
    files.log(metrics)
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
        files.save_checkpoint(agent, online)


def _before_iteration(cfg: TrainConfig, files: RunFiles, agent, online: OnlineLoop | None) -> dict:
    """The online loop's requests, waiting and retraining; a checkpoint right after a retrain (the agent
    unchanged, the loop with its new reward model), so that a kill in the PPO iteration that follows does
    not redo the retrain."""
    if online is None:
        return {}
    stats = online.before_iteration()
    if online.checkpoint_due:
        online.checkpoint_due = False
        if cfg.run.checkpoint_every:
            files.save_checkpoint(agent, online)
    return stats


def _plot(cfg: TrainConfig, files: RunFiles) -> Path | None:
    metrics = files.dir / "metrics.jsonl"
    if not (cfg.run.plot and metrics.exists()):
        return None
    return plot_curves(metrics, files.dir / "curves.png", cfg.run.algo, cfg.kl.target)


def _resume(files: RunFiles, agent, online, rank: int, world: int) -> int:
    """:meth:`RunFiles.resume`, refusing in one line checkpoints of another number of processes."""
    ranks = ckpt.ranks_written(files.ckpt_dir)
    if ranks and rank not in ranks:
        raise ConfigError(
            f"--resume: the checkpoints in {files.ckpt_dir} were written by {max(ranks) + 1} process(es) and "
            f"this run has {world}; resume on {max(ranks) + 1}."
        )
    try:
        return files.resume(agent, online)
    except D.ResumeMismatch as exc:
        raise ConfigError(f"--resume: {exc}") from None


def reached_kl_budget(cfg: TrainConfig, kls: list[float]) -> str | None:
    """``kl.stop_at_target``: the stop message once the mean of the last ``kl.stop_window`` of ``kls``
    (fewer at the start; nats per response, the KL the controller reads; the agent's ``recent_kls``,
    which a checkpoint keeps) has reached the target, else None."""
    window = kls[-cfg.kl.stop_window :]
    if not cfg.kl.stop_at_target or not window:
        return None
    kl = sum(window) / len(window)
    if kl < cfg.kl.target:
        return None
    over = f" (mean of the last {len(window)})" if len(window) > 1 else ""
    return f"KL {kl:.3g}{over} reached kl.target {cfg.kl.target:g}"


def train_policy(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Run ``run.algo`` as ``cfg`` says; returns a summary (first/last metrics of this invocation, the
    iteration it started from, the folder, the agent)."""
    rank, world = D.init_from_env(cfg.run.device)
    if cfg.online.enabled and world > 1:
        raise ConfigError("--online runs in one process (it is the one that asks for labels).")
    if cfg.run.parallel == "none" and world > 1:
        raise ConfigError(
            f'run.parallel = "none", but this run was launched on {world} processes; use "ddp" (or "fsdp" for '
            "a model that does not fit one device), or launch one process."
        )
    files = RunFiles(cfg.run.out_dir, cfg, rank)
    if not resume and files.has_checkpoints():
        raise FileExistsError(
            f"{files.ckpt_dir} already holds checkpoints; pass --resume to continue, or another run.out_dir."
        )
    agent = build_agent(cfg)
    online = (
        OnlineLoop.from_config(agent, cfg, cfg.online.store or str(files.dir / "labels.db"))
        if cfg.online.enabled
        else None
    )
    start = _resume(files, agent, online, rank, world) if resume else 0
    files.write_config()
    files.open_logs(start)
    if online is not None and not resume and cfg.run.checkpoint_every:
        files.save_checkpoint(agent, online)  # iteration 0: a kill while the first labels come in resumes
    bar = _progress_bar(cfg.iterations, start, cfg.run.algo) if progress and rank == 0 else None
    history: list[dict] = []
    # a resumed run whose checkpoint already met its KL budget (killed between its last checkpoint and
    # its exit) ends here, as the uninterrupted run did
    stopped = reached_kl_budget(cfg, agent.recent_kls)
    t_start = time.perf_counter()
    try:
        while stopped is None and agent.iteration < cfg.iterations:
            try:
                online_stats = _before_iteration(cfg, files, agent, online)
                metrics = agent.step()
            except TrainingHalted as exc:
                _halt(files, agent, exc, online)
                raise
            if online is not None:
                metrics.update(
                    online_stats, **{"online/labeler_score": online.labeler_score(agent.last_batch.texts)}
                )
            _after_iteration(cfg, files, agent, metrics, bar, online)
            history.append(metrics)
            # the agent's last KLs, restored on resume: the same window as an uninterrupted run's
            stopped = reached_kl_budget(cfg, agent.recent_kls)
            if stopped:
                break
        if not files.checkpoint_path(agent.iteration).is_dir():  # the last iteration not saved yet
            files.save_checkpoint(agent, online)
    finally:
        if bar is not None:
            bar.close()
        files.close()
        if online is not None:
            online.close()
    curves = _plot(cfg, files) if rank == 0 else None
    return {
        "out_dir": str(files.dir),
        "iterations": agent.iteration,
        "start": start,
        "stopped": stopped,
        "first": history[0] if history else None,
        "last": history[-1] if history else None,
        "seconds": time.perf_counter() - t_start,
        "curves": str(curves) if curves else None,
        "agent": agent,
    }


def add_parser(sub) -> dict:
    p = sub.add_parser(
        "train-policy",
        help="train a policy (PPO, RLOO, ...) from a TOML config",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        default=None,
        help="a TOML file, or a preset name (shipped in the package: agents/configs/; see the list on a wrong name)",
    )
    p.add_argument(
        "--algo",
        choices=sorted(ALGOS),
        default=None,
        help="the algorithm (default: the config's run.algo, ppo): "
        + "; ".join(f"{name}: {a.summary}" for name, a in ALGOS.items()),
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest intact checkpoint (with --online: the online loop too)",
    )
    p.add_argument("--online", action="store_true", help="collect labels while training (the [online] table)")
    p.add_argument("--no-progress", action="store_true")
    return {"train-policy": cli_train_policy}


def _summary_line(out: dict) -> str:
    first, last = out["first"], out["last"]
    done = out["iterations"] - out["start"]
    span = f"iterations {out['start'] + 1}-{out['iterations']}" if out["start"] else f"{done} iteration(s)"
    if out.get("stopped"):
        span += f" (stopped: {out['stopped']})"
    return (
        f"[train-policy] {span} in {out['seconds']:.0f}s; score {first['objective/score']:.3f} -> "
        f"{last['objective/score']:.3f}, KL {last['objective/kl']:.2f} (beta {last['objective/kl_coef']:.4f}); "
        f"{out['out_dir']}"
    )


def cli_train_policy(args, extra: list[str] = ()) -> int:
    flags = [
        *([f"--run.algo={args.algo}"] if args.algo else []),
        *(["--online.enabled=true"] if args.online else []),
    ]
    try:
        cfg = load_config(args.config, [*extra, *flags])
        out = train_policy(cfg, resume=args.resume, progress=not args.no_progress)
    except TrainingHalted:
        return 3
    except (ConfigError, FileNotFoundError, FileExistsError) as exc:
        print(f"textenv train-policy: {exc}", file=sys.stderr)
        return 2
    except RewardEndpointError as exc:  # a remote reward went down mid-run: one line, no traceback
        print(
            f"textenv train-policy: {exc} Nothing of the interrupted iteration was applied; once the "
            "endpoint answers, continue with --resume.",
            file=sys.stderr,
        )
        return 1
    if D.rank() == 0 and out["first"] and out["last"]:
        print(_summary_line(out))
    elif D.rank() == 0:
        why = f"stopped: {out['stopped']}" if out.get("stopped") else f"of {cfg.iterations}"
        print(f"[train-policy] already at iteration {out['iterations']} ({why}); nothing to do.")
    return 0
