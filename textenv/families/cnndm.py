"""CNN/Daily Mail (PAPER.md §2): the article cut at ``query_length`` tokens, then back to just after the
last newline in that window (the hard cut stays when there is none); the reference summary travels with
the prompt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from textenv.data import Article, load_cnndm, trim_article
from textenv.families.base import DataFamily, Encode, Prompt, make_prompt
from textenv.models.tokenization import token_id
from textenv.tasks import TaskConfig


def special_ids(config: TaskConfig, tokenizer: Any) -> dict[str, int]:
    """``{"newline": id}``: the token at which articles are trimmed."""
    return {"newline": token_id(tokenizer, "\n")}


def to_prompt(
    record: Article, index: int, config: TaskConfig, encode: Encode, ids: Mapping[str, int]
) -> Prompt | None:
    query = trim_article(encode(record.article), max_length=config.query_length, end_id=ids.get("newline"))
    return make_prompt(record.id, query, record.reference)


FAMILY = DataFamily("cnndm", Article, to_prompt, special_ids, load=load_cnndm)
