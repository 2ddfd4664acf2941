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

import csv
import hashlib
import json
import logging
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from textenv.assets import SETUP_COMMAND, AssetMissingError, require_asset

logger = logging.getLogger(__name__)

Split = Literal["train", "valid", "test"]
SPLITS: tuple[str, ...] = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
FIXTURES = Path(__file__).parent / "fixtures"

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


LOADERS = {"books": load_books, "cnndm": load_cnndm, "tldr": load_tldr}


def load_prompts(family: str, split: str = "train", source: str | Path | None = None) -> list[Record]:
    """Dispatch to :func:`load_books`, :func:`load_cnndm` or :func:`load_tldr` by family name."""
    if family not in LOADERS:
        raise ValueError(f"Unknown data family {family!r}; choose from {sorted(LOADERS)}.")
    return LOADERS[family](split, source)
