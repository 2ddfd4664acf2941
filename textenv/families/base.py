"""What every data family shares: the prepared :class:`Prompt` and the :class:`DataFamily` record."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from textenv.tasks import TaskConfig

Encode = Callable[[str], list[int]]
"""``text -> token ids`` with the task's tokenizer (no special tokens)."""


@dataclass(frozen=True)
class Prompt:
    """A prepared prompt: its raw query ids (no prefix/suffix) and the reference text, if any."""

    id: str
    query: tuple[int, ...]
    reference: str | None


def make_prompt(prompt_id: str, ids: Sequence[int] | None, reference: str | None = None) -> Prompt | None:
    """A :class:`Prompt`, or None when trimming left no token (the passage is unusable)."""
    return Prompt(prompt_id, tuple(ids), reference) if ids else None


def no_special_ids(config: TaskConfig, tokenizer: Any) -> dict[str, int]:
    """A family that needs no special token id."""
    return {}


@dataclass(frozen=True)
class DataFamily:
    """How one data family turns its records into prompts (PAPER.md §2, preprocessing).

    Attributes:
        name: the family name (``TaskConfig.family``).
        record_type: the record class this family formats (``str`` for plain prompt strings).
        special_ids: ``(config, tokenizer) -> {name: token id}``: the single-token markers its trimming
            needs (the books period, the CNN/DM newline), resolved once per task and only for the task's
            own family; records of another family passed with ``prompts=`` get ``{}`` (no marker trimming).
        to_prompt: ``(record, index, config, encode, special_ids) -> Prompt | None``: tokenize and trim
            one record; None when the record is unusable (too short, no marker).
        load: ``(split, source) -> records``: the family's own corpus (``TaskConfig.split`` and
            ``data_source``); None for a family that only formats records passed with ``prompts=``.
    """

    name: str
    record_type: type
    to_prompt: Callable[[Any, int, TaskConfig, Encode, Mapping[str, int]], Prompt | None]
    special_ids: Callable[[TaskConfig, Any], dict[str, int]] = no_special_ids
    load: Callable[[str, Any], list] | None = None
