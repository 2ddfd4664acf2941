"""TL;DR (PAPER.md §2): the post as ``SUBREDDIT``/``TITLE``/``POST`` lines, cut to ``query_length``
tokens; the reference summary travels with the prompt."""

from __future__ import annotations

from collections.abc import Mapping

from textenv.data import RedditPost, load_tldr
from textenv.families.base import DataFamily, Encode, Prompt, make_prompt
from textenv.tasks import TaskConfig


def to_prompt(
    record: RedditPost, index: int, config: TaskConfig, encode: Encode, ids: Mapping[str, int]
) -> Prompt | None:
    return make_prompt(record.id, encode(record.text)[: config.query_length], record.summary)


FAMILY = DataFamily("tldr", RedditPost, to_prompt, load=load_tldr)
