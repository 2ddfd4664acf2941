"""Data families: how each kind of record becomes a prompt (the trimming rules and the token ids they need).

One module per family, each defining ``FAMILY``, a :class:`DataFamily`:

=======  ====================  =============================================================
name     record                prompt
=======  ====================  =============================================================
books    ``data.BookPassage``  after the first period, cut, up to the last period (:mod:`.books`)
tldr     ``data.RedditPost``   the post's lines, cut to ``query_length`` (:mod:`.tldr`)
cnndm    ``data.Article``      the article, cut, back to the last newline (:mod:`.cnndm`)
text     ``str``               the string, cut to ``query_length`` (:mod:`.text`)
=======  ====================  =============================================================

Adding a data family: write one module here with its record type, its ``to_prompt`` (and
``special_ids`` when its trimming needs single-token markers, ``load`` when the family has a corpus of
its own for ``TaskConfig.split``/``data_source``), and add its ``FAMILY`` to :data:`FAMILIES` below; a
``TaskConfig(family=<name>, ...)`` then uses it.
"""

from __future__ import annotations

from typing import Any

from textenv.families import books, cnndm, text, tldr
from textenv.families.base import DataFamily, Encode, Prompt, make_prompt

FAMILIES: dict[str, DataFamily] = {f.name: f for f in (books.FAMILY, tldr.FAMILY, cnndm.FAMILY, text.FAMILY)}


def family_of(record: Any) -> DataFamily:
    """The family that formats ``record`` (by its type); TypeError naming the type when none does."""
    for family in FAMILIES.values():
        if isinstance(record, family.record_type):
            return family
    raise TypeError(
        f"Unsupported prompt record {type(record).__name__}; pass strings or textenv.data records."
    )


__all__ = ["FAMILIES", "DataFamily", "Encode", "Prompt", "family_of", "make_prompt"]
