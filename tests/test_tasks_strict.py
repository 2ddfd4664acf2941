"""textenv/tasks.py: every preset field pinned, each validation alone, truncation boundaries (issue 20)."""

import dataclasses

import numpy as np
import pytest

from textenv.tasks import (
    TASKS,
    TaskConfig,
    apply_penalty,
    get_task,
    response_is_valid,
    truncate_response,
    truncation_mask,
)

BOOKS = dict(
    family="books",
    query_length=64,
    response_length=24,
    temperature=0.7,
    truncate_token=".",
    truncate_after=16,
    min_query_length=32,
    truncate_token_id=None,
    penalty_reward_value=-1.0,
    query_prefix="",
    query_suffix="",
    start_text=".",
    end_text=".",
    split="train",
    data_source=None,
    tokenizer="smollm2-135m",
    add_bos=None,
    chat_template=False,
    extra={},
)
SUMMARIZE = dict(
    query_length=500,
    response_length=75,
    truncate_token="\n",
    truncate_after=55,
    reward="rouge",
    min_query_length=1,
    truncate_token_id=None,
    penalty_reward_value=-1.0,
    query_suffix="\n\nTL;DR:",
    start_text=None,
    end_text=None,
    split="train",
    data_source=None,
    tokenizer="smollm2-135m",
    add_bos=None,
    chat_template=False,
    extra={},
)
PRESETS = {
    "BookSentiment-v0": dict(BOOKS, reward="sentiment"),
    "BookDescriptive-v0": dict(BOOKS, reward="descriptiveness"),
    "MockSentiment-v0": dict(BOOKS, reward="mock_sentiment"),
    "TLDRSummarize-v0": dict(SUMMARIZE, family="tldr", temperature=0.7, query_prefix=""),
    "CNNDMSummarize-v0": dict(SUMMARIZE, family="cnndm", temperature=0.5, query_prefix="Article:\n\n"),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_field_of_every_preset_is_the_papers(name):
    assert dataclasses.asdict(TASKS[name]) == {"name": name, **PRESETS[name]}
    assert sorted(TASKS) == sorted(PRESETS)


def small(**kw):
    base = dict(
        name="T",
        family="books",
        query_length=4,
        response_length=3,
        temperature=1.0,
        truncate_token=".",
        truncate_after=0,
        reward="r",
    )
    return TaskConfig(**{**base, **kw})


def test_smallest_valid_settings_are_accepted():
    t = small(query_length=1, response_length=1, truncate_after=0, min_query_length=1, temperature=1)
    assert (t.query_length, t.response_length, t.truncate_after) == (1, 1, 0)
    assert small(truncate_after=2).truncate_after == 2  # the last index of a 3-token response
    assert small(min_query_length=4).min_query_length == 4  # equal to query_length
    assert small(truncate_token="").truncate_token is None  # TOML's way to turn the rule off
    assert small(truncate_token=None).truncate_token is None
    assert small(temperature=1e-6, penalty_reward_value=0).temperature == 1e-6


@pytest.mark.parametrize(
    "override, match",
    [
        (dict(query_length=0), "query_length must be a positive int, got 0"),
        (dict(query_length=4.0), "query_length must be a positive int, got 4.0"),
        (dict(response_length=0), "response_length must be a positive int"),
        (dict(response_length=3.0), "response_length must be a positive int"),
        (dict(truncate_after=-1), "truncate_after=-1 leaves no room"),
        (
            dict(truncate_after=3),
            r"truncate_after=3 leaves no room .* 3 tokens; .*\(e.g. response_length=11\)",
        ),
        (dict(temperature=0.0), "temperature must be > 0, got 0.0"),
        (dict(temperature=-0.5), "temperature must be > 0"),
        (dict(temperature=float("nan")), "temperature must be a finite number, got nan"),
        (dict(temperature=float("inf")), "temperature must be a finite number"),
        (dict(temperature=True), "temperature must be a finite number, got True"),
        (dict(temperature="0.7"), "temperature must be a finite number"),
        (dict(penalty_reward_value=float("-inf")), "penalty_reward_value must be a finite number"),
        (dict(penalty_reward_value=False), "penalty_reward_value must be a finite number"),
        (dict(family=""), "family must be a data family's name"),
        (dict(min_query_length=5), "min_query_length=5 exceeds query_length=4"),
    ],
)
def test_each_bad_setting_alone_is_rejected(override, match):
    with pytest.raises(ValueError, match=match):
        small(**override)


def test_replace_and_get_task():
    t = small()
    assert t.replace(query_length=9).query_length == 9 and t.query_length == 4
    with pytest.raises(TypeError, match=r"Unknown task option\(s\) \['a', 'b'\] for T; valid options: \["):
        t.replace(b=1, a=2)
    assert get_task(t) is t
    assert get_task(t, split="valid").split == "valid"
    assert get_task("BookSentiment-v0") is TASKS["BookSentiment-v0"]
    assert get_task("BookSentiment-v0", truncate_after=3).truncate_after == 3
    with pytest.raises(ValueError, match=r"Unknown task 'X'; registered tasks: \['Book"):
        get_task("X")


def test_truncation_boundaries():
    r = np.array([[7, 1, 7, 1], [1, 7, 1, 7], [1, 1, 1, 1], [7, 7, 7, 7]])
    # truncate_after = 0: the very first token counts
    assert truncation_mask(r, 7, 0).tolist() == [
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, True],
        [True, False, False, False],
    ]
    # truncate_after = L - 1: only the last index counts
    assert response_is_valid(r, 7, 3).tolist() == [False, True, False, True]
    assert truncation_mask(r, 7, 3).all()
    assert truncate_response(r, 7, 1, pad_id=-1).tolist() == [
        [7, 1, 7, -1],
        [1, 7, -1, -1],
        [1, 1, 1, 1],
        [7, 7, -1, -1],
    ]
    # truncate_after = L (only reachable through the pure functions): nothing counts
    assert response_is_valid(r, 7, 4).tolist() == [False] * 4 and truncation_mask(r, 7, 4).all()
    # length-1 and length-0 responses
    one = np.array([[7], [1]])
    assert truncation_mask(one, 7, 0).tolist() == [[True], [True]]
    assert response_is_valid(one, 7, 0).tolist() == [True, False]
    assert response_is_valid(one, 7, 1).tolist() == [False, False]
    empty = np.zeros((2, 0), dtype=np.int64)
    assert truncation_mask(empty, 7, 0).shape == (2, 0)
    assert response_is_valid(empty, 7, 0).tolist() == [False, False]
    # a single 1-D response and plain lists work too
    assert truncate_response([7, 1, 7], 7, 1, pad_id=0).tolist() == [7, 1, 7]
    assert response_is_valid([1, 7], 7, 1).item() is True


def test_apply_penalty_replaces_only_invalid_scores():
    out = apply_penalty([0.5, 2, -3.0], [True, False, True], -1.5)
    assert out.tolist() == [0.5, -1.5, -3.0] and out.dtype == np.float64
    assert apply_penalty(np.array([1, 2]), np.array([False, False]), 0.0).tolist() == [0.0, 0.0]


def test_truncation_matches_the_token_itself_not_larger_ids():
    # ids above the truncate token (13) after truncate_after: not a match, the response stays whole
    r = np.array([[5, 40, 50257, 40], [5, 40, 13, 99]])
    assert truncation_mask(r, 13, 1).tolist() == [[True] * 4, [True, True, True, False]]
    assert response_is_valid(r, 13, 1).tolist() == [False, True]
    assert truncate_response(r, 13, 1, pad_id=0).tolist() == [[5, 40, 50257, 40], [5, 40, 13, 0]]


def test_task_configs_are_frozen():
    task = get_task("BookSentiment-v0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.response_length = 3
