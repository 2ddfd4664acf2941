"""The ``books`` asset: public-domain novels from Debian's r-cran-* packages, as paragraph records.

The packages are fetched with ``apt-get download`` and unpacked with ``dpkg-deb``; the novels are read out
of R's data files with ``rdata``.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
import subprocess
import tempfile
import warnings
import zlib
from collections.abc import Iterable
from pathlib import Path

from textenv.asset_cache import AssetMissingError, _ensure_cache, _record, _replace_dir, asset_dir

# Log under the name these functions always had (they lived in textenv.assets).
logger = logging.getLogger("textenv.assets")

DEBIAN_BOOK_PACKAGES = ("r-cran-janeaustenr", "r-cran-tokenizers", "r-cran-tidytext")


def _r_convert(raw: bytes, **kw):
    import rdata

    return rdata.conversion.convert(rdata.parser.parse_data(raw), **kw)


def read_r_lazyload(prefix: Path) -> dict:
    """Read an R lazy-load database (``prefix.rdx`` index + ``prefix.rdb`` records)."""
    index = _r_convert(gzip.decompress(Path(str(prefix) + ".rdx").read_bytes()))
    db = Path(str(prefix) + ".rdb").read_bytes()
    out = {}
    for name, (start, length) in index["variables"].items():
        record = db[int(start) : int(start) + int(length)]  # 4-byte big-endian length, then zlib
        out[name] = _r_convert(zlib.decompress(record[4:]), default_encoding="utf-8")
    return out


def lines_to_paragraphs(lines: Iterable[str | None]) -> list[str]:
    """Join hard-wrapped lines into paragraphs separated by blank lines; whitespace collapsed."""
    paragraphs, current = [], []
    for line in lines:
        line = "" if line is None else str(line)
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return [re.sub(r"\s+", " ", p).strip() for p in paragraphs]


_GUTENBERG_START = re.compile(r"\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG", re.I)
_GUTENBERG_END = re.compile(
    r"\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg", re.I
)


def strip_gutenberg(lines: list[str | None]) -> list[str | None]:
    """Drop a Project Gutenberg header and licence, if present."""
    start, end = 0, len(lines)
    for i, line in enumerate(lines):
        if line and _GUTENBERG_START.search(line):
            start = i + 1
            break
    for i in range(start, len(lines)):
        if lines[i] and _GUTENBERG_END.search(lines[i]):
            end = i
            break
    return [line for line in lines[start:end] if not (line and line.startswith("Produced by"))]


_EDITORIAL = re.compile(r"Gutenberg|etext|[Tt]ranscriber|we substituted|Editor's Note")


def _apt_download(packages: Iterable[str], dest: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise AssetMissingError(
            "The offline books corpus comes from Debian packages (apt-get download + dpkg-deb), which this "
            "host lacks. Use your own text with `textenv.data.load_books(source='my_text_dir_or.jsonl')` "
            "or the Hugging Face `bookcorpus` with source='hub'."
        )
    cmd = ["apt-get", "download", *packages]
    done = subprocess.run(cmd, cwd=dest, capture_output=True, text=True)
    if done.returncode != 0:  # package lists may be empty on a new machine: refresh once, then retry
        logger.info("apt-get download failed (%s); running apt-get update once", done.stderr.strip()[:200])
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        done = subprocess.run(cmd, cwd=dest, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()}")


def build_book_paragraphs(extracted: Path) -> list[dict]:
    """Paragraph records ``{id, book, text}`` from the extracted Debian R packages."""
    with warnings.catch_warnings():  # rdata warns about R classes it maps to plain data frames
        warnings.simplefilter("ignore", UserWarning)
        return _build_book_paragraphs(extracted)


def _build_book_paragraphs(extracted: Path) -> list[dict]:
    import rdata

    site = extracted / "usr/lib/R/site-library"
    records: list[dict] = []

    def add(book: str, lines: list[str | None]) -> None:
        for i, text in enumerate(lines_to_paragraphs(lines)):
            if _EDITORIAL.search(text):  # transcribers' and editors' notes are not the novel
                continue
            records.append({"id": f"{book}-{i:05d}", "book": book, "text": text})

    austen = read_r_lazyload(site / "janeaustenr/data/Rdata")
    for book in sorted(austen):
        add(book, list(austen[book]))
    moby = read_r_lazyload(site / "tokenizers/data/Rdata")["mobydick"]
    moby_lines = str(moby[0] if not isinstance(moby, str) else moby).split("\n")
    add("mobydick", strip_gutenberg(moby_lines))
    books = rdata.read_rda(str(site / "tidytext/extdata/books.rda"))["books"]
    for title, frame in books.groupby("title", sort=True):
        if "Pride" in str(title):  # the same novel is in janeaustenr: keep one copy
            continue
        slug = re.sub(r"[^a-z0-9]+", "", str(title).lower())[:24]
        add(slug, list(frame["text"]))
    return records


def fetch_books() -> Path:
    out = asset_dir("books")
    with tempfile.TemporaryDirectory(dir=_ensure_cache()) as tmp_s:
        tmp = Path(tmp_s)
        _apt_download(DEBIAN_BOOK_PACKAGES, tmp)
        extracted = tmp / "extracted"
        versions = {}
        for deb in sorted(tmp.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(extracted)], check=True)
            versions[deb.name.split("_")[0]] = deb.name.split("_")[1]
        records = build_book_paragraphs(extracted)
        staging = tmp / "books"
        staging.mkdir()
        with open(staging / "paragraphs.jsonl", "w") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        _replace_dir(staging, out)
    _record(
        "books",
        "debian:" + ",".join(DEBIAN_BOOK_PACKAGES),
        json.dumps(versions, sort_keys=True),
        "MIT packages; texts public domain (Project Gutenberg)",
        out,
    )
    return out
