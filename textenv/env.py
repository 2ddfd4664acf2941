"""``TextEnv``: one prompt, one token per step, the score of the truncated response at the end."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np

from textenv import data as data_mod
from textenv.tasks import (
    TaskConfig,
    apply_penalty,
    get_task,
    response_is_valid,
    truncation_mask,
)

logger = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _cached_records(family: str, split: str, source: str | None) -> tuple:
    return tuple(data_mod.load_prompts(family, split, source))


@dataclass(frozen=True)
class Prompt:
    """A prepared prompt: its raw query ids (no prefix/suffix) and the reference text, if any."""

    id: str
    query: tuple[int, ...]
    reference: str | None


class TaskRuntime:
    """What a single env and a vector env share: config, tokenizer, prompts, the scoring rule.

    Not part of the public API; build environments with ``gym.make`` / ``gym.make_vec``.
    """

    def __init__(
        self,
        config: TaskConfig,
        tokenizer: Any = None,
        reward_fn: Callable | str | None = None,
        prompts: Sequence[str | data_mod.Record] | None = None,
    ) -> None:
        from textenv.models import load_tokenizer
        from textenv.models.tokenization import PAD_TOKEN, token_id
        from textenv.scorers import make_builtin_score

        self.config = config
        if tokenizer is None or isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer or config.tokenizer)
        if not hasattr(tokenizer, "encode") or not hasattr(tokenizer, "decode"):
            raise TypeError(
                f"tokenizer must be a Hugging Face tokenizer or a spec string, got {type(tokenizer).__name__}."
            )
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
            raise ValueError(
                "The tokenizer's pad token must exist and differ from EOS (PAPER.md §2); call "
                "textenv.models.tokenization.ensure_pad_token(tokenizer) first."
            )
        self.tokenizer = tokenizer
        self.pad_id = int(tokenizer.pad_token_id)
        self.vocab_size = len(tokenizer) - (1 if tokenizer.pad_token == PAD_TOKEN else 0)
        self.truncate_id: int | None
        if config.truncate_token_id is not None:
            self.truncate_id = int(config.truncate_token_id)
        elif config.truncate_token is None:
            self.truncate_id = None  # the truncation rule is off
        else:
            self.truncate_id = token_id(tokenizer, config.truncate_token)
        self.prefix = (
            tokenizer.encode(config.query_prefix, add_special_tokens=False) if config.query_prefix else []
        )
        self.suffix = (
            tokenizer.encode(config.query_suffix, add_special_tokens=False) if config.query_suffix else []
        )
        self.context_length = len(self.prefix) + config.query_length + len(self.suffix)
        self.obs_length = self.context_length + config.response_length
        self._period = (
            token_id(tokenizer, config.start_text or config.end_text or ".")
            if config.family == "books"
            else None
        )
        self._newline = token_id(tokenizer, "\n") if config.family == "cnndm" else None  # article trimming

        if prompts is not None:
            self.records = list(prompts)
            if not self.records:
                raise ValueError("prompts= is empty; pass at least one prompt string or record.")
        else:
            self.records = list(_cached_records(config.family, config.split, config.data_source))
            if not self.records:
                raise ValueError(
                    f"No {config.family} prompts in split {config.split!r}; choose another split."
                )
        self._prepared: dict[int, Prompt | None] = {}

        if reward_fn is None:
            reward_fn = config.reward
        if isinstance(reward_fn, str):
            reward_fn = make_builtin_score(reward_fn, tokenizer)
        if not callable(reward_fn):
            raise TypeError(
                f"reward_fn must be a callable (queries, responses) -> scores or a name, got {reward_fn!r}."
            )
        self.reward_fn = reward_fn

    def set_reward_fn(self, reward_fn: Callable) -> None:
        """Swap the reward function of a running env (the online loop's retrained reward model); the
        next episode to finish is scored by it."""
        if not callable(reward_fn):
            raise TypeError(
                f"reward_fn must be a callable (queries, responses) -> scores, got {reward_fn!r}."
            )
        self.reward_fn = reward_fn

    # ---------------------------------------------------------------------------------- prompts
    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False, verbose=False)

    def prepare(self, index: int) -> Prompt | None:
        """Tokenize and trim record ``index`` with the paper's rules; None when the passage is unusable."""
        if index in self._prepared:
            return self._prepared[index]
        cfg, rec = self.config, self.records[index]
        ref = None
        if isinstance(rec, str):
            rid, ids = f"prompt-{index}", self._encode(rec)[: cfg.query_length]
        elif isinstance(rec, data_mod.BookPassage):
            rid = rec.id
            ids = data_mod.trim_passage(
                self._encode(rec.text),
                max_length=cfg.query_length,
                min_length=cfg.min_query_length,
                start_id=self._period if cfg.start_text else None,
                end_id=self._period if cfg.end_text else None,
            )
        elif isinstance(rec, data_mod.RedditPost):
            rid, ref = rec.id, rec.summary
            ids = self._encode(rec.text)[: cfg.query_length]
        elif isinstance(rec, data_mod.Article):
            rid, ref = rec.id, rec.reference
            ids = data_mod.trim_article(
                self._encode(rec.article), max_length=cfg.query_length, end_id=self._newline
            )
        else:
            raise TypeError(
                f"Unsupported prompt record {type(rec).__name__}; pass strings or textenv.data records."
            )
        prompt = Prompt(rid, tuple(ids), ref) if ids else None
        self._prepared[index] = prompt
        return prompt

    def draw(self, rng: np.random.Generator) -> Prompt:
        """A random usable prompt, drawn with ``rng`` only (seeded determinism)."""
        for _ in range(1000):
            prompt = self.prepare(int(rng.integers(len(self.records))))
            if prompt is not None:
                return prompt
        raise RuntimeError(
            f"1000 draws found no usable prompt for {self.config.name}: passages need a {self.config.start_text!r} "
            f"and at least {self.config.min_query_length} tokens; lower min_query_length or set start_text=None."
        )

    def query_row(self, prompt: Prompt) -> np.ndarray:
        """The raw query, left-padded to ``query_length`` (what the reward function reads)."""
        row = np.full(self.config.query_length, self.pad_id, dtype=np.int64)
        row[self.config.query_length - len(prompt.query) :] = prompt.query
        return row

    def context_row(self, prompt: Prompt) -> np.ndarray:
        """``[pads][prefix][query][suffix]``: left padding gives the same logits as the reference code's
        ``[prefix][query][pads][suffix]`` under a padding-invariant forward (PAPER.md §2, padding layout)."""
        ids = [*self.prefix, *prompt.query, *self.suffix]
        row = np.full(self.context_length, self.pad_id, dtype=np.int64)
        row[self.context_length - len(ids) :] = ids
        return row

    # ---------------------------------------------------------------------------------- actions
    def check_actions(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions)
        if actions.dtype == np.bool_ or not np.issubdtype(actions.dtype, np.integer):
            raise TypeError(
                f"Actions must be integer token ids, got dtype {actions.dtype} ({actions!r}); pass an int or an "
                "int array such as np.array([...], dtype=np.int64)."
            )
        bad = (actions < 0) | (actions >= self.vocab_size) | (actions == self.pad_id)
        if bad.any():
            raise ValueError(
                f"Token id(s) {actions[bad].tolist()} outside the vocabulary [0, {self.vocab_size}); the pad id "
                f"{self.pad_id} is not an action. Sample only from the model's {self.vocab_size} logits."
            )
        return actions.astype(np.int64)

    # ---------------------------------------------------------------------------------- scoring
    def score(
        self, queries: np.ndarray, responses: np.ndarray, references: Sequence[str | None]
    ) -> dict[str, np.ndarray]:
        """Truncate, call the reward function once for the batch, check it, apply the penalty (§1.6)."""
        cfg = self.config
        responses = np.asarray(responses)
        if self.truncate_id is None:
            truncated, valid = responses.copy(), np.ones(len(responses), dtype=bool)
            kept = np.ones(responses.shape, dtype=bool)
        else:
            kept = truncation_mask(responses, self.truncate_id, cfg.truncate_after)
            truncated = np.where(kept, responses, self.pad_id)  # = truncate_response(...), mask computed once
            valid = response_is_valid(truncated, self.truncate_id, cfg.truncate_after)
        if getattr(self.reward_fn, "needs_references", False):
            if any(r is None for r in references):
                raise ValueError(
                    f"The reward function {self.reward_fn!r} needs reference summaries, but these prompts have "
                    "none; use a reward function that does not need references."
                )
            raw = self.reward_fn(queries, truncated, references=list(references))
        else:
            raw = self.reward_fn(queries, truncated)
        scores = self.check_scores(raw, len(responses))
        return {
            "score": scores,
            "reward": apply_penalty(scores, valid, cfg.penalty_reward_value),
            "valid": valid,
            "response": responses.copy(),
            "truncated_response": truncated,
            "truncation_mask": kept,
            "response_text": np.array([self.decode(r) for r in responses], dtype=object),
            "truncated_text": np.array([self.decode(r) for r in truncated], dtype=object),
        }

    def spaces(self) -> tuple[gym.spaces.Discrete, gym.spaces.Box]:
        """The single-env action and observation spaces (the pad id lies outside the action space)."""
        high = max(self.pad_id, self.vocab_size - 1)
        return gym.spaces.Discrete(self.vocab_size), gym.spaces.Box(
            0, high, shape=(self.obs_length,), dtype=np.int64
        )

    def render_row(self, obs: np.ndarray, t: int) -> str:
        """``render_mode="ansi"`` text of one observation after ``t`` response tokens."""
        return f"QUERY: {self.decode(obs[: self.context_length])}\nRESPONSE: {self.decode(obs[self.context_length : self.context_length + t])}"

    def check_scores(self, raw: Any, n: int) -> np.ndarray:
        name = getattr(self.reward_fn, "__name__", type(self.reward_fn).__name__)
        try:
            scores = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"reward_fn {name} returned {raw!r}, which is not numeric; return {n} floats."
            ) from e
        if scores.shape != (n,):
            raise ValueError(
                f"reward_fn {name} returned shape {scores.shape} for a batch of {n}; return one float per "
                f"response, shape ({n},)."
            )
        if not np.isfinite(scores).all():
            raise NonFiniteRewardError(
                f"reward_fn {name} returned non-finite scores {scores[~np.isfinite(scores)].tolist()} at rows "
                f"{np.flatnonzero(~np.isfinite(scores)).tolist()}; fix the reward function (NaN/inf are never clipped)."
            )
        return scores

    def decode(self, ids: np.ndarray) -> str:
        return self.tokenizer.decode([int(t) for t in ids if t != self.pad_id])


