import json
import time
from collections import Counter

import pytest

from textenv import data
from textenv.assets import AssetMissingError, asset_ready


def test_split_of_is_deterministic_and_roughly_proportional():
    ids = [f"rec-{i}" for i in range(5000)]
    first = [data.split_of(i) for i in ids]
    assert first == [data.split_of(i) for i in ids]
    counts = Counter(first)
    assert 0.77 < counts["train"] / 5000 < 0.83
    assert 0.08 < counts["valid"] / 5000 < 0.12
    with pytest.raises(ValueError, match="sum"):
        data.split_of("x", (0.5, 0.5, 0.5))


def test_unknown_split_and_family_are_rejected():
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        data.load_tldr("dev")
    with pytest.raises(ValueError, match="Unknown data family 'imdb'"):
        data.load_prompts("imdb")


@pytest.mark.parametrize(
    ("ids", "kwargs", "expected"),
    [
        # start after the first '.', end after the last '.' within max_length (PAPER.md §2)
        ([1, 13, 2, 3, 13, 4, 5, 13, 6], dict(max_length=8, start_id=13, end_id=13), [2, 3, 13, 4, 5, 13]),
        ([1, 13, 2, 3, 13, 4, 5, 13, 6], dict(max_length=4, start_id=13, end_id=13), [2, 3, 13]),
        ([1, 2, 3], dict(max_length=8, start_id=13, end_id=13), None),  # no start marker
        ([1, 13, 2, 3], dict(max_length=8, start_id=13, end_id=13), None),  # no end marker
        ([1, 13, 2, 13], dict(max_length=8, min_length=3, start_id=13, end_id=13), None),  # too short
        ([1, 2, 3, 4], dict(max_length=3), [1, 2, 3]),
    ],
)
def test_trim_passage(ids, kwargs, expected):
    assert data.trim_passage(ids, **kwargs) == expected


def test_trim_article_cuts_back_to_last_newline():
    ids = [5, 6, 198, 7, 8, 198, 9, 10, 11]
    assert data.trim_article(ids, max_length=8, end_id=198) == [5, 6, 198, 7, 8, 198]
    assert data.trim_article(ids, max_length=20, end_id=198) == ids
    assert data.trim_article([1, 2, 3, 4], max_length=2, end_id=198) == [1, 2]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("By Jane Roe\nPUBLISHED: 10:00 EST\nThe council met on Tuesday.", "The council met on Tuesday."),
        ("LONDON, England (CNN) -- A bridge reopened today.", "A bridge reopened today."),
        ("ATLANTA, Georgia (CNN)A storm passed.", "A storm passed."),
        ("and Reporter\nThe vote was close.", "The vote was close."),
        ("\u2018Quoted\u2019 and \u201cdouble\u201d", "'Quoted' and \"double\""),
    ],
)
def test_clean_up_start(raw, expected):
    assert data.clean_up_start(raw) == expected


def test_clean_article_drops_highlights_and_collapses_newlines():
    raw = "(CNN) -- The mayor spoke.\n\n\n\nShe left.\n@highlight\nMayor spoke\n@highlight\nLeft"
    assert data.clean_article(raw) == "The mayor spoke.\n\nShe left."


def test_tldr_fixture_schema_and_splits():
    with pytest.warns(UserWarning, match="trl-lib/tldr"):
        posts = [p for s in data.SPLITS for p in data.load_tldr(s)]
    assert len(posts) >= 60
    assert len({p.id for p in posts}) == len(posts)
    for p in posts:
        assert p.subreddit and p.title and p.post and p.summary
        assert p.text.startswith(f"SUBREDDIT: r/{p.subreddit}\n\nTITLE: ")
    with pytest.warns(UserWarning):
        train = {p.id for p in data.load_tldr("train")}
        test = {p.id for p in data.load_tldr("test")}
    assert train and test and not train & test


