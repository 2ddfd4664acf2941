"""From a validated :class:`agents.config.TrainConfig` to the objects of a run: the policy, the reward
function, the vector env and the agent (the algorithm from the registry)."""

from __future__ import annotations

import torch

from agents import distributed as D
from agents.algos import ALGOS
from agents.config import ConfigError, TrainConfig


def build_policy(cfg: TrainConfig):
    """The policy (``[policy]``), built under a forked torch RNG seeded with the algorithm's seed so that
    any random initialisation (LoRA adapters) is reproducible without touching the caller's global RNG."""
    from agents.policy import PolicyWithValue

    value_model = None
    if cfg.policy.value != "shared":
        from rewards.model import RewardModel

        value_model = RewardModel.load(cfg.policy.value, device=cfg.run.torch_device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.algo_config.seed)
        policy = PolicyWithValue.from_spec(
            cfg.policy.model,
            temperature=cfg.temperature(),
            seed=cfg.algo_config.seed,
            device=cfg.run.torch_device,
            value_model=value_model,
        )
        if cfg.policy.train == "top_blocks":
            policy.set_trainable(cfg.policy.top_blocks)
        elif cfg.policy.train == "lora":
            policy.enable_lora(cfg.policy.lora_r, cfg.policy.lora_alpha, cfg.policy.lora_dropout)
    apply_run_settings(policy, cfg.run)
    return policy


def apply_run_settings(policy, run) -> None:
    """``run.precision`` and ``run.compile_sampler`` on ``policy``; TF32 matmuls on CUDA."""
    cuda = torch.device(run.torch_device).type == "cuda"
    if cuda:  # TF32 tensor cores for the float32 matmuls that autocast leaves (and for plain fp32 runs)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    policy.set_precision(run.precision)
    policy.compile_sampler = run.compile_sampler == "on" or (run.compile_sampler == "auto" and cuda)


def build_reward(cfg: TrainConfig, tokenizer):
    """``None`` (the task's built-in score), the reward function of ``env.reward`` resolved for the
    policy's ``tokenizer`` by :func:`textenv.reward_plugins.resolve_reward` (a built-in score, a
    reward-model folder, a sequence-classification checkpoint, a reward server's URL, module:function;
    models on ``run.device``, ``env.reward_batch_size`` rows at a time, ``env.reward_options``), or
    (online) an empty :class:`agents.online.SwappableReward`, which refuses to score until a reward model
    is set."""
    if cfg.online.enabled:
        from agents.online import SwappableReward

        return SwappableReward()
    if cfg.env.reward == "builtin":
        return None
    from textenv.reward_plugins import RewardPluginError, RewardSpec, resolve_reward

    try:
        spec = RewardSpec.from_options(
            cfg.env.reward,
            cfg.env.reward_options,
            device=cfg.run.torch_device,
            batch_size=cfg.env.reward_batch_size,
        )
        return resolve_reward(spec, tokenizer)
    except (RewardPluginError, OSError) as exc:  # OSError: a model that cannot be loaded here
        raise ConfigError(f"env.reward = {cfg.env.reward!r}: {exc}") from exc


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f'run.device = {device!r}, but this torch has no CUDA device; use run.device = "cpu".'
        )


def build_agent(cfg: TrainConfig):
    """The agent of ``run.algo`` on a vector env of this process's share of the batch."""
    from textenv.models import ModelUnavailableError
    from textenv.vector import TextVectorEnv

    algo = cfg.algo_config
    world = D.world_size()
    if algo.batch_size % world:
        raise ConfigError(
            f"{cfg.run.algo}.batch_size = {algo.batch_size} is not divisible by {world} processes."
        )
    _check_device(cfg.run.torch_device)
    try:
        policy = build_policy(cfg)
    except (ModelUnavailableError, FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"[policy] {exc}") from exc
    try:
        envs = TextVectorEnv(
            cfg.env.task,
            num_envs=algo.batch_size // world,
            tokenizer=policy.tokenizer,
            reward_fn=build_reward(cfg, policy.tokenizer),
            **cfg.env.overrides,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[env] {exc}") from exc
    return ALGOS[cfg.run.algo].agent(policy, envs, algo, parallel=cfg.run.parallel)
