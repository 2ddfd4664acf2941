import json

import pytest

from textenv import assets


def test_cache_dir_follows_env(empty_cache):
    assert assets.cache_dir() == empty_cache


def test_require_asset_names_the_fetch_command(empty_cache):
    with pytest.raises(assets.AssetMissingError) as e:
        assets.require_asset("books")
    assert "textenv setup" in str(e.value) and "books" in str(e.value)


def test_unknown_asset_is_rejected(empty_cache):
    with pytest.raises(ValueError, match="Unknown asset 'bogus'"):
        assets.setup(only=["bogus"])


def test_gpt2_bpe_fetch_checks_hashes_and_records_manifest(empty_cache):
    status = assets.setup(only=["gpt2-bpe"])
    assert status["gpt2-bpe"].startswith("fetched")
    entry = assets.read_manifest()["gpt2-bpe"]
    assert entry["files"]["vocab.json"]["sha256"] == assets.GPT2_ENCODER_SHA256
    assert entry["files"]["merges.txt"]["sha256"] == assets.GPT2_VOCAB_BPE_SHA256
    assert assets.setup(only=["gpt2-bpe"]) == {"gpt2-bpe": "cached"}  # idempotent
    # a damaged file makes the asset not ready again
    (empty_cache / "gpt2-bpe" / "vocab.json").write_text("{}")
    assert not assets.asset_ready("gpt2-bpe")


def test_corrupt_manifest_names_the_fix(empty_cache):
    empty_cache.mkdir(parents=True)
    (empty_cache / "manifest.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="delete it and run textenv setup"):
        assets.read_manifest()


def test_lines_to_paragraphs():
    lines = ["First line", "continues here.", "", None, "  Second   para. ", "", ""]
    assert assets.lines_to_paragraphs(lines) == ["First line continues here.", "Second para."]


def test_strip_gutenberg():
    lines = [
        "The Project Gutenberg EBook of X",
        "*** START OF THIS PROJECT GUTENBERG EBOOK X ***",
        "Produced by Someone",
        "Call me Ishmael.",
        "End of Project Gutenberg's X",
        "*** END OF THIS PROJECT GUTENBERG EBOOK X ***",
        "licence text",
    ]
    assert assets.strip_gutenberg(lines) == ["Call me Ishmael."]


def test_cached_books_have_no_gutenberg_boilerplate():
    if not assets.asset_ready("books"):
        pytest.skip(f"books corpus not in the cache: run {assets.SETUP_COMMAND}")
    rows = [json.loads(line) for line in open(assets.asset_dir("books") / "paragraphs.jsonl")]
    assert len(rows) > 10_000
    assert not any("Gutenberg" in r["text"] for r in rows)
    books = {r["book"] for r in rows}
    assert "prideprejudice" in books and "mobydick" in books
    assert sum("pride" in b for b in books) == 1  # the duplicate copy is dropped
