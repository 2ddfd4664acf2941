"""``TextEnv``: one prompt, one token per step, the score of the truncated response at the end.

A thin wrapper over :class:`textenv.task.Task` (``env.unwrapped.task``), which holds the prompts, the
contexts, the truncation rule and the score.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from textenv import data as data_mod
from textenv.task import NonFiniteRewardError, Prompt, Task
from textenv.tasks import TaskConfig, get_task

logger = logging.getLogger(__name__)

__all__ = ["NonFiniteRewardError", "TextEnv", "UnsupportedRenderModeError", "check_render_mode"]


class UnsupportedRenderModeError(ValueError, TypeError):
    """A render mode other than ``"ansi"``. Also a ``TypeError`` so that stable-baselines3's
    ``make_vec_env(id)``, which first tries ``render_mode="rgb_array"`` and retries without it on a
    ``TypeError``, works on the text environments."""


def check_render_mode(render_mode: str | None) -> None:
    if render_mode is not None and render_mode != "ansi":
        raise UnsupportedRenderModeError(f"render_mode={render_mode!r} is not supported; use 'ansi' or None.")


class TaskViews:
    """What both environment classes expose of their :class:`textenv.task.Task` (``self.task``)."""

    task: Task

    @property
    def tokenizer(self):
        return self.task.tokenizer

    @property
    def pad_token_id(self) -> int:
        return self.task.pad_id

    def action_masks(self) -> np.ndarray:
        """Bool (vocab_size,) (a vector env: (num_envs, vocab_size)), True for every legal action: all but
        a pad that lies inside the vocabulary (Gemma's ``<pad>`` = 0). sb3-contrib's ``MaskablePPO`` reads
        it (through ``env.get_wrapper_attr("action_masks")``; from a ``gym.make`` env call
        ``env.unwrapped.action_masks()``)."""
        legal = np.ones(self.task.vocab_size, dtype=bool)
        if 0 <= self.task.pad_id < self.task.vocab_size:
            legal[self.task.pad_id] = False
        n = getattr(self, "num_envs", None)
        return legal if n is None else np.broadcast_to(legal, (n, legal.size)).copy()


class TextEnv(TaskViews, gym.Env):
    """## Description

    Text continuation or summarization as a token-level MDP (Ziegler et al. 2019). An episode is one
    response to one prompt: each step appends one token. After exactly ``response_length`` steps the
    response is truncated by the paper's rule and scored.

    ## Action Space

    ``Discrete(vocab_size)``: a token id of the tokenizer's vocabulary (never the padding rows of a wider
    output layer). The pad id lies outside it, or, when the tokenizer's own pad is a vocabulary id
    (Gemma's ``<pad>`` = 0), it is an illegal action: ``action_masks()`` says so and ``step`` refuses it.

    ## Observation Space

    ``Box(int64, shape=(context_length + response_length,))``: the context ``[pads][prefix][query][suffix]``
    then the response so far, pad-filled. ``info["attention_mask"]`` marks the non-pad positions.

    ## Rewards

    0 on every step but the last. On the last step: the reward function's score of (raw query, truncated
    response), or ``penalty_reward_value`` (-1) when the response has no truncate token at an index
    >= ``truncate_after`` (PAPER.md §1.6). The KL penalty is the agent's (``textenv.kl``) or a wrapper's.

    ## Episode End

    ``terminated=True`` after exactly ``response_length`` steps; never truncated (no time limit, so
    algorithms do not bootstrap a value at the end).

    ## Arguments

    ``gym.make(id, tokenizer=..., reward_fn=..., prompts=..., render_mode="ansi", **task_overrides)``:
    ``tokenizer`` a HF tokenizer or spec (default: the task's, ``"smollm2-135m"``); ``reward_fn`` a callable
    ``(queries, responses) -> scores`` or a built-in name (:mod:`textenv.scorers`); ``prompts`` a list of
    strings or data records instead of the task's data; any :class:`textenv.tasks.TaskConfig` field.

    ## Version History

    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        task: str | TaskConfig = "BookSentiment-v0",
        *,
        tokenizer: Any = None,
        reward_fn: Callable | str | None = None,
        prompts: Sequence[str | data_mod.Record] | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        check_render_mode(render_mode)
        self.config = get_task(task, **overrides)
        self.task = Task(self.config, tokenizer, reward_fn, prompts)
        self.render_mode = render_mode
        self.action_space, self.observation_space = self.task.spaces()
        self._obs: np.ndarray | None = None
        self._t = 0
        self._done = True
        self._prompt: Prompt | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rt = self.task
        self._prompt = rt.draw(self.np_random)
        self._obs = np.full(rt.obs_length, rt.pad_id, dtype=np.int64)
        self._obs[: rt.context_length] = rt.context_row(self._prompt)
        self._t, self._done = 0, False
        return self._obs.copy(), self._info()

    def _info(self) -> dict:
        rt = self.task
        response_mask = np.zeros(self.config.response_length, dtype=bool)
        response_mask[: self._t] = True
        return {
            "prompt_id": self._prompt.id,
            "attention_mask": self._obs != rt.pad_id,
            "query_mask": self._obs[: rt.context_length] != rt.pad_id,
            "response_mask": response_mask,
        }

    def step(self, action):
        if self._obs is None:
            raise RuntimeError("step() called before reset(); call env.reset() first.")
        if self._done:
            raise RuntimeError("step() called after the episode ended; call env.reset() to start a new one.")
        if isinstance(action, (float, np.floating)) or (
            isinstance(action, np.ndarray) and action.shape != ()
        ):
            raise TypeError(f"Action must be one integer token id, got {action!r}; pass e.g. int(token).")
        token = int(self.task.check_actions(np.asarray(action)))
        rt = self.task
        self._obs[rt.context_length + self._t] = token
        self._t += 1
        reward, terminated = 0.0, False
        info = self._info()
        if self._t == self.config.response_length:
            terminated, self._done = True, True
            response = self._obs[rt.context_length :][None]
            out = rt.score(rt.query_row(self._prompt)[None], response, [self._prompt.reference])
            reward = float(out.pop("reward")[0])
            info.update({key: value[0] for key, value in out.items()})
            info["score"], info["valid"] = float(info["score"]), bool(info["valid"])
        return self._obs.copy(), reward, terminated, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._obs is None:
            return ""
        return self.task.render_row(self._obs, self._t)
