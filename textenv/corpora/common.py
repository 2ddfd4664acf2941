"""Shared plumbing of the prompt corpora: record types, deterministic splits, file readers and the hub."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from textenv.assets import SETUP_COMMAND

Split = Literal["train", "valid", "test"]
SPLITS: tuple[str, ...] = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
FIXTURES = Path(__file__).parent.parent / "fixtures"

HUB_DEFAULTS = {
    "books": ("bookcorpus/bookcorpus", None),
    "cnndm": ("abisee/cnn_dailymail", "3.0.0"),
    "tldr": ("trl-lib/tldr", None),
}


class DataSchemaError(ValueError):
    """A data file or dataset lacks the fields a family needs; the message names what was found."""


# ------------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class BookPassage:
    """A continuation prompt: a passage of prose (PAPER.md §2, BookCorpus stand-in)."""

    id: str
    book: str
    text: str


@dataclass(frozen=True)
class Article:
    """A news article with its reference summary and, when known, other human-scored summaries.

    ``summaries`` holds ``(text, mean human score)`` pairs (the ``blanc`` data has ~10 scores 0-4 per
    summary); ``reference`` is the only summary when there is one, else the best-scored one.
    """

    id: str
    article: str
    reference: str
    summaries: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class RedditPost:
    """A post in OpenAI's filtered TL;DR schema."""

    id: str
    subreddit: str
    title: str
    post: str
    summary: str

    @property
    def text(self) -> str:
        """The post as the summarization prompt shows it (``SUBREDDIT``/``TITLE``/``POST`` lines)."""
        return f"SUBREDDIT: r/{self.subreddit}\n\nTITLE: {self.title}\n\nPOST: {self.post}"


Record = BookPassage | Article | RedditPost


def record_to_dict(record: Record) -> dict:
    return asdict(record)


# -------------------------------------------------------------------------------------------- splits
def split_of(record_id: str, fractions: Sequence[float] = SPLIT_FRACTIONS) -> Split:
    """Deterministic split of a record: sha1 of its id mapped to [0, 1) against cumulative fractions."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"split fractions must be 3 non-negative numbers summing to 1, got {fractions}.")
    u = int(hashlib.sha1(record_id.encode("utf-8")).hexdigest()[:12], 16) / float(1 << 48)
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "valid"
    return "test"


def _check_split(split: str) -> str:
    if split == "validation":
        split = "valid"
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {SPLITS}.")
    return split


def _select(records: Iterable[Record], split: str) -> list[Record]:
    split = _check_split(split)
    return [r for r in records if split_of(r.id) == split]


# ------------------------------------------------------------------------------------- file readers
def read_records(path: str | Path) -> list[dict]:
    """Rows of a ``.jsonl``, ``.json`` (a list of objects), ``.csv`` or ``.parquet`` file as dicts."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Data file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataSchemaError(f"{path}:{n}: not valid JSON ({e.msg}).") from e
                if not isinstance(row, dict):
                    raise DataSchemaError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}.")
                rows.append(row)
        return rows
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DataSchemaError(f"{path}: expected a JSON list of objects.")
        return data
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError("Reading .parquet needs pyarrow: pip install 'textenv[hub]'.") from e
        return pq.read_table(path).to_pylist()
    raise ValueError(f"Unsupported data file {path}: use .jsonl, .json, .csv or .parquet.")


def _require_fields(rows: list[dict], fields: Sequence[str], where: str) -> None:
    if not rows:
        raise DataSchemaError(f"{where}: no rows.")
    found = sorted(rows[0].keys())
    missing = [f for f in fields if f not in rows[0]]
    if missing:
        raise DataSchemaError(f"{where}: missing field(s) {missing}; expected {list(fields)}, found {found}.")


# ------------------------------------------------------------------------------------------ the hub
def _parse_hub_source(family: str, source: str) -> tuple[str, str | None]:
    default_id, default_config = HUB_DEFAULTS[family]
    if source == "hub":
        return default_id, default_config
    name = source[len("hub:") :]
    return name, (default_config if name == default_id else None)


def load_hub_rows(dataset_id: str, config: str | None, split: str) -> list[dict]:
    """Rows of a hub dataset split; fails at once, naming the offline default, when offline."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("Hub datasets need the `datasets` package: pip install 'textenv[hub]'.") from e
    from textenv.models import hub_reachable

    if not hub_reachable():
        raise ConnectionError(
            f"Dataset {dataset_id!r} needs the Hugging Face hub, which cannot be reached (offline). Use the "
            f"offline default (source=None, fetched by {SETUP_COMMAND}) or a local file in the same schema."
        )
    hub_split = {"valid": "validation"}.get(split, split)
    ds = datasets.load_dataset(dataset_id, config, split=hub_split)
    return [dict(r) for r in ds]
