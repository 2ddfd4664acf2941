"""Plain prompt strings (``prompts=["...", ...]``): encoded and cut to ``query_length`` tokens, with the id
``prompt-<index>`` and no reference."""

from __future__ import annotations

from collections.abc import Mapping

from textenv.families.base import DataFamily, Encode, Prompt, make_prompt
from textenv.tasks import TaskConfig


def to_prompt(
    record: str, index: int, config: TaskConfig, encode: Encode, ids: Mapping[str, int]
) -> Prompt | None:
    return make_prompt(f"prompt-{index}", encode(record)[: config.query_length])


FAMILY = DataFamily("text", str, to_prompt)
