"""The ``cnndm`` family's loader: news articles with reference summaries, cleaned as the reference code does."""

from __future__ import annotations

import hashlib
from pathlib import Path

from textenv.assets import SETUP_COMMAND, AssetMissingError, require_asset
from textenv.corpora.common import (
    Article,
    _check_split,
    _parse_hub_source,
    _require_fields,
    _select,
    load_hub_rows,
    read_records,
)
from textenv.corpora.preprocess import clean_article


# -------------------------------------------------------------------------------------------- cnndm
def load_cnndm(split: str = "train", source: str | Path | None = None) -> list[Article]:
    """News articles with reference summaries, cleaned as the reference code does (:func:`clean_article`).

    Args:
        split: ``train`` / ``valid`` / ``test``.
        source: None (the 300 cached ``blanc`` articles, split by hash), ``"hub"`` (``abisee/cnn_dailymail``
            3.0.0 and its own splits), or a local file with ``article`` and ``highlights`` (or
            ``reference``) fields and optionally ``id``.
    """
    split = _check_split(split)
    if source is None:
        try:
            folder = require_asset("cnndm")
        except AssetMissingError as e:
            raise AssetMissingError(
                f"The offline CNN/DM sample is not fetched: run {SETUP_COMMAND}, or pass source= a local file."
            ) from e
        return _select(_blanc_articles(read_records(folder / "CNN_DailyMail_555.json")), split)
    if isinstance(source, str) and source.startswith("hub"):
        dataset_id, config = _parse_hub_source("cnndm", source)
        rows = load_hub_rows(dataset_id, config, split)
        return _articles_from_rows(rows, dataset_id)
    return _select(_articles_from_rows(read_records(source), str(source)), split)


def _blanc_articles(rows: list[dict]) -> list[Article]:
    _require_fields(rows, ["text", "summary", "scores"], "blanc CNN_DailyMail_555.json")
    grouped: dict[str, list[tuple[str, float]]] = {}
    for r in rows:
        scores = [float(s) for s in r["scores"]]
        grouped.setdefault(r["text"], []).append((r["summary"], sum(scores) / max(len(scores), 1)))
    out = []
    for text, summaries in grouped.items():
        best = max(summaries, key=lambda s: s[1])[0]
        aid = hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
        out.append(Article(aid, clean_article(text), best, tuple(summaries)))
    return out


def _articles_from_rows(rows: list[dict], where: str) -> list[Article]:
    if rows and "reference" in rows[0] and "highlights" not in rows[0]:
        rows = [{**r, "highlights": r["reference"]} for r in rows]
    _require_fields(rows, ["article", "highlights"], where)
    out = []
    for r in rows:
        aid = str(r.get("id") or hashlib.sha1(r["article"].encode("utf-8")).hexdigest()[:16])
        out.append(Article(aid, clean_article(r["article"]), str(r["highlights"]).strip()))
    return out
