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

Speed (``kv_cache=True``, the default). SB3 hands the policy one observation row per env and step, and
a training minibatch of single steps; run naively that is one full transformer pass per token while acting
and per token per epoch while training. Two exact shortcuts bring it to the built-in agents' cost:

* **Acting** (``forward``, ``get_distribution`` and ``predict_values`` under ``torch.no_grad`` in eval
  mode, as SB3's ``collect_rollouts`` calls them): the policy keeps a KV cache of the last observation
  batch, row by row. When every row of the next batch extends its row's cached tokens (the env appended
  the action; a row may also be unchanged), only the new tokens run, one column per row, against the
  cache. Anything else (a new episode, a reset, another batch size, a changed real token) falls back to a
  full pass over the whole batch, which rebuilds the cache. The cache is dropped when SB3 switches the
  training mode (at the start of each rollout and of each training phase; ``predict()`` loops keep it)
  and whenever the LM's weights changed in place since it was built (parameter version counters), so it
  never outlives the weights that made it; training mode and grad-enabled calls never read it.
* **Evaluating** (``evaluate_actions``, ``predict_values`` and ``forward`` outside acting,
  ``token_logprobs``, and the KL callback's reference pass): rows whose real tokens are a prefix of
  another row's real tokens (the steps of one episode, in any order, in SB3's shuffled minibatches) are
  grouped; one pass over each group's longest row gives the hidden state at every group member's last
  real position (a causal LM's state at position ``i`` depends on tokens ``<= i`` only; pads are
  invisible, :func:`textenv.models.tokenization.padded_inputs`). Gradients flow through that one pass.

Both give the per-row full pass's actions, log-probs, values and entropies within float tolerance
(``tests/test_sb3_cache.py``). ``kv_cache=False`` keeps the per-row full pass (the reference path).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from textenv.kl import AdaptiveKLController, FixedKLController, kl_per_token
from textenv.models.tokenization import banned_token_mask, padded_inputs
from textenv.models.trunk import freeze_lower
from textenv.wrappers import LMLogProbs, last_hidden

__all__ = ["KLPenaltyCallback", "TransformerPolicy", "prefix_groups", "shared_last_hidden"]


