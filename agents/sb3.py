"""stable-baselines3 on the text environments: a transformer ``ActorCriticPolicy`` and the KL penalty.

``TransformerPolicy`` wraps any causal LM from :func:`textenv.models.load_causal_lm` for SB3's PPO and
A2C. The action logits are the LM's own output layer at the last real position of the observation (no
new vocabulary-sized layer and no orthogonal re-initialisation of pretrained weights), divided by the
temperature; the value is a zero-initialised linear head on the same final hidden state (the paper's
choice, §1.8). Observations are the env's 1-D int ``Box`` of token ids; SB3 may hand them over as floats,
which hold ids exactly up to 2**24.

``KLPenaltyCallback`` turns SB3's rewards into the paper's per-token KL-shaped rewards (PAPER.md §1.4):
after each rollout it adds ``-beta * (log pi - log rho)`` to every step of the buffer, with ``log pi`` the
log-probs SB3 recorded while acting and ``log rho`` from one batched pass of the reference model, then
recomputes returns and advantages. An adaptive controller (``textenv.kl``) is updated once per rollout.
``textenv.wrappers.KLPenalty`` is the per-step alternative for algorithms without a rollout buffer.

Example::

    import gymnasium as gym
    from stable_baselines3 import PPO
    import textenv
    from agents.sb3 import KLPenaltyCallback, TransformerPolicy

    env = gym.make("BookSentiment-v0")            # the embedded SmolLM2 tokenizer and a mock reward
    model = PPO(TransformerPolicy, env, n_steps=24, batch_size=24, policy_kwargs={"temperature": 0.7})
    model.learn(2_400, callback=KLPenaltyCallback(kl_coef=0.15, target_kl=6.0))

Each SB3 step runs the transformer over the whole observation (no KV cache across steps: SB3's
policies see one observation at a time), so this path is slower per token than the built-in agents.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from textenv.kl import AdaptiveKLController, FixedKLController, kl_per_token
from textenv.models.tokenization import banned_token_mask
from textenv.models.trunk import freeze_lower
from textenv.wrappers import LMLogProbs, last_hidden

__all__ = ["KLPenaltyCallback", "TransformerPolicy"]


class TransformerPolicy(ActorCriticPolicy):
    """SB3 actor-critic policy on a causal LM (see the module docstring).

    ``policy_kwargs``:
        model: a :func:`textenv.models.load_causal_lm` spec (default the embedded ``"smollm2-135m"``; it
            must use the env's tokenizer) or a loaded Hugging Face causal LM (then pass ``pad_id``).
        temperature: divides the logits in sampling and every log-prob (the task's: 0.7 books).
        pad_id: the env's pad id; read from the spec's tokenizer when ``model`` is a spec.
        top_blocks: train only the top ``k`` transformer blocks (None: the whole LM, the paper's).
        seed: initialisation seed of the tiny test models.
        optimizer_class, optimizer_kwargs: as in SB3 (A2C passes RMSprop).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule,
        model: str | nn.Module = "smollm2-135m",
        temperature: float = 1.0,
        pad_id: int | None = None,
        top_blocks: int | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise TypeError(f"TransformerPolicy needs a Discrete (token) action space, got {action_space}.")
        if not (isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 1):
            raise TypeError(
                f"TransformerPolicy needs the text envs' 1-D Box of token ids, got {observation_space}."
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        for name in ("net_arch", "ortho_init", "use_sde"):
            if kwargs.get(name):
                raise ValueError(f"{name} does not apply to TransformerPolicy (the LM is the network).")
        kwargs.pop("net_arch", None)
        kwargs["ortho_init"] = False  # never re-initialise pretrained weights
        # plain attributes (no nn.Module yet: nn.Module.__init__ has not run); _build loads the LM
        object.__setattr__(self, "model_arg", model)  # not registered twice: _build registers it as .lm
        self.temperature, self.pad_arg = float(temperature), pad_id
        self.top_blocks, self.seed = top_blocks, int(seed)
        super().__init__(observation_space, action_space, lr_schedule, net_arch=[], **kwargs)

    # ------------------------------------------------------------------------------- building
    def _build(self, lr_schedule) -> None:
        if isinstance(self.model_arg, nn.Module):
            if self.pad_arg is None:
                raise ValueError(
                    "pass policy_kwargs={'pad_id': env.unwrapped.pad_token_id} with a loaded LM."
                )
            lm, pad_id = self.model_arg, int(self.pad_arg)
        else:
            from textenv.models import load_causal_lm

            lm, tok = load_causal_lm(self.model_arg, seed=self.seed)
            pad_id = int(self.pad_arg if self.pad_arg is not None else tok.pad_token_id)
        n = int(self.action_space.n)
        rows = int(lm.get_output_embeddings().weight.shape[0])
        if rows < n:
            raise ValueError(
                f"the LM has {rows} output rows but the env has {n} token actions; use the LM whose "
                "tokenizer built the env (gym.make(id, tokenizer=<the same spec>))."
            )
        high = int(np.max(self.observation_space.high))
        if pad_id >= n and high != pad_id:
            raise ValueError(
                f"pad id {pad_id} differs from the env's ({high}); build the env with the policy's tokenizer."
            )
        self.lm, self.pad_id, self.vocab_size = lm, pad_id, n
        # a pad inside the vocabulary (Gemma's <pad> = 0) is never an action (rows past n are cut off)
        self.register_buffer("banned", banned_token_mask(n, n, pad_id), persistent=False)
        freeze_lower(self.lm, self.top_blocks)
        self.value_net = nn.utils.skip_init(nn.Linear, lm.config.hidden_size, 1)  # no global-RNG draw
        nn.init.zeros_(self.value_net.weight)  # V == 0 at the start, as the paper's value head
        nn.init.zeros_(self.value_net.bias)
        self.action_dist = CategoricalDistribution(n)
        params = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = self.optimizer_class(params, lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for key in ("net_arch", "activation_fn", "ortho_init", "use_sde", "log_std_init", "squash_output"):
            data.pop(key, None)
        for key in ("full_std", "use_expln"):
            data.pop(key, None)
        data.update(
            model=self.model_arg,
            temperature=self.temperature,
            pad_id=self.pad_arg,
            top_blocks=self.top_blocks,
            seed=self.seed,
        )
        return data

    # -------------------------------------------------------------------------------- forward
    def _logits_values(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tempered next-token logits (B, V) and values (B, 1) for observation rows (B, T)."""
        h = last_hidden(self.lm.base_model, obs, self.pad_id)  # (B, d)
        logits = self.lm.get_output_embeddings()(h)[:, : self.vocab_size].float()
        if self.banned is not None:
            logits = logits.masked_fill(self.banned, -1e9)
        return logits / self.temperature, self.value_net(h).float()

    def _distribution(self, logits: torch.Tensor) -> CategoricalDistribution:
        return self.action_dist.proba_distribution(action_logits=logits)

    def forward(self, obs: torch.Tensor, deterministic: bool = False):
        logits, values = self._logits_values(obs)
        dist = self._distribution(logits)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, values, dist.log_prob(actions)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor):
        logits, values = self._logits_values(obs)
        dist = self._distribution(logits)
        return values, dist.log_prob(actions.reshape(-1)), dist.entropy()

    def get_distribution(self, obs: torch.Tensor) -> CategoricalDistribution:
        return self._distribution(self._logits_values(obs)[0])

    def predict_values(self, obs: torch.Tensor) -> torch.Tensor:
        return self._logits_values(obs)[1]

    def _predict(self, observation: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.get_distribution(observation).get_actions(deterministic=deterministic)

    @torch.no_grad()
    def token_logprobs(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Tempered log-probs of ``actions`` (B,) in observation rows ``obs`` (B, T) (a log-prob source
        for :class:`textenv.wrappers.KLPenalty`)."""
        logits, _ = self._logits_values(obs.to(self.device))
        return torch.log_softmax(logits, -1).gather(-1, actions.long().reshape(-1, 1).to(self.device))[:, 0]

    def reference(self) -> LMLogProbs:
        """A frozen copy of the LM as it is now: the paper's rho, as a log-prob source."""
        lm = copy.deepcopy(self.lm).eval()
        for p in lm.parameters():
            p.requires_grad_(False)
        return LMLogProbs(lm, self.pad_id, self.temperature, self.vocab_size)


class KLPenaltyCallback(BaseCallback):
    """Adds the paper's per-token KL penalty to SB3's rollout buffer (see the module docstring).

    Args:
        reference: a log-prob source for rho (default: a frozen copy of the policy when training starts).
        kl_coef: the initial beta (0.15 books; §1.8).
        target_kl: a target KL per episode (nats) for the adaptive controller (§1.5); None keeps beta fixed.
        horizon: the controller's horizon in episodes (10,000).
        estimator: ``k1`` (the paper's) or ``k3``.
        batch_size: rows per reference forward pass.
    """

    def __init__(
        self,
        reference: Any = None,
        kl_coef: float = 0.15,
        target_kl: float | None = None,
        horizon: int = 10_000,
        estimator: str = "k1",
        batch_size: int = 64,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.reference = reference
        self.controller = (
            AdaptiveKLController(kl_coef, target_kl, horizon) if target_kl else FixedKLController(kl_coef)
        )
        self.estimator, self.batch_size = estimator, int(batch_size)
        self.history: list[dict] = []

    def _on_training_start(self) -> None:
        policy = self.model.policy
        if not isinstance(policy, TransformerPolicy):
            raise TypeError(f"KLPenaltyCallback needs a TransformerPolicy, got {type(policy).__name__}.")
        if self.reference is None:
            self.reference = policy.reference()
        self.response_length = int(self.training_env.get_attr("config")[0].response_length)

    def _on_step(self) -> bool:
        return True

    @torch.no_grad()
    def _on_rollout_end(self) -> None:
        buf = self.model.rollout_buffer
        obs = torch.as_tensor(buf.observations.reshape(-1, buf.observations.shape[-1]))
        actions = torch.as_tensor(buf.actions.reshape(-1)).long()
        device = self.model.policy.device
        ref = torch.cat(
            [
                self.reference.token_logprobs(
                    obs[i : i + self.batch_size].to(device), actions[i : i + self.batch_size]
                )
                .float()
                .cpu()
                for i in range(0, len(obs), self.batch_size)
            ]
        ).reshape(buf.log_probs.shape)
        logprobs = torch.as_tensor(buf.log_probs).float()
        kl = kl_per_token(logprobs, ref, self.estimator).numpy()  # (n_steps, n_envs)
        beta = self.controller.value
        buf.rewards += (-beta * kl).astype(buf.rewards.dtype)  # §1.4: R_t = score_t - beta * KL_t
        buf.compute_returns_and_advantage(last_values=self.locals["values"], dones=self.locals["dones"])
        episode_kl = float(kl.mean()) * self.response_length  # mean KL per episode (nats)
        episodes = kl.size / self.response_length
        self.controller.update(episode_kl, round(episodes))
        stats = {"objective/kl": episode_kl, "objective/kl_coef": beta}
        self.history.append(stats)
        for key, value in stats.items():
            self.logger.record(key, value)
