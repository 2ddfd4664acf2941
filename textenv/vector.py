"""``TextVectorEnv``: the same MDP as :class:`textenv.env.TextEnv` for B prompts at once.

A thin wrapper over :class:`textenv.task.Task` (``envs.unwrapped.task``). Natively batched: a step writes one column of token ids, and the reward function is called once for
the whole batch on the last step. Sub-env ``i`` draws prompts from its own generator seeded with
``seed + i`` (Gymnasium's ``SyncVectorEnv`` convention), so under the same seeds the vector env equals B
single envs bit for bit. All sub-envs end together (every episode lasts ``response_length`` steps);
autoreset follows Gymnasium's default ``NEXT_STEP`` mode: the step after the last one resets every
sub-env and ignores its actions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from textenv import data as data_mod
from textenv.env import TaskViews, check_render_mode
from textenv.task import Prompt, Task
from textenv.tasks import TaskConfig, get_task


class TextVectorEnv(TaskViews, VectorEnv):
    """B token-level text environments stepped together (see the module docstring).

    Build it with ``gym.make_vec(id, num_envs=B, vectorization_mode="vector_entry_point", **kwargs)`` or
    directly; ``kwargs`` are those of :class:`textenv.env.TextEnv`.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        task: str | TaskConfig = "BookSentiment-v0",
        num_envs: int = 1,
        *,
        tokenizer: Any = None,
        reward_fn: Callable | str | None = None,
        prompts: Sequence[str | data_mod.Record] | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}.")
        check_render_mode(render_mode)
        self.config = get_task(task, **overrides)
        self.task = Task(self.config, tokenizer, reward_fn, prompts)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.single_action_space, self.single_observation_space = self.task.spaces()
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._rngs: list[np.random.Generator] | None = None
        self._obs: np.ndarray | None = None
        self._prompts: list[Prompt] = []
        self._t = 0
        self._needs_reset = False

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset(seed=...) got {len(seeds)} seeds for {self.num_envs} envs.")
        if self._rngs is None or seed is not None:
            self._rngs = [
                rng if s is None and self._rngs is not None else seeding.np_random(s)[0]
                for s, rng in zip(seeds, self._rngs or [None] * self.num_envs)
            ]
        self._reset_all()
        return self._obs.copy(), self._infos()

    def _reset_all(self) -> None:
        rt = self.task
        self._prompts = [rt.draw(rng) for rng in self._rngs]
        self._obs = np.full((self.num_envs, rt.obs_length), rt.pad_id, dtype=np.int64)
        self._obs[:, : rt.context_length] = np.stack([rt.context_row(p) for p in self._prompts])
        self._t = 0
        self._needs_reset = False

    def _infos(self) -> dict:
        rt = self.task
        response_mask = np.zeros((self.num_envs, self.config.response_length), dtype=bool)
        response_mask[:, : self._t] = True
        return {
            "prompt_id": np.array([p.id for p in self._prompts], dtype=object),
            "attention_mask": self._obs != rt.pad_id,
            "query_mask": self._obs[:, : rt.context_length] != rt.pad_id,
            "response_mask": response_mask,
        }

    def step(self, actions):
        if self._obs is None:
            raise RuntimeError("step() called before reset(); call envs.reset() first.")
        rt, n = self.task, self.num_envs
        if self._needs_reset:  # NEXT_STEP autoreset: this step only resets
            self._reset_all()
            zeros = np.zeros(n, dtype=bool)
            return self._obs.copy(), np.zeros(n), zeros, zeros.copy(), self._infos()
        actions = np.asarray(actions)
        if actions.shape != (n,):
            raise ValueError(
                f"actions must have shape ({n},), one token id per env; got shape {actions.shape}."
            )
        actions = rt.check_actions(actions)
        self._obs[:, rt.context_length + self._t] = actions
        self._t += 1
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        infos = self._infos()
        if self._t == self.config.response_length:
            terminated[:] = True
            self._needs_reset = True
            responses = self._obs[:, rt.context_length :]
            queries = np.stack([rt.query_row(p) for p in self._prompts])
            out = rt.score(queries, responses, [p.reference for p in self._prompts])
            rewards = out.pop("reward").astype(np.float64)
            for key, value in out.items():
                infos[key] = value
                infos["_" + key] = np.ones(n, dtype=bool)
        return self._obs.copy(), rewards, terminated, np.zeros(n, dtype=bool), infos

    def render(self) -> list[str] | None:
        if self.render_mode != "ansi" or self._obs is None:
            return None
        return [self.task.render_row(o, self._t) for o in self._obs]
