"""The paper's preprocessing (PAPER.md §2): text cleaning and the tokenizer-independent token trims.

Token-level trimming depends on the tokenizer, so :func:`trim_passage` and :func:`trim_article` take ids and
the environments call them with their own tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


# ------------------------------------------------------------------------------- text preprocessing
def fix_text(text: str) -> str:
    """``ftfy.fix_text``, collapse 3+ newlines to 2, strip (PAPER.md §2, TL;DR and CNN/DM)."""
    import ftfy

    text = ftfy.fix_text(text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def clean_up_start(text: str) -> str:
    """The reference code's CNN/DM preamble cleaning (PAPER.md §2, ``clean_up_start``).

    Drops a leading two-line "By ..." byline, everything up to "(CNN) --", a "(CNN)" in the first 100
    characters, a leading "and X" line, "UPDATED: hh:mm ... 201x" headers, and straightens curly quotes.
    """
    if text.startswith("By"):
        text = "\n".join(text.split("\n")[2:])
    text = re.split(r"\(CNN\)\s+--", text)[-1]
    text = re.split(r"\(CNN\)", text[:100])[-1] + text[100:]
    text = re.sub(r"^and \w+\n", "", text)
    text = re.split(r".*UPDATED:\s+[0-9]{2}:[0-9]{2}.*201[0-9]", text)[-1]
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    return text.strip()


def clean_article(text: str) -> str:
    """Full CNN/DM article preprocessing: drop ``@highlight`` and after, ``clean_up_start``, ``fix_text``."""
    text = text.split("@highlight")[0]
    return fix_text(clean_up_start(text))


# ------------------------------------------------------------------------------ token-level trimming
def trim_passage(
    ids: Sequence[int],
    *,
    max_length: int,
    min_length: int = 1,
    start_id: int | None = None,
    end_id: int | None = None,
) -> list[int] | None:
    """The reference code's book-query cut (PAPER.md §2 preprocessing; must-have 4).

    Start right after the first ``start_id`` (when given), cut to ``max_length`` tokens, then end right
    after the last ``end_id`` in that window (when given). Returns None when a marker is missing or the
    result is shorter than ``min_length`` (the reference code skips such passages).
    """
    ids = list(ids)
    if start_id is not None:
        if start_id not in ids:
            return None
        ids = ids[ids.index(start_id) + 1 :]
    ids = ids[:max_length]
    if end_id is not None:
        if end_id not in ids:
            return None
        last = len(ids) - 1 - ids[::-1].index(end_id)
        ids = ids[: last + 1]
    if len(ids) < min_length:
        return None
    return ids


def trim_article(ids: Sequence[int], *, max_length: int, end_id: int | None) -> list[int]:
    """Cut an article at ``max_length`` tokens, then back to just after the last ``end_id`` (newline).

    When the window holds no ``end_id`` the hard cut is kept (the article is one long paragraph).
    """
    ids = list(ids)
    if len(ids) <= max_length:
        return ids
    ids = ids[:max_length]
    if end_id is not None and end_id in ids:
        last = len(ids) - 1 - ids[::-1].index(end_id)
        ids = ids[: last + 1]
    return ids
