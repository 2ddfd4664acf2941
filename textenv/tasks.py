"""Task presets (the paper's values, PAPER.md §1.6 and §2) and the pure functions of the task rules.

Every field of :class:`TaskConfig` can be overridden with ``gym.make(id, field=value)``. The KL settings
are the agents' (``[kl]`` in a train-policy config, ``configs/*.toml`` for each task's paper values); the
environment itself never applies KL (DESIGN.md, "The environment contract").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Family = Literal["books", "cnndm", "tldr"]


@dataclass(frozen=True)
class TaskConfig:
    """One task: where prompts come from, how long queries and responses are, and the truncation rule.

    Attributes:
        name: the Gymnasium id this preset is registered under.
        family: prompt source, ``"books"``, ``"cnndm"`` or ``"tldr"`` (see :mod:`textenv.data`).
        query_length: query tokens, before prefix/suffix (64 books, 500 summarization; PAPER.md §2).
        response_length: tokens per response = steps per episode (24 books, 75 summarization).
        min_query_length: shortest book passage kept (the paper's excerpts are 32-64 tokens).
        temperature: sampling temperature hint for agents (0.7; 0.5 for CNN/DM; PAPER.md §1.1).
        truncate_token: text of the single token at which responses are cut (``"."`` / ``"\\n"``),
            resolved through the tokenizer; ``truncate_token_id`` overrides it with an explicit id. None
            turns the rule off (no truncation, no penalty): a named deviation for toy and custom tasks.
        truncate_after: the first 0-based response index at which ``truncate_token`` counts (16 / 55).
        penalty_reward_value: score of a response with no truncate token in the window (-1, §1.6).
        query_prefix / query_suffix: prompt format around the query (``"Article:\\n\\n"``, ``"\\n\\nTL;DR:"``).
        start_text / end_text: the reference code's passage trimming for books (``"."``: start after the
            first period, end after the last period in the window); None disables.
        split: data split (``train`` / ``valid`` / ``test``).
        data_source: None for the offline default, ``"hub"``, ``"hub:<id>"`` or a local path.
        tokenizer: tokenizer or model spec used when no tokenizer object is passed.
        reward: name of the built-in score used when no ``reward_fn`` is passed.
        add_bos: put the tokenizer's BOS token first in every context. None (default): when the tokenizer
            adds it by itself (Gemma, whose NLL on prose triples without it); GPT-2's and SmolLM2's do not.
        chat_template: format each context (``[prefix][query][suffix]``) as the user turn of the
            tokenizer's chat template with the assistant's turn opened (for instruct models). Off by default:
            the paper's plain text (PAPER.md §2) — a named deviation.
    """

    name: str
    family: Family
    query_length: int
    response_length: int
    temperature: float
    truncate_token: str | None
    truncate_after: int
    reward: str
    min_query_length: int = 1
    truncate_token_id: int | None = None
    penalty_reward_value: float = -1.0
    query_prefix: str = ""
    query_suffix: str = ""
    start_text: str | None = None
    end_text: str | None = None
    split: str = "train"
    data_source: str | None = None
    tokenizer: str = "smollm2-135m"
    add_bos: bool | None = None
    chat_template: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.truncate_token == "":  # TOML has no null: an empty string turns the rule off too
            object.__setattr__(self, "truncate_token", None)
        for name in ("query_length", "response_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        if not 0 <= self.truncate_after < self.response_length:
            raise ValueError(
                f"truncate_after={self.truncate_after} leaves no room for the truncate token in a response of "
                f"{self.response_length} tokens; use truncate_after < response_length "
                f"(e.g. response_length={self.truncate_after + 8})."
            )
        for name in ("temperature", "penalty_reward_value"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
        if not 0 < self.temperature:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}.")
        if not self.family or not isinstance(self.family, str):
            raise ValueError(
                f"family must be a data family's name (textenv.families.FAMILIES), got {self.family!r}."
            )
        if not (self.add_bos is None or isinstance(self.add_bos, bool)) or not isinstance(
            self.chat_template, bool
        ):
            raise ValueError(
                f"add_bos must be true, false or None (as the tokenizer does) and chat_template true or false; "
                f"got add_bos={self.add_bos!r}, chat_template={self.chat_template!r}."
            )
        if self.min_query_length > self.query_length:
            raise ValueError(
                f"min_query_length={self.min_query_length} exceeds query_length={self.query_length}; lower it."
            )

    def replace(self, **overrides) -> TaskConfig:
        """A copy with ``overrides``; an unknown field raises TypeError naming the valid fields."""
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise TypeError(
                f"Unknown task option(s) {unknown} for {self.name}; valid options: {sorted(valid)}."
            )
        return dataclasses.replace(self, **overrides)


_BOOKS = dict(
    family="books",
    query_length=64,
    response_length=24,
    min_query_length=32,
    temperature=0.7,
    truncate_token=".",
    truncate_after=16,
    start_text=".",
    end_text=".",
)
_SUMMARIZE = dict(
    query_length=500,
    response_length=75,
    truncate_token="\n",
    truncate_after=55,
    query_suffix="\n\nTL;DR:",
    reward="rouge",
)

TASKS: dict[str, TaskConfig] = {
    t.name: t
    for t in (
        TaskConfig(name="BookSentiment-v0", reward="sentiment", **_BOOKS),
        TaskConfig(name="BookDescriptive-v0", reward="descriptiveness", **_BOOKS),
        # Mock sentiment (§1.10): a sentiment classifier's log-odds as the reward (target KL 8: its preset).
        TaskConfig(name="MockSentiment-v0", reward="mock_sentiment", **_BOOKS),
        TaskConfig(name="TLDRSummarize-v0", family="tldr", temperature=0.7, **_SUMMARIZE),
        TaskConfig(
            name="CNNDMSummarize-v0",
            family="cnndm",
            temperature=0.5,
            query_prefix="Article:\n\n",
            **_SUMMARIZE,
        ),
    )
}


def get_task(task: str | TaskConfig, **overrides) -> TaskConfig:
    """The preset named ``task`` (or ``task`` itself) with ``overrides`` applied."""
    if isinstance(task, TaskConfig):
        base = task
    elif task in TASKS:
        base = TASKS[task]
    else:
        raise ValueError(f"Unknown task {task!r}; registered tasks: {sorted(TASKS)}.")
    return base.replace(**overrides) if overrides else base


# ------------------------------------------------------------------------------------ pure functions
def truncation_mask(responses: np.ndarray, truncate_id: int, truncate_after: int) -> np.ndarray:
    """Positions kept by the paper's post-processing (PAPER.md §1.6, must-have 10).

    Keep every token up to and including the first ``truncate_id`` at index >= ``truncate_after``. The
    reference code's mask: ``m`` marks matches at index >= after; a token is dropped iff
    ``cumsum(m) - m > 0`` (there was a match strictly before it).
    """
    responses = np.asarray(responses)
    idx = np.arange(responses.shape[-1])
    matches = (responses == truncate_id) & (idx >= truncate_after)
    after_first = np.cumsum(matches, axis=-1) - matches
    return after_first == 0


def truncate_response(
    responses: np.ndarray, truncate_id: int, truncate_after: int, pad_id: int
) -> np.ndarray:
    """Replace every token after the first truncate token (at index >= ``truncate_after``) with ``pad_id``."""
    responses = np.asarray(responses)
    return np.where(truncation_mask(responses, truncate_id, truncate_after), responses, pad_id)


def response_is_valid(responses: np.ndarray, truncate_id: int, truncate_after: int) -> np.ndarray:
    """Whether a response has ``truncate_id`` at some index >= ``truncate_after`` (§1.6 filter, must-have 11)."""
    responses = np.asarray(responses)
    return ((responses == truncate_id) & (np.arange(responses.shape[-1]) >= truncate_after)).any(axis=-1)


def apply_penalty(scores: np.ndarray, valid: np.ndarray, penalty: float) -> np.ndarray:
    """Scores of invalid responses become ``penalty`` whatever the reward function said (must-have 11)."""
    return np.where(np.asarray(valid), np.asarray(scores, dtype=np.float64), penalty)
