"""The ``books`` family's loader: prose paragraphs for the continuation tasks."""

from __future__ import annotations

from pathlib import Path

from textenv.assets import SETUP_COMMAND, AssetMissingError, require_asset
from textenv.corpora.common import (
    BookPassage,
    _check_split,
    _parse_hub_source,
    _require_fields,
    _select,
    load_hub_rows,
    read_records,
)


# -------------------------------------------------------------------------------------------- books
def load_books(
    split: str = "train", source: str | Path | None = None, *, min_words: int = 20
) -> list[BookPassage]:
    """Prose paragraphs for the continuation tasks (sentiment, descriptiveness, mock sentiment).

    Args:
        split: ``train`` / ``valid`` / ``test`` (hash of the id for offline and local sources).
        source: None (the cached public-domain novels), ``"hub"`` (``bookcorpus``), a ``.jsonl``/``.json``/
            ``.csv``/``.parquet`` file with a ``text`` field, or a ``.txt`` file / folder of ``.txt`` files
            (paragraphs separated by blank lines).
        min_words: paragraphs with fewer words are dropped (chapter headings and the like).
    """
    split = _check_split(split)
    if source is None:
        try:
            folder = require_asset("books")
        except AssetMissingError as e:
            raise AssetMissingError(
                f"The offline books corpus is not fetched: run {SETUP_COMMAND}, or pass source= a text file."
            ) from e
        rows = read_records(folder / "paragraphs.jsonl")
        records = [BookPassage(r["id"], r["book"], r["text"]) for r in rows]
    elif isinstance(source, str) and source.startswith("hub"):
        dataset_id, config = _parse_hub_source("books", source)
        rows = load_hub_rows(dataset_id, config, "train")  # bookcorpus has one split: hash it
        _require_fields(rows, ["text"], dataset_id)
        records = [BookPassage(f"bc-{i:09d}", "bookcorpus", r["text"]) for i, r in enumerate(rows)]
    else:
        records = _books_from_path(Path(source).expanduser())
    return [r for r in _select(records, split) if len(r.text.split()) >= min_words]


def _books_from_path(path: Path) -> list[BookPassage]:
    from textenv.assets import lines_to_paragraphs

    if path.is_dir() or path.suffix.lower() == ".txt":
        files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
        if not files:
            raise FileNotFoundError(f"No .txt files in {path}.")
        out = []
        for f in files:
            for i, text in enumerate(lines_to_paragraphs(f.read_text(encoding="utf-8").splitlines())):
                out.append(BookPassage(f"{f.stem}-{i:05d}", f.stem, text))
        return out
    rows = read_records(path)
    _require_fields(rows, ["text"], str(path))
    return [
        BookPassage(str(r.get("id", f"{path.stem}-{i:06d}")), str(r.get("book", path.stem)), str(r["text"]))
        for i, r in enumerate(rows)
    ]
