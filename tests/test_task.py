"""The public Task API (textenv.make_task), the data families and the one sampler (textenv.sampler)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import textenv
from textenv import data
from textenv.families import FAMILIES, family_of
from textenv.models.sampling import generator_sample_fn, hf_sample_fn, sample_responses
from textenv.sampler import sample_for_prompts, sample_task
from textenv.task import Task, make_task

pytestmark = pytest.mark.filterwarnings("ignore:Using textenv's small TL;DR")

PERIOD, NEWLINE = 13, 198  # GPT-2 '.' and '\n'


@pytest.fixture(scope="module")
def books(gpt2_tokenizer):
    return make_task("BookSentiment-v0", gpt2_tokenizer)


def test_make_task_is_exported_lazily_and_draws_without_a_reward_function(gpt2_tokenizer, monkeypatch):
    import textenv.scorers as scorers

    built = []
    real = scorers.make_builtin_score
    monkeypatch.setattr(scorers, "make_builtin_score", lambda *a: built.append(a) or real(*a))
    task = textenv.make_task("BookSentiment-v0", gpt2_tokenizer)
    assert isinstance(task, textenv.Task) and textenv.Task is Task
    a, b = task.draw_prompts(5, seed=3), task.draw_prompts(5, seed=3)
    assert a == b and len({p.id for p in task.draw_prompts(20, seed=4)}) > 1
    assert task.contexts(a).shape == (5, task.context_length) and task.queries(a).shape == (5, 64)
    assert built == []  # drawing never builds the score; the first score does
    out = task.score(task.queries(a), np.full((5, 24), PERIOD))
    assert len(built) == 1 and out["valid"].all() and out["score"].shape == (5,)


def test_contexts_equal_the_env_observations_for_the_same_seed(books):
    env = gym.make("BookSentiment-v0", tokenizer=books.tokenizer).unwrapped
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        (prompt,) = books.draw_prompts(1, seed)
        assert np.array_equal(obs[: books.context_length], books.contexts([prompt])[0])
    envs = gym.make_vec(
        "CNNDMSummarize-v0", num_envs=3, vectorization_mode="vector_entry_point", tokenizer=books.tokenizer
    )
    obs, _ = envs.reset(seed=7)
    task = make_task("CNNDMSummarize-v0", books.tokenizer)
    rows = task.contexts([task.draw_prompts(1, 7 + i)[0] for i in range(3)])
    assert np.array_equal(obs[:, : task.context_length], rows)


def test_score_equals_the_env_reward_and_truncates(books):
    env = gym.make("BookSentiment-v0", tokenizer=books.tokenizer).unwrapped
    obs, _ = env.reset(seed=1)
    response = np.array([400] * 17 + [PERIOD] + [500] * 6)
    for t in response:
        obs, reward, _, _, info = env.step(int(t))
    (prompt,) = books.draw_prompts(1, 1)
    out = books.score(books.queries([prompt]), response[None])
    assert out["reward"][0] == reward and out["truncated_text"][0] == info["truncated_text"]
    truncated, valid, kept = books.truncate(response[None])
    assert valid[0] and kept[0].sum() == 18 and (truncated[0, 18:] == books.pad_id).all()
    assert books.score(books.queries([prompt]), np.full((1, 24), 400))["reward"][0] == -1.0  # §1.6 penalty
    task = make_task("BookSentiment-v0", books.tokenizer, reward_fn=lambda q, r: np.full(len(r), 0.25))
    assert task.score(task.queries([prompt]), response[None])["score"][0] == 0.25
    task.set_reward_fn("mock_sentiment")
    assert task.score(task.queries([prompt]), response[None])["score"][0] != 0.25


def test_bad_ids_overrides_and_rewards_name_the_value(gpt2_tokenizer):
    with pytest.raises(ValueError, match=r"Unknown task 'NoSuch-v0'; registered tasks"):
        make_task("NoSuch-v0", gpt2_tokenizer)
    with pytest.raises(TypeError, match=r"Unknown task option\(s\) \['querylength'\] for BookSentiment-v0"):
        make_task("BookSentiment-v0", gpt2_tokenizer, querylength=8)
    with pytest.raises(ValueError, match="query_length must be a positive int, got -3"):
        make_task("BookSentiment-v0", gpt2_tokenizer, query_length=-3)
    with pytest.raises(ValueError, match="Unknown built-in reward 'nope'"):
        make_task("BookSentiment-v0", gpt2_tokenizer, reward_fn="nope")
    with pytest.raises(TypeError, match="must be a callable"):
        make_task("BookSentiment-v0", gpt2_tokenizer, reward_fn=3)
    with pytest.raises(TypeError, match="Unsupported prompt record int"):
        make_task("BookSentiment-v0", gpt2_tokenizer, prompts=[42]).prepare(0)


def test_each_family_formats_its_records(gpt2_tokenizer):
    tok = gpt2_tokenizer
    assert set(FAMILIES) == {"books", "tldr", "cnndm", "text"}
    book = data.BookPassage("b1", "book", "Junk before. " + "A long sentence here. " * 4 + "Cut off")
    post = data.RedditPost("r1", "test", "A title", "The post.", "The summary.")
    article = data.Article("a1", ("Line one of the story.\n" * 40).strip(), "Ref.")
    assert [family_of(r).name for r in (book, post, article, "text")] == ["books", "tldr", "cnndm", "text"]
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    task = make_task("BookSentiment-v0", tok, prompts=[book, "Just a string."], min_query_length=4)
    expected = data.trim_passage(enc(book.text), max_length=64, min_length=4, start_id=PERIOD, end_id=PERIOD)
    assert list(task.prepare(0).query) == expected and expected[-1] == PERIOD
    assert task.prepare(1).id == "prompt-1" and list(task.prepare(1).query) == enc("Just a string.")
    tl = make_task("TLDRSummarize-v0", tok, prompts=[post])
    assert list(tl.prepare(0).query) == enc(post.text) and tl.prepare(0).reference == "The summary."
    cn = make_task("CNNDMSummarize-v0", tok, prompts=[article], query_length=50)
    query = list(cn.prepare(0).query)
    assert query == data.trim_article(enc(article.article), max_length=50, end_id=NEWLINE)
    assert query[-1] == NEWLINE and len(query) < 50


def _plain_loop(lm, task, n, seed, sample_seed, batch_size):
    """The per-caller code the sampler replaced (rewards/train.py policy_samples before the Task API)."""
    rng = np.random.default_rng(seed)
    queries, responses, call = [], [], 0
    while len(queries) < n:
        prompts = [task.draw(rng) for _ in range(min(batch_size, n - len(queries)))]
        context = np.stack([task.context_row(p) for p in prompts])
        out = sample_responses(lm, context, task.pad_id, 6, 0.7, seed=sample_seed + call)
        call += 1
        queries += [list(p.query) for p in prompts]
        responses += [[int(t) for t in r] for r in out]
    return queries, responses


def test_the_sampler_equals_the_plain_loop(tiny_gpt2):
    lm, tok = tiny_gpt2
    task = make_task("BookSentiment-v0", tok, response_length=6, truncate_after=2)
    drawn = sample_task(task, hf_sample_fn(lm, task.pad_id, 0.7), 5, seed=2, sample_seed=99, batch_size=2)
    q, r = _plain_loop(lm, task, 5, 2, 99, 2)
    assert [list(p.query) for p in drawn.prompts] == q and drawn.responses.tolist() == r
    # k responses per prompt: rows i*k .. i*k+k-1, one call = np.repeat of the contexts
    prompts = task.draw_prompts(2, 5)
    two = sample_for_prompts(task, prompts, hf_sample_fn(lm, task.pad_id, 0.7), k=3, seed=4)
    rows = np.repeat(np.stack([task.context_row(p) for p in prompts]), 3, axis=0)
    assert np.array_equal(two.contexts, rows) and len(two.per_prompt()) == 2
    assert np.array_equal(two.responses, sample_responses(lm, rows, task.pad_id, 6, 0.7, seed=4))
    assert two.row_prompts()[3] == prompts[1]


def test_a_generator_sampler_plugs_in(tiny_gpt2):
    _, tok = tiny_gpt2
    task = make_task("BookSentiment-v0", tok, response_length=4, truncate_after=1)

    def sample(context, length, generator=None):  # PolicyWithValue.sample's signature
        return torch.randint(0, 50, (len(context), length), generator=generator), None

    drawn = sample_task(task, generator_sample_fn(sample), 3, seed=1)
    expected = torch.randint(0, 50, (3, 4), generator=torch.Generator().manual_seed(1)).numpy()
    assert np.array_equal(drawn.responses, expected)
    with pytest.raises(ValueError, match="returned shape"):
        sample_task(task, lambda c, n, s: np.zeros((1, n)), 3, seed=1)


def test_sample_responses_leaves_the_global_rng_alone(tiny_gpt2):
    lm, tok = tiny_gpt2
    context = np.full((2, 4), 400)
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    a = sample_responses(lm, context, tok.pad_token_id, 3, 1.0, seed=11)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(11)
    with torch.no_grad():
        from textenv.models.tokenization import padded_inputs

        inputs = padded_inputs(torch.as_tensor(context), tok.pad_token_id)
        ref = lm.generate(
            **{k: inputs[k] for k in ("input_ids", "attention_mask")},
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=3,
            min_new_tokens=3,
            eos_token_id=None,
            pad_token_id=0,
        )
    assert np.array_equal(a, ref[:, 4:].numpy())


def test_a_new_data_family_is_one_registry_entry(monkeypatch, gpt2_tokenizer):
    """A family module's FAMILY (record type, to_prompt, load) is all a task of that family needs."""
    import dataclasses as dc

    from textenv import families
    from textenv.families.base import DataFamily, make_prompt
    from textenv.tasks import get_task

    @dc.dataclass(frozen=True)
    class Quote:
        id: str
        text: str

    def to_prompt(record, index, config, encode, ids):
        return make_prompt(record.id, encode(record.text.upper())[: config.query_length])

    def load(split, source):
        return [Quote(f"q{i}-{split}", f"quote number {i}.") for i in range(3)]

    family = DataFamily("quotes", Quote, to_prompt, load=load)
    monkeypatch.setitem(families.FAMILIES, "quotes", family)
    tok = gpt2_tokenizer
    task = make_task(get_task("BookSentiment-v0", family="quotes", min_query_length=1), tok)
    prompt = task.draw_prompts(1, seed=0)[0]
    assert prompt.id.startswith("q") and prompt.id.endswith("-train")
    assert tok.decode(list(prompt.query)).startswith("QUOTE NUMBER")
    with pytest.raises(ValueError, match="family='poems' is not a data family"):
        make_task(get_task("BookSentiment-v0", family="poems"), tok)
