"""The public Task API: a task's prompts, contexts, truncation rule and score, with or without an env.

    import textenv
    task = textenv.make_task("BookSentiment-v0", tokenizer)      # no reward function needed to draw
    prompts = task.draw_prompts(8, seed=0)                       # the same prompts for the same seed
    contexts = task.contexts(prompts)                            # (8, context_length), left-padded
    out = task.score(task.queries(prompts), responses)           # truncate, score, penalty (§1.6)

:class:`textenv.env.TextEnv` and :class:`textenv.vector.TextVectorEnv` are thin wrappers over a
:class:`Task` (``env.unwrapped.task``); :mod:`textenv.sampler` draws prompts and samples responses with
any policy. How each data family's records become prompts lives in :mod:`textenv.families`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np

from textenv import data as data_mod
from textenv.families import FAMILIES, Prompt, family_of
from textenv.tasks import TaskConfig, apply_penalty, get_task, response_is_valid, truncation_mask


@lru_cache(maxsize=8)
def _cached_records(family: str, split: str, source: str | None) -> tuple:
    loader = FAMILIES[family].load
    if loader is None:
        raise ValueError(f"the data family {family!r} has no corpus of its own; pass prompts=[...].")
    return tuple(loader(split, source))


class NonFiniteRewardError(ValueError):
    """The reward function returned NaN or inf (never clipped or replaced: the caller decides)."""


def make_task(
    id_or_config: str | TaskConfig,
    tokenizer: Any = None,
    *,
    reward_fn: Callable | str | None = None,
    prompts: Sequence[str | data_mod.Record] | None = None,
    **overrides: Any,
) -> Task:
    """The :class:`Task` of a registered id (``"BookSentiment-v0"``) or a :class:`TaskConfig`.

    Args:
        id_or_config: a registered task id or a config; ``overrides`` change any of its fields
            (an unknown id or field raises, naming it and the valid ones).
        tokenizer: a Hugging Face tokenizer or a spec string (default: the task's).
        reward_fn: ``(queries, responses) -> scores``, a built-in score name, or a reward plug-in spec
            (a sequence-classification folder or hub id, an ``http(s)://`` endpoint, ``module:function``,
            a reward-model folder; :mod:`textenv.reward_plugins`); default: the task's built-in score,
            built the first time :meth:`Task.score` needs it (drawing never does).
        prompts: strings or ``textenv.data`` records instead of the task's data.
    """
    return Task(get_task(id_or_config, **overrides), tokenizer, reward_fn, prompts)


class Task:
    """A task's config, tokenizer, prompts and scoring rule: what every env, sampler and trainer shares.

    Attributes: ``config``, ``tokenizer``, ``records`` (the prompt records), ``pad_id``, ``vocab_size``
    (the action space; the pad id lies outside it), ``truncate_id`` (None: the rule is off),
    ``prefix``/``suffix`` (ids), ``context_length`` = prefix + ``query_length`` + suffix and
    ``obs_length`` = context + ``response_length``.
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

        self.config = config
        if config.family not in FAMILIES:
            raise ValueError(
                f"family={config.family!r} is not a data family; choose one of {sorted(FAMILIES)}."
            )
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
        self.prefix = self._encode(config.query_prefix) if config.query_prefix else []
        self.suffix = self._encode(config.query_suffix) if config.query_suffix else []
        self.head, self.tail = self._frame(config)  # BOS and the chat template's turn markers
        self.prefix, self.suffix = [*self.head, *self.prefix], [*self.suffix, *self.tail]
        self.context_length = len(self.prefix) + config.query_length + len(self.suffix)
        self.obs_length = self.context_length + config.response_length
        # the special token ids of the task's own family (the books period, the cnndm newline)
        self._special_ids = FAMILIES[config.family].special_ids(config, tokenizer)
        self.records = self._load_records(prompts)
        self._prepared: dict[int, Prompt | None] = {}
        self._reward_fn: Callable | None = None
        self._reward_name: str | None = None
        self.set_reward_fn(config.reward if reward_fn is None else reward_fn)

    def _load_records(self, prompts: Sequence | None) -> list:
        cfg = self.config
        if prompts is not None:
            records = list(prompts)
            if not records:
                raise ValueError("prompts= is empty; pass at least one prompt string or record.")
            return records
        records = list(_cached_records(cfg.family, cfg.split, cfg.data_source))
        if not records:
            raise ValueError(f"No {cfg.family} prompts in split {cfg.split!r}; choose another split.")
        return records

    # ---------------------------------------------------------------------------------- reward
    @property
    def reward_fn(self) -> Callable:
        """The reward function; a built-in score named by the task is built on first use."""
        if self._reward_fn is None:
            from textenv.scorers import make_builtin_score

            self._reward_fn = make_builtin_score(self._reward_name, self.tokenizer)
        return self._reward_fn

    @reward_fn.setter
    def reward_fn(self, reward_fn: Callable | str | Any) -> None:
        self.set_reward_fn(reward_fn)

    def set_reward_fn(self, reward_fn: Callable | str | Any) -> None:
        """Swap the reward function (the online loop's retrained reward model); the next batch is scored
        by it. A built-in score name (:mod:`textenv.scorers`) is built when first needed; any other string
        or a :class:`textenv.reward_plugins.RewardSpec` (a sequence-classification checkpoint, an
        ``http(s)://`` reward endpoint, ``module:function``, a reward-model folder) is resolved now, for
        this task's tokenizer, by :func:`textenv.reward_plugins.resolve_reward`."""
        from textenv.reward_plugins import RewardSpec, resolve_reward
        from textenv.scorers import BUILTIN_SCORES

        if isinstance(reward_fn, str) and reward_fn in BUILTIN_SCORES:
            self._reward_fn, self._reward_name = None, reward_fn
            return
        if isinstance(reward_fn, (str, RewardSpec)):
            self._reward_fn, self._reward_name = resolve_reward(reward_fn, self.tokenizer), None
            return
        if not callable(reward_fn):
            raise TypeError(
                f"reward_fn must be a callable (queries, responses) -> scores or a name, got {reward_fn!r}."
            )
        self._reward_fn, self._reward_name = reward_fn, None

    def _frame(self, config: TaskConfig) -> tuple[list[int], list[int]]:
        """Constant ids before and after ``[prefix][query][suffix]``: the chat template's user turn (with
        the assistant's turn opened) when ``chat_template``, and BOS first when ``add_bos`` (None: when the
        tokenizer adds BOS by itself)."""
        tok = self.tokenizer
        head: list[int] = []
        tail: list[int] = []
        if config.chat_template:
            if not getattr(tok, "chat_template", None):
                raise ValueError(
                    f"chat_template=True but the tokenizer {type(tok).__name__} ({getattr(tok, 'name_or_path', '')!r}) "
                    "has no chat template; use an instruct model's tokenizer (e.g. smollm2-135m) or chat_template=False."
                )
            marker = "\u2063TEXTENV-QUERY\u2063"
            text = tok.apply_chat_template(
                [{"role": "user", "content": marker}], add_generation_prompt=True, tokenize=False
            )
            if text.count(marker) != 1:
                raise ValueError(
                    f"the chat template of {type(tok).__name__} does not show the user's message once."
                )
            before, _, after = text.partition(marker)
            head, tail = self._encode(before), self._encode(after)
        bos = tok.bos_token_id
        add_bos = config.add_bos
        if add_bos is None:
            probe = tok("a", add_special_tokens=True, verbose=False)["input_ids"]
            add_bos = bos is not None and probe[:1] == [bos]
        if add_bos:
            if bos is None:
                raise ValueError(
                    f"add_bos=True but the tokenizer {type(tok).__name__} has no BOS token; set add_bos=False."
                )
            if head[:1] != [bos]:  # a chat template may already start with it
                head = [int(bos), *head]
        if self.pad_id in head or self.pad_id in tail:
            raise ValueError(
                f"the context's framing (BOS / chat template) contains the pad id {self.pad_id} "
                f"({tok.convert_ids_to_tokens(self.pad_id)!r}), which would be masked as padding; give the "
                "tokenizer a pad of its own with textenv.models.tokenization.ensure_pad_token, or set add_bos=False."
            )
        return head, tail

    # ---------------------------------------------------------------------------------- prompts
    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False, verbose=False)

    def prepare(self, index: int) -> Prompt | None:
        """Record ``index`` tokenized and trimmed by its family's rule (:mod:`textenv.families`, PAPER.md
        §2); None when the record is unusable. Cached."""
        if index in self._prepared:
            return self._prepared[index]
        record = self.records[index]
        family = family_of(record)
        ids = self._special_ids if family.name == self.config.family else {}
        prompt = family.to_prompt(record, index, self.config, self._encode, ids)
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

    def draw_prompts(self, n: int, seed: int | np.random.Generator = 0) -> list[Prompt]:
        """``n`` prompts drawn in turn with ``np.random.default_rng(seed)`` (or the generator ``seed``):
        the same prompts in the same order for the same seed; no reward function is involved."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return [self.draw(rng) for _ in range(n)]

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

    def queries(self, prompts: Sequence[Prompt]) -> np.ndarray:
        """(n, query_length): :meth:`query_row` of each prompt (the reward function's ``queries``)."""
        return np.stack([self.query_row(p) for p in prompts])

    def contexts(self, prompts: Sequence[Prompt], k: int = 1) -> np.ndarray:
        """(n * k, context_length): :meth:`context_row` of each prompt, repeated ``k`` times in a row
        (prompt i's rows are ``i*k .. i*k+k-1``); what a policy samples from, as the env observes it."""
        if not len(prompts):
            return np.empty((0, self.context_length), dtype=np.int64)
        rows = np.stack([self.context_row(p) for p in prompts])
        return rows if k == 1 else np.repeat(rows, k, axis=0)

    # ---------------------------------------------------------------------------------- actions
    def check_actions(self, actions: np.ndarray) -> np.ndarray:
        """``actions`` as int64 token ids; TypeError/ValueError naming the bad ids and the valid range."""
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
    def truncate(self, responses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(truncated, valid, kept)`` of (B, L) responses by the paper's rule (PAPER.md §1.6): pads after
        the first truncate token at index >= ``truncate_after``; valid iff there is one; ``kept`` marks
        the kept positions. With the rule off, every response is kept whole and valid."""
        responses = np.asarray(responses)
        if self.truncate_id is None:
            return responses.copy(), np.ones(len(responses), dtype=bool), np.ones(responses.shape, dtype=bool)
        kept = truncation_mask(responses, self.truncate_id, self.config.truncate_after)
        truncated = np.where(kept, responses, self.pad_id)  # = truncate_response(...), mask computed once
        return truncated, response_is_valid(truncated, self.truncate_id, self.config.truncate_after), kept

    def score(
        self, queries: np.ndarray, responses: np.ndarray, references: Sequence[str | None] | None = None
    ) -> dict[str, np.ndarray]:
        """Truncate, call the reward function once for the batch, check it, apply the penalty (§1.6).

        ``queries`` (B, query_length) as :meth:`queries` builds them; ``references`` the prompts'
        reference texts (needed by reward functions with ``needs_references``). Returns arrays keyed
        ``score``, ``reward`` (the penalty applied), ``valid``, ``response``, ``truncated_response``,
        ``truncation_mask``, ``response_text`` and ``truncated_text``.
        """
        responses = np.asarray(responses)
        references = [None] * len(responses) if references is None else references
        truncated, valid, kept = self.truncate(responses)
        reward_fn = self.reward_fn
        if getattr(reward_fn, "needs_references", False):
            if any(r is None for r in references):
                raise ValueError(
                    f"The reward function {reward_fn!r} needs reference summaries, but these prompts have "
                    "none; use a reward function that does not need references."
                )
            raw = reward_fn(queries, truncated, references=list(references))
        else:
            raw = reward_fn(queries, truncated)
        scores = self.check_scores(raw, len(responses))
        return {
            "score": scores,
            "reward": apply_penalty(scores, valid, self.config.penalty_reward_value),
            "valid": valid,
            "response": responses.copy(),
            "truncated_response": truncated,
            "truncation_mask": kept,
            "response_text": np.array([self.decode(r) for r in responses], dtype=object),
            "truncated_text": np.array([self.decode(r) for r in truncated], dtype=object),
        }

    def check_scores(self, raw: Any, n: int) -> np.ndarray:
        """``raw`` as n finite float64 scores; an error naming the reward function and the bad values."""
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

    # ---------------------------------------------------------------------------------- spaces, text
    def spaces(self) -> tuple[gym.spaces.Discrete, gym.spaces.Box]:
        """The single-env action and observation spaces (the pad id lies outside the action space)."""
        high = max(self.pad_id, self.vocab_size - 1)
        return gym.spaces.Discrete(self.vocab_size), gym.spaces.Box(
            0, high, shape=(self.obs_length,), dtype=np.int64
        )

    def render_row(self, obs: np.ndarray, t: int) -> str:
        """``render_mode="ansi"`` text of one observation after ``t`` response tokens."""
        return f"QUERY: {self.decode(obs[: self.context_length])}\nRESPONSE: {self.decode(obs[self.context_length : self.context_length + t])}"

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids`` with pads dropped."""
        return self.tokenizer.decode([int(t) for t in ids if t != self.pad_id])

    def __repr__(self) -> str:
        return (
            f"Task({self.config.name!r}, records={len(self.records)}, context_length={self.context_length})"
        )
