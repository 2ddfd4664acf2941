"""The ``tldr`` family's loader: Reddit posts with reference TL;DRs, in any of the known layouts."""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

from textenv.corpora.common import (
    FIXTURES,
    DataSchemaError,
    RedditPost,
    _check_split,
    _parse_hub_source,
    _select,
    load_hub_rows,
    read_records,
)
from textenv.corpora.preprocess import fix_text

# --------------------------------------------------------------------------------------------- tldr
TLDR_FIELDS = ("id", "subreddit", "title", "post", "summary")
_PROMPT_RE = re.compile(
    r"SUBREDDIT:\s*r/(?P<sub>.*?)\s*\n\s*TITLE:\s*(?P<title>.*?)\s*\n\s*POST:\s*(?P<post>.*)", re.S
)


def parse_tldr_prompt(prompt: str) -> tuple[str, str, str]:
    """Split a ``SUBREDDIT: r/x / TITLE: ... / POST: ... / TL;DR:`` prompt into (subreddit, title, post)."""
    m = _PROMPT_RE.search(prompt)
    if m is None:
        raise DataSchemaError(
            f"Cannot parse a TL;DR prompt (expected SUBREDDIT/TITLE/POST lines): {prompt[:80]!r}"
        )
    post = re.sub(r"\s*TL;DR:\s*$", "", m.group("post"))
    return m.group("sub").strip(), m.group("title").strip(), post.strip()


def tldr_rows_to_posts(rows: list[dict], where: str) -> list[RedditPost]:
    """Map rows in any of the known TL;DR layouts to :class:`RedditPost`.

    Accepted layouts: OpenAI's ``id, subreddit, title, post, summary``; ``prompt, completion``
    (``trl-lib/tldr``); ``prompt, label`` (``CarperAI/openai_summarize_tldr``). Anything else raises
    :class:`DataSchemaError` naming the columns found.
    """
    if not rows:
        raise DataSchemaError(f"{where}: no rows.")
    keys = set(rows[0])
    out = []
    if {"subreddit", "title", "post", "summary"} <= keys:
        for i, r in enumerate(rows):
            rid = str(r.get("id") or f"tldr-{i:07d}")
            out.append(
                RedditPost(
                    rid,
                    str(r["subreddit"]),
                    str(r["title"]),
                    fix_text(str(r["post"])),
                    str(r["summary"]).strip(),
                )
            )
        return out
    target = "completion" if "completion" in keys else "label" if "label" in keys else None
    if "prompt" in keys and target:
        for r in rows:
            sub, title, post = parse_tldr_prompt(str(r["prompt"]))
            rid = str(r.get("id") or hashlib.sha1(str(r["prompt"]).encode("utf-8")).hexdigest()[:16])
            out.append(RedditPost(rid, sub, title, fix_text(post), str(r[target]).strip()))
        return out
    raise DataSchemaError(
        f"{where}: unknown TL;DR layout; expected columns {list(TLDR_FIELDS)} or (prompt, completion) or "
        f"(prompt, label), found {sorted(keys)}."
    )


def load_tldr(split: str = "train", source: str | Path | None = None) -> list[RedditPost]:
    """Reddit posts with reference TL;DRs.

    Args:
        split: ``train`` / ``valid`` / ``test``.
        source: None (a small project-written sample, with a warning: the real Reddit TL;DR data is in no
            package registry), ``"hub"`` (``trl-lib/tldr``) or ``"hub:<id>"`` (e.g.
            ``CarperAI/openai_summarize_tldr``) with their own splits, or a local file in one of the
            layouts of :func:`tldr_rows_to_posts`.
    """
    split = _check_split(split)
    if source is None:
        warnings.warn(
            "Using textenv's small TL;DR-format sample (written for this project, not real Reddit data). For "
            "the real data pass source='hub' (trl-lib/tldr, needs network + `pip install textenv[hub]`) or a "
            "local JSONL of OpenAI's filtered TL;DR (id, subreddit, title, post, summary).",
            UserWarning,
            stacklevel=2,
        )
        path = FIXTURES / "tldr_sample.jsonl"
        return _select(tldr_rows_to_posts(read_records(path), str(path)), split)
    if isinstance(source, str) and source.startswith("hub"):
        dataset_id, config = _parse_hub_source("tldr", source)
        return tldr_rows_to_posts(load_hub_rows(dataset_id, config, split), dataset_id)
    return _select(tldr_rows_to_posts(read_records(source), str(source)), split)
