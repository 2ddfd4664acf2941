"""Prompt sources for the three task families, with the paper's preprocessing (PAPER.md §2).

Each family has one record type and one loader; every loader takes ``split`` (``"train"``, ``"valid"``
or ``"test"``) and ``source``:

* ``source=None``: the offline default from the cache (``textenv setup`` fetches it), or, for TL;DR, a small
  project-written sample with a warning that says how to get the real data;
* ``source="hub"`` or ``"hub:<dataset id>"``: a Hugging Face dataset through ``datasets`` (needs the network
  and the ``hub`` extra; offline it fails at once with a message naming the offline default);
* a local path: ``.jsonl``, ``.json``, ``.csv`` or ``.parquet`` in the family's schema (books also take a
  ``.txt`` file or a folder of them).

Offline sources have no split of their own, so records are assigned deterministically by a hash of
their id (80 / 10 / 10): the same record always lands in the same split, on every machine.

==========  =====================================  ==================================================
family      record                                 offline default
==========  =====================================  ==================================================
books       ``BookPassage(id, book, text)``        public-domain novels (Debian r-cran-* packages)
cnndm       ``Article(id, article, reference,      300 CNN/DM articles with human-scored summaries
            summaries)``                           (``blanc`` 0.3.4 sdist)
tldr        ``RedditPost(id, subreddit, title,     ``textenv/fixtures/tldr_sample.jsonl`` (written
            post, summary)``                       by this project; not the real Reddit data)
==========  =====================================  ==================================================

Token-level trimming (the paper's ``start_text``/``end_text`` and 500-token cuts) depends on the
tokenizer, so it lives in pure functions (:func:`trim_passage`, :func:`trim_article`) that the
environments call with their own tokenizer.
"""

from __future__ import annotations

import logging
from pathlib import Path

from textenv.assets import SETUP_COMMAND, AssetMissingError, require_asset  # noqa: F401

# Records, splits, readers, preprocessing and the family loaders live in textenv.corpora; every name
# stays importable from here.
from textenv.corpora.books import _books_from_path, load_books  # noqa: F401
from textenv.corpora.cnndm import _articles_from_rows, _blanc_articles, load_cnndm  # noqa: F401
from textenv.corpora.common import (  # noqa: F401
    FIXTURES,
    HUB_DEFAULTS,
    SPLIT_FRACTIONS,
    SPLITS,
    Article,
    BookPassage,
    DataSchemaError,
    Record,
    RedditPost,
    Split,
    _check_split,
    _parse_hub_source,
    _require_fields,
    _select,
    load_hub_rows,
    read_records,
    record_to_dict,
    split_of,
)
from textenv.corpora.preprocess import (  # noqa: F401
    clean_article,
    clean_up_start,
    fix_text,
    trim_article,
    trim_passage,
)
from textenv.corpora.tldr import (  # noqa: F401
    _PROMPT_RE,
    TLDR_FIELDS,
    load_tldr,
    parse_tldr_prompt,
    tldr_rows_to_posts,
)

logger = logging.getLogger(__name__)


LOADERS = {"books": load_books, "cnndm": load_cnndm, "tldr": load_tldr}


def load_prompts(family: str, split: str = "train", source: str | Path | None = None) -> list[Record]:
    """Dispatch to :func:`load_books`, :func:`load_cnndm` or :func:`load_tldr` by family name."""
    if family not in LOADERS:
        raise ValueError(f"Unknown data family {family!r}; choose from {sorted(LOADERS)}.")
    return LOADERS[family](split, source)
