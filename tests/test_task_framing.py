"""BOS and chat-template framing of the context (issue 16): Gemma-style tokenizers that add BOS get it in
every context, instruct models can see their chat template, and the paper's plain text stays the default."""

import gymnasium as gym
import pytest
import transformers as hf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

import textenv  # noqa: F401  (registers the ids)
from textenv.models import load_tokenizer
from textenv.models.tokenization import ensure_pad_token

SMALL = dict(query_length=8, response_length=4, min_query_length=1, truncate_token=None, truncate_after=0)
PROMPTS = ["The weather today is", "Once upon a time"]


def bos_adding_tokenizer():
    """A tiny byte-level BPE whose post-processor puts <bos> first, as Gemma's does."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<eos>", "<bos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(PROMPTS * 20, trainer)
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tok = hf.PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    ensure_pad_token(tok)
    return tok


def context(env):
    obs, _ = env.reset(seed=0)
    task = env.unwrapped.task
    ctx = obs[: task.context_length]
    return task, ctx[ctx != task.pad_id].tolist()


def test_a_tokenizer_that_adds_bos_gets_it_first_in_every_context():
    tok = bos_adding_tokenizer()
    assert tok("hi")["input_ids"][0] == 2
    task, ids = context(gym.make("BookSentiment-v0", tokenizer=tok, prompts=PROMPTS, **SMALL))
    assert ids[0] == 2 and 2 not in ids[1:] and task.context_length == 8 + 1
    # the reward function's raw query carries no BOS
    assert 2 not in task.query_row(task.draw_prompts(1, 0)[0]).tolist()
    task, ids = context(gym.make("BookSentiment-v0", tokenizer=tok, prompts=PROMPTS, add_bos=False, **SMALL))
    assert ids[0] != 2 and task.context_length == 8


def test_gpt2_and_smollm2_contexts_are_unchanged_by_default():
    for spec in ("tiny-gpt2", "smollm2-135m"):
        task, ids = context(gym.make("BookSentiment-v0", tokenizer=spec, prompts=PROMPTS, **SMALL))
        assert task.head == [] and task.tail == [] and task.context_length == 8


def test_chat_template_wraps_the_query_as_the_user_turn():
    tok = load_tokenizer("smollm2-135m")
    env = gym.make("BookSentiment-v0", tokenizer=tok, prompts=PROMPTS, chat_template=True, **SMALL)
    task, ids = context(env)
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    prompt_text = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    assert prompt_text in PROMPTS
    assert task.context_length == 8 + len(task.head) + len(task.tail)
    # the same ids the tokenizer's own apply_chat_template gives for that message
    own = tok.apply_chat_template([{"role": "user", "content": prompt_text}], add_generation_prompt=True)
    own = own["input_ids"] if isinstance(own, dict) or hasattr(own, "keys") else own
    assert ids == list(own)


def test_chat_template_without_a_template_and_bad_values_are_refused():
    with pytest.raises(ValueError, match=r"chat_template=True but the tokenizer .* has no chat template"):
        gym.make("BookSentiment-v0", tokenizer="tiny-gpt2", prompts=PROMPTS, chat_template=True, **SMALL)
    with pytest.raises(ValueError, match=r"add_bos must be true, false or None .* got add_bos='yes'"):
        gym.make("BookSentiment-v0", tokenizer="tiny-gpt2", prompts=PROMPTS, add_bos="yes", **SMALL)
    with pytest.raises(ValueError, match=r"add_bos=True but the tokenizer GPT2Tokenizer\w* has no BOS token"):
        tok = load_tokenizer("tiny-gpt2")
        tok.bos_token = None
        gym.make("BookSentiment-v0", tokenizer=tok, prompts=PROMPTS, add_bos=True, **SMALL)


def test_a_framing_token_equal_to_the_pad_is_refused():
    tok = bos_adding_tokenizer()
    tok.pad_token = "<bos>"  # a pad that is also the BOS: the BOS would be masked as padding
    with pytest.raises(
        ValueError, match=r"framing \(BOS / chat template\) contains the pad id 2 \('<bos>'\)"
    ):
        gym.make("BookSentiment-v0", tokenizer=tok, prompts=PROMPTS, **SMALL)
    with pytest.raises(ValueError, match=r"got add_bos=1"):
        gym.make("BookSentiment-v0", tokenizer="tiny-gpt2", prompts=PROMPTS, add_bos=1, **SMALL)
