"""Books (PAPER.md §2): a passage trimmed by the reference code's rule.

Start right after the first period (``start_text``), cut to ``query_length`` tokens, end right after the
last period in that window (``end_text``); passages shorter than ``min_query_length`` are unusable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from textenv.data import BookPassage, load_books, trim_passage
from textenv.families.base import DataFamily, Encode, Prompt, make_prompt
from textenv.models.tokenization import token_id
from textenv.tasks import TaskConfig


def special_ids(config: TaskConfig, tokenizer: Any) -> dict[str, int]:
    """``{"period": id}``: the single token of ``start_text`` (else ``end_text``, else ``"."``)."""
    return {"period": token_id(tokenizer, config.start_text or config.end_text or ".")}


def to_prompt(
    record: BookPassage, index: int, config: TaskConfig, encode: Encode, ids: Mapping[str, int]
) -> Prompt | None:
    period = ids.get("period")
    query = trim_passage(
        encode(record.text),
        max_length=config.query_length,
        min_length=config.min_query_length,
        start_id=period if config.start_text else None,
        end_id=period if config.end_text else None,
    )
    return make_prompt(record.id, query)


FAMILY = DataFamily("books", BookPassage, to_prompt, special_ids, load=load_books)