# ------------------------------------------------------------------------------ prefix sharing
def prefix_groups(ids: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Group observation rows (B, T) whose real (non-pad) tokens are a prefix of another row's.

    Returns ``(leaders, group, column)``: the row index of each group's longest row (G,), each row's group
    (B,), and the column of each row's last real token *inside its leader's row* (B,). Grouping is by
    content only (identical rows share one leader), so row order does not matter. None when a row has no
    real token (the caller then runs the plain per-row pass).
    """
    real = ids != pad_id
    counts = real.sum(1)
    if ids.shape[0] == 0 or bool((counts == 0).any()):
        return None
    width = ids.shape[1]
    cols = torch.arange(width, device=ids.device)
    order = torch.argsort((~real).long() * width + cols, dim=1)  # each row's real columns first, in order
    packed = ids.gather(1, order).cpu().numpy()  # the real tokens, left-aligned
    n = counts.cpu().numpy()
    index: dict[bytes, int] = {}  # every prefix of every leader's real tokens -> its group
    leaders: list[int] = []
    group = np.empty(len(n), dtype=np.int64)
    for r in np.argsort(-n, kind="stable"):  # longest first: a leader precedes the rows it contains
        g = index.get(packed[r, : n[r]].tobytes())
        if g is None:
            g = len(leaders)
            leaders.append(int(r))
            for length in range(1, int(n[r]) + 1):
                index.setdefault(packed[r, :length].tobytes(), g)
        group[r] = g
    leaders_t = torch.as_tensor(leaders, device=ids.device)
    group_t = torch.as_tensor(group, device=ids.device)
    column = order[leaders_t[group_t], counts - 1]
    return leaders_t, group_t, column


def _trim(ids: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, int]:
    """``ids`` without the leading and trailing columns that are pads in every row (pads are invisible to
    the padded forward pass, so this changes no real position); returns (ids, first kept column)."""
    keep = (ids != pad_id).any(0).nonzero()
    lo, hi = int(keep[0]), int(keep[-1]) + 1
    return ids[:, lo:hi], lo


def shared_last_hidden(base: nn.Module, obs: torch.Tensor, pad_id: int) -> torch.Tensor:
    """:func:`textenv.wrappers.last_hidden` with one pass per prefix group (:func:`prefix_groups`): the
    final hidden state at the last real position of each row (B, d), gradients included."""
    ids = obs.long()
    if ids.dim() == 1:
        ids = ids[None]
    groups = prefix_groups(ids, pad_id)
    if groups is None:
        return last_hidden(base, ids, pad_id)
    leaders, group, column = groups
    rows, lo = _trim(ids[leaders], pad_id)
    hidden = base(**padded_inputs(rows, pad_id)).last_hidden_state  # (G, T', d)
    return hidden[group, column - lo]


@dataclass
class _ActingCache:
    """The acting KV cache of the last observation batch (see the module docstring)."""

    ids: torch.Tensor  # (B, T) the observation rows it holds
    mask: torch.Tensor  # (B, L) attention mask over the cache slots
    next_pos: torch.Tensor  # (B,) position id of each row's next real token
    hidden: torch.Tensor  # (B, d) final hidden state at each row's last real token
    kv: Any  # the model's cache object
    key: str  # its keyword ("cache" or "past_key_values")
    weights: tuple  # the LM parameters' (data pointer, version) when it was built


class TransformerPolicy(ActorCriticPolicy):
    """SB3 actor-critic policy on a causal LM (see the module docstring).

    ``policy_kwargs``:
        model: a :func:`textenv.models.load_causal_lm` spec (default the embedded ``"smollm2-135m"``; it
            must use the env's tokenizer) or a loaded Hugging Face causal LM (then pass ``pad_id``).
        temperature: divides the logits in sampling and every log-prob (the task's: 0.7 books).
        pad_id: the env's pad id; read from the spec's tokenizer when ``model`` is a spec.
        top_blocks: train only the top ``k`` transformer blocks (None: the whole LM, the paper's).
        seed: initialisation seed of the tiny test models.
        kv_cache: the acting KV cache and the prefix-shared evaluation (default); False runs one full pass
            per observation row (the reference path; same results within float tolerance).
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
        kv_cache: bool = True,
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
        self.kv_cache, self._acting = bool(kv_cache), None
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
            kv_cache=self.kv_cache,
        )
        return data

    # -------------------------------------------------------------------------------- forward
    def set_training_mode(self, mode: bool) -> None:
        # SB3 calls this at the start of every rollout (False) and training phase (True), and in every
        # predict() (False): a change of mode drops the cache, a predict() loop keeps it
        if mode or mode != self.training:
            self._acting = None
        super().set_training_mode(mode)

    def _acting_mode(self) -> bool:
        return self.kv_cache and not self.training and not torch.is_grad_enabled()

    def _hidden(self, obs: torch.Tensor, act: bool = False, rebuild: bool = True) -> torch.Tensor:
        """Final hidden states (B, d) at each row's last real position: through the acting cache when
        ``act`` and acting is allowed (``rebuild=False``: a batch of another shape leaves the cache alone),
        else one pass per prefix group, else (``kv_cache=False``) one pass per row."""
        base = self.lm.base_model
        if not self.kv_cache:
            return last_hidden(base, obs, self.pad_id)
        if not (act and self._acting_mode()):
            return shared_last_hidden(base, obs, self.pad_id)
        ids = obs.long()
        if ids.dim() == 1:
            ids = ids[None]
        cache = self._acting
        if cache is not None and (cache.ids.shape != ids.shape or cache.ids.device != ids.device):
            if not rebuild:
                return shared_last_hidden(base, ids, self.pad_id)
            cache = None
        if cache is not None and cache.weights != self._weights_key():
            cache = None
        if cache is not None:
            hidden = self._extend(cache, ids)
            if hidden is not None:
                return hidden
        return self._prefill(ids)

    def _weights_key(self) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self.lm.parameters())

    def _prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """The full pass over every row; keeps its KV cache for the next acting step."""
        self._acting = None
        if bool((ids == self.pad_id).all(1).any()):  # a row without a real token: no cache
            return last_hidden(self.lm.base_model, ids, self.pad_id)
        rows, _ = _trim(ids, self.pad_id)
        inputs = padded_inputs(rows, self.pad_id)
        out = self.lm.base_model(**inputs, use_cache=True)
        mask = inputs["attention_mask"]
        last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(1)
        hidden = out.last_hidden_state[torch.arange(len(ids), device=ids.device), last]
        key = "cache" if "cache" in out else "past_key_values"
        if out.get(key) is not None:
            self._acting = _ActingCache(
                ids.clone(), mask, mask.sum(1), hidden, out[key], key, self._weights_key()
            )
        return hidden

    def _extend(self, cache: _ActingCache, ids: torch.Tensor) -> torch.Tensor | None:
        """Run only the tokens that each row appended since the cached batch; None when a row does not
        extend its cached row (then the caller runs the full pass)."""
        old, pad = cache.ids, self.pad_id
        old_real, new_real = old != pad, ids != pad
        changed = ids != old
        if bool((changed & old_real).any()):  # a real token changed or vanished: a new episode
            return None
        width = ids.shape[1]
        cols = torch.arange(width, device=ids.device)
        added = changed & new_real
        last_old = (old_real * cols).amax(1, keepdim=True)
        if bool((added & (cols <= last_old)).any()):  # a token inserted before the end: not an extension
            return None
        counts = added.sum(1)
        k = int(counts.max())
        if k == 0:
            return cache.hidden
        if cache.mask.shape[1] + k > 2 * width:  # keep the cache short: rebuild it
            return None
        order = torch.argsort((~added).long() * width + cols, dim=1)[:, :k]  # added columns, in order
        step = torch.arange(k, device=ids.device)
        valid = step < counts[:, None]
        new_ids = torch.where(valid, ids.gather(1, order), torch.zeros_like(order))
        positions = torch.where(valid, cache.next_pos[:, None] + step, torch.zeros_like(order))
        mask = torch.cat([cache.mask, valid.long()], 1)
        out = self.lm.base_model(
            input_ids=new_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{cache.key: cache.kv},
        )
        rows = torch.arange(len(ids), device=ids.device)
        fresh = out.last_hidden_state[rows, (counts - 1).clamp(min=0)]
        hidden = torch.where((counts > 0)[:, None], fresh, cache.hidden)
        self._acting = _ActingCache(
            ids.clone(), mask, cache.next_pos + counts, hidden, out[cache.key], cache.key, cache.weights
        )
        return hidden

    def _head(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tempered next-token logits (B, V) and values (B, 1) from final hidden states (B, d)."""
        logits = self.lm.get_output_embeddings()(h)[:, : self.vocab_size].float()
        if self.banned is not None:
            logits = logits.masked_fill(self.banned, -1e9)
        return logits / self.temperature, self.value_net(h).float()

    def _logits_values(self, obs: torch.Tensor, act: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Tempered next-token logits (B, V) and values (B, 1) for observation rows (B, T)."""
        return self._head(self._hidden(obs, act))

    def _distribution(self, logits: torch.Tensor) -> CategoricalDistribution:
        return self.action_dist.proba_distribution(action_logits=logits)

    def forward(self, obs: torch.Tensor, deterministic: bool = False):
        logits, values = self._logits_values(obs, act=True)
        dist = self._distribution(logits)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, values, dist.log_prob(actions)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor):
        logits, values = self._logits_values(obs)
        dist = self._distribution(logits)
        return values, dist.log_prob(actions.reshape(-1)), dist.entropy()

    def get_distribution(self, obs: torch.Tensor) -> CategoricalDistribution:
        return self._distribution(self._logits_values(obs, act=True)[0])

    def predict_values(self, obs: torch.Tensor) -> torch.Tensor:
        # SB3 asks for the values of the last observations (extending the cache) and of single terminal
        # observations (another batch shape: they must not evict the cache)
        h = self._hidden(obs, act=True, rebuild=False)
        return self.value_net(h).float()

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
        batch_size: sequences per reference forward pass (an episode's steps share one sequence when the
            reference is an ``LMLogProbs`` or a ``TransformerPolicy``).
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
    def _reference_logprobs(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log rho(actions | obs) for rows (B, T), in one pass per prefix group when the reference is an
        :class:`LMLogProbs` or a :class:`TransformerPolicy`, else through its ``token_logprobs``."""
        ref = self.reference
        if type(ref) is LMLogProbs:  # LMLogProbs.logits over shared prefixes
            h = shared_last_hidden(ref.lm.base_model, obs, ref.pad_id)
            logits = ref.lm.get_output_embeddings()(h).float()
            if ref.vocab_size is not None:
                logits = logits[:, : ref.vocab_size]
            if 0 <= ref.pad_id < logits.shape[-1]:
                logits = logits.index_fill(-1, torch.tensor([ref.pad_id], device=logits.device), -1e9)
            logp = torch.log_softmax(logits / ref.temperature, dim=-1)
            return logp.gather(-1, actions.long().reshape(-1, 1).to(logp.device))[:, 0]
        return ref.token_logprobs(obs, actions)

    @torch.no_grad()
    def _on_rollout_end(self) -> None:
        buf = self.model.rollout_buffer
        n_steps, n_envs = buf.log_probs.shape[:2]
        # env-major order, so that the steps of one episode are neighbours and share a reference pass
        obs = torch.as_tensor(buf.observations.reshape(n_steps, n_envs, -1).swapaxes(0, 1))
        obs = obs.reshape(n_steps * n_envs, -1)
        actions = torch.as_tensor(buf.actions.reshape(n_steps, n_envs).swapaxes(0, 1)).reshape(-1).long()
        device = self.model.policy.device
        shared = type(self.reference) is LMLogProbs or isinstance(self.reference, TransformerPolicy)
        chunk = self.batch_size * (self.response_length if shared else 1)  # rows -> ~batch_size passes
        ref = torch.cat(
            [
                self._reference_logprobs(obs[i : i + chunk].to(device), actions[i : i + chunk]).float().cpu()
                for i in range(0, len(obs), chunk)
            ]
        )
        ref = ref.reshape(n_envs, n_steps).T.reshape(buf.log_probs.shape)
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