def test_tldr_prompt_layouts(tmp_path):
    prompt = "SUBREDDIT: r/cooking\n\nTITLE: Dense bread\n\nPOST: My loaf is heavy.\n\nTL;DR:"
    rows = [{"prompt": prompt, "completion": " heavy loaf"}]
    (post,) = data.tldr_rows_to_posts(rows, "mem")
    assert (post.subreddit, post.title, post.post, post.summary) == (
        "cooking",
        "Dense bread",
        "My loaf is heavy.",
        "heavy loaf",
    )
    (post2,) = data.tldr_rows_to_posts([{"prompt": prompt, "label": "x"}], "mem")
    assert post2.post == "My loaf is heavy."
    with pytest.raises(data.DataSchemaError, match=r"found \['content', 'tldr'\]"):
        data.tldr_rows_to_posts([{"content": "a", "tldr": "b"}], "mem")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_local_files_for_each_family(tmp_path):
    posts = [
        {"id": f"p{i}", "subreddit": "a", "title": "t", "post": "body\n\n\n\nmore", "summary": "s"}
        for i in range(40)
    ]
    got = [p for s in data.SPLITS for p in data.load_tldr(s, _write_jsonl(tmp_path / "t.jsonl", posts))]
    assert len(got) == 40 and got[0].post == "body\n\nmore"
    arts = [{"id": f"a{i}", "article": "(CNN) -- Words here.", "highlights": "Words."} for i in range(30)]
    got = [a for s in data.SPLITS for a in data.load_cnndm(s, _write_jsonl(tmp_path / "c.jsonl", arts))]
    assert len(got) == 30 and got[0].article == "Words here." and got[0].reference == "Words."
    (tmp_path / "novel.txt").write_text(
        "\n\n".join(
            f"Paragraph {i} has quite a few words in it so that it passes the filter." for i in range(50)
        )
    )
    books = [b for s in data.SPLITS for b in data.load_books(s, tmp_path / "novel.txt", min_words=5)]
    assert len(books) == 50 and books[0].book == "novel"


def test_parquet_and_csv_sources(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [{"id": f"p{i}", "subreddit": "a", "title": "t", "post": "b", "summary": "s"} for i in range(20)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    assert sum(len(data.load_tldr(s, tmp_path / "t.parquet")) for s in data.SPLITS) == 20
    (tmp_path / "b.csv").write_text(
        "text\n" + "\n".join(f'"Some prose line number {i} with words."' for i in range(10))
    )
    assert sum(len(data.load_books(s, tmp_path / "b.csv", min_words=3)) for s in data.SPLITS) == 10


def test_schema_errors_name_fields_and_lines(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"article": "a", "highlights": "b"}\n{oops\n')
    with pytest.raises(data.DataSchemaError, match=r"bad.jsonl:2"):
        data.load_cnndm("train", bad)
    missing = _write_jsonl(tmp_path / "m.jsonl", [{"story": "x"}])
    with pytest.raises(data.DataSchemaError, match=r"missing field\(s\) \['article', 'highlights'\]"):
        data.load_cnndm("train", missing)
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(ValueError, match="Unsupported data file"):
        data.read_records(tmp_path / "x.xml")
    with pytest.raises(FileNotFoundError):
        data.read_records(tmp_path / "nope.jsonl")


def test_hub_sources_fail_fast_offline(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"'abisee/cnn_dailymail'.*offline default"):
        data.load_cnndm("train", "hub")
    with pytest.raises(ConnectionError, match="'CarperAI/openai_summarize_tldr'"):
        data.load_tldr("train", "hub:CarperAI/openai_summarize_tldr")
    assert time.perf_counter() - t0 < 10


def test_missing_offline_data_names_the_command(empty_cache):
    with pytest.raises(AssetMissingError, match="textenv setup"):
        data.load_books("train")
    with pytest.raises(AssetMissingError, match="textenv setup"):
        data.load_cnndm("train")


needs_books = pytest.mark.skipif(
    not asset_ready("books"), reason="books corpus not cached: run textenv setup"
)
needs_cnndm = pytest.mark.skipif(
    not asset_ready("cnndm"), reason="cnndm sample not cached: run textenv setup"
)


@needs_books
def test_book_queries_end_at_a_period(gpt2_tokenizer):
    tok = gpt2_tokenizer
    passages = data.load_books("valid")
    assert len(passages) > 500
    queries = []
    for p in passages[:300]:
        q = data.trim_passage(tok.encode(p.text), max_length=64, min_length=32, start_id=13, end_id=13)
        if q is not None:
            queries.append(q)
    assert len(queries) > 100
    assert all(32 <= len(q) <= 64 and q[-1] == 13 for q in queries)


@needs_cnndm
def test_cnndm_offline_sample():
    arts = [a for s in data.SPLITS for a in data.load_cnndm(s)]
    assert len(arts) == 300
    assert all(a.reference and a.article for a in arts)
    multi = [a for a in arts if len(a.summaries) >= 3]
    assert len(multi) == 100
    for a in multi:
        assert a.reference == max(a.summaries, key=lambda s: s[1])[0]
    assert not any(a.article.startswith("By ") for a in arts)