class NonFiniteRewardError(ValueError):
    """The reward function returned NaN or inf (never clipped or replaced: the caller decides)."""


class UnsupportedRenderModeError(ValueError, TypeError):
    """A render mode other than ``"ansi"``. Also a ``TypeError`` so that stable-baselines3's
    ``make_vec_env(id)``, which first tries ``render_mode="rgb_array"`` and retries without it on a
    ``TypeError``, works on the text environments."""


def check_render_mode(render_mode: str | None) -> None:
    if render_mode is not None and render_mode != "ansi":
        raise UnsupportedRenderModeError(f"render_mode={render_mode!r} is not supported; use 'ansi' or None.")


class TextEnv(gym.Env):
    """## Description

    Text continuation or summarization as a token-level MDP (Ziegler et al. 2019). An episode is one
    response to one prompt: each step appends one token. After exactly ``response_length`` steps the
    response is truncated by the paper's rule and scored.

    ## Action Space

    ``Discrete(vocab_size)``: a token id of the model's vocabulary. The pad id lies outside it.

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
        self.runtime = TaskRuntime(self.config, tokenizer, reward_fn, prompts)
        self.render_mode = render_mode
        self.action_space, self.observation_space = self.runtime.spaces()
        self._obs: np.ndarray | None = None
        self._t = 0
        self._done = True
        self._prompt: Prompt | None = None

    @property
    def tokenizer(self):
        return self.runtime.tokenizer

    @property
    def pad_token_id(self) -> int:
        return self.runtime.pad_id

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rt = self.runtime
        self._prompt = rt.draw(self.np_random)
        self._obs = np.full(rt.obs_length, rt.pad_id, dtype=np.int64)
        self._obs[: rt.context_length] = rt.context_row(self._prompt)
        self._t, self._done = 0, False
        return self._obs.copy(), self._info()

    def _info(self) -> dict:
        rt = self.runtime
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
        token = int(self.runtime.check_actions(np.asarray(action)))
        rt = self.runtime
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
        return self.runtime.render_row(self._obs, self._t)
