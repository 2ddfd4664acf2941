"""Shared plumbing of the prompt corpora: record types, deterministic splits, file readers and the hub."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from textenv.assets import SETUP_COMMAND

Split = Literal["train", "valid", "test"]
SPLITS: tuple[str, ...] = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
# Package data of ``textenv`` (in the wheel): the TL;DR sample.
FIXTURES = Path(str(resources.files("textenv") / "fixtures"))

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
class _NotFinite(ValueError):
    """A JSON number that is not finite (``NaN``, ``Infinity``, ``1e400``)."""


def _refuse_constant(name: str) -> float:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


STRICT_JSON = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
"""A decoder that refuses ``NaN``, ``Infinity`` and numbers too large for a float (``json.loads`` takes them)."""


def json_kind(value: object) -> str:
    """How JSON names a decoded value's type, for messages ("got null", "got an array")."""
    if value is None or value is True or value is False:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


@contextmanager
def _explained(where: str, error: type[Exception], suffix: str, path: object = None) -> Iterator[None]:
    """Turn a JSON decoding failure into ``error("{where}: <reason>{suffix}")`` (``{path}:{line of the
    syntax error}`` instead of ``where`` when ``path`` is given)."""
    try:
        yield
    except _NotFinite as e:
        raise error(
            f"{where}: {e} is not a finite number: JSON here takes finite numbers only{suffix}"
        ) from None
    except json.JSONDecodeError as e:
        where = where if path is None else f"{path}:{e.lineno}"
        raise error(f"{where}: not valid JSON ({e.msg} at column {e.colno}){suffix}") from None
    except RecursionError:
        raise error(f"{where}: not valid JSON (nested too deeply){suffix}") from None
    except ValueError:  # an integer literal beyond Python's digit limit (4300)
        raise error(f"{where}: not valid JSON (a number with too many digits){suffix}") from None


def decode_json(text: str, where: str, error: type[Exception] = DataSchemaError, suffix: str = "") -> object:
    """``text`` decoded with :data:`STRICT_JSON`; any failure raises ``error("{where}: <reason>{suffix}")``."""
    with _explained(where, error, suffix):
        return STRICT_JSON.decode(text)


def read_text_lines(
    path: str | Path, error: type[Exception] = DataSchemaError, suffix: str = ""
) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file (a leading BOM dropped); a binary file (gzip, NUL bytes,
    bytes that are not UTF-8) raises ``error("{path}: not a UTF-8 text file (...)")``."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(b"\x1f\x8b"):
                raise error(
                    f"{path}: not a UTF-8 text file: it is gzip-compressed; decompress it first "
                    f"(zcat {path} > labels.jsonl){suffix}"
                )
            bad = raw.find(b"\x00")
            if bad < 0:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    bad = e.start
                else:
                    yield n, (line.removeprefix("\ufeff") if n == 1 else line)
                    continue
            raise error(
                f"{path}: not a UTF-8 text file (byte 0x{raw[bad]:02x} on line {n}, column {bad + 1}); "
                f"give a UTF-8 text file{suffix}"
            )


def iter_json_objects(
    path: str | Path, error: type[Exception] = DataSchemaError, suffix: str = ""
) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of each non-blank line of a JSON Lines file, decoded strictly (no NaN or
    infinity); every problem raises ``error`` naming ``FILE:LINE`` (``suffix`` ends each message)."""
    for n, line in read_text_lines(path, error, suffix):
        if not line.strip():
            continue
        row = decode_json(line, f"{path}:{n}", error, suffix)
        if not isinstance(row, dict):
            raise error(f"{path}:{n}: expected a JSON object, got {json_kind(row)}{suffix}")
        yield n, row


def iter_json_list(
    path: str | Path, error: type[Exception] = DataSchemaError, suffix: str = ""
) -> Iterator[tuple[int, int, object]]:
    """``(line, item number, value)`` of each item of a file holding one JSON list, decoded strictly (no NaN
    or infinity); ``line`` is where the item starts. Every problem raises ``error`` naming ``FILE:LINE``."""
    text = "".join(line for _, line in read_text_lines(path, error, suffix))
    i, line, counted = 0, 1, 0

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def line_at(i: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, i)
        counted = i
        return line

    i = skip(0)
    if text[i : i + 1] != "[":
        raise error(f"{path}:{line_at(i)}: expected a JSON list ('['){suffix}")
    i, k = skip(i + 1), 0
    if text[i : i + 1] == "]":
        i = skip(i + 1)
    else:
        while True:
            k += 1
            at = f"{path}:{line_at(i)}"
            with _explained(at, error, suffix, path):
                value, i = STRICT_JSON.raw_decode(text, i)
            yield line, k, value
            i = skip(i)
            if text[i : i + 1] == ",":
                i = skip(i + 1)
                continue
            if text[i : i + 1] == "]":
                i = skip(i + 1)
                break
            raise error(f"{path}:{line_at(i)}: not valid JSON (expected ',' or ']' after item {k}){suffix}")
    if i < len(text):
        raise error(f"{path}:{line_at(i)}: not valid JSON (extra data after the list){suffix}")


def read_records(path: str | Path) -> list[dict]:
    """Rows of a ``.jsonl``, ``.json`` (a list of objects), ``.csv`` or ``.parquet`` file as dicts."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Data file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return [row for _, row in iter_json_objects(path, DataSchemaError, ".")]
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
