"""PolicyWithValue: value head, temperature, sampling, alignment (PAPER.md must-haves 1-3, 5, 15)."""

import pytest
import torch

from agents.policy import PolicyWithValue
from textenv.models.tokenization import pad_sequences, padded_inputs


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-llama"])
def policy(request):
    return PolicyWithValue.from_spec(request.param, temperature=0.7, seed=0)


def _context(policy, texts, length=12):
    tok = policy.tokenizer
    return torch.tensor(pad_sequences([tok.encode(t) for t in texts], policy.pad_id, length, side="left"))


def test_values_are_zero_at_init_and_shaped(policy):
    ctx = _context(policy, ["The sea was calm.", "Hi"])
    responses, _ = policy.sample(ctx, 5, generator=torch.Generator().manual_seed(0))
    stats = policy.forward_stats(torch.cat([ctx, responses], 1), ctx.shape[1])
    assert stats.values.shape == (2, 5) and (stats.values == 0).all()
    assert stats.logprobs.shape == stats.entropy.shape == (2, 5)


def test_sampling_logprobs_equal_recomputed_tempered_logprobs(policy):
    ctx = _context(policy, ["It was a dark and stormy night;", "Call me"])
    responses, logps = policy.sample(ctx, 6, generator=torch.Generator().manual_seed(1))
    stats = policy.forward_stats(torch.cat([ctx, responses], 1), ctx.shape[1])
    torch.testing.assert_close(stats.logprobs, logps, atol=1e-4, rtol=1e-4)
    # the recomputation is log_softmax(logits / T) at the sampled tokens (must-have 2)
    full = torch.cat([ctx, responses], 1)
    logits = policy.lm(**padded_inputs(full, policy.pad_id)).logits  # the plain HF forward
    ref = torch.log_softmax(logits[:, ctx.shape[1] - 1 : -1] / 0.7, -1).gather(-1, responses[..., None])[
        ..., 0
    ]
    torch.testing.assert_close(stats.logprobs, ref)
    policy.temperature = 1.0
    assert not torch.allclose(policy.forward_stats(full, ctx.shape[1]).logprobs, stats.logprobs)
    policy.temperature = 0.7


def test_fixed_length_no_pad_and_eos_does_not_stop(policy):
    ctx = _context(policy, ["x"] * 50, length=4)
    responses, _ = policy.sample(ctx, 20, generator=torch.Generator().manual_seed(2))
    assert responses.shape == (50, 20)
    assert (responses != policy.pad_id).all() and (responses < policy.vocab_size).all()
    # make EOS likely (a large logit through the output layer) and check that sampling continues past it
    eos = policy.tokenizer.eos_token_id
    head = policy.lm.get_output_embeddings().weight
    saved = head.detach().clone()
    with torch.no_grad():
        head[eos] = 5.0 * policy.lm.base_model(input_ids=torch.tensor([[1]])).last_hidden_state[0, 0].sign()
    try:
        responses, _ = policy.sample(ctx, 10, generator=torch.Generator().manual_seed(3))
    finally:
        with torch.no_grad():
            head.copy_(saved)
    assert responses.shape == (50, 10)
    has_eos = (responses[:, :-1] == eos).any(dim=1)
    assert has_eos.any()


def test_reference_copy_gives_zero_kl_at_start(policy):
    ref = policy.reference()
    assert all(not p.requires_grad for p in ref.parameters())
    ctx = _context(policy, ["Once upon a time", "The"])
    responses, _ = policy.sample(ctx, 5, generator=torch.Generator().manual_seed(4))
    full = torch.cat([ctx, responses], 1)
    kl = policy.forward_stats(full, ctx.shape[1]).logprobs - ref.forward_stats(full, ctx.shape[1]).logprobs
    # zero up to float32 rounding: a frozen copy may take another CPU kernel than the trainable weights
    # (a log-prob near -10 has a unit in the last place of ~1e-6); a wrong copy is off by far more
    assert kl.abs().max().item() <= 1e-5


def test_forward_stats_is_padding_invariant(policy):
    tok = policy.tokenizer
    q = tok.encode("The river ran")
    r = torch.tensor([tok.encode(" fast and cold")])
    a = torch.tensor(pad_sequences([q], policy.pad_id, 6, side="left"))
    b = torch.tensor(pad_sequences([q], policy.pad_id, 10, side="left"))
    sa = policy.forward_stats(torch.cat([a, r], 1), 6)
    sb = policy.forward_stats(torch.cat([b, r], 1), 10)
    torch.testing.assert_close(sa.logprobs, sb.logprobs, atol=1e-5, rtol=1e-5)


def test_seeded_sampling_is_deterministic(policy):
    ctx = _context(policy, ["Same seed", "same samples"])
    a, _ = policy.sample(ctx, 8, generator=torch.Generator().manual_seed(7))
    b, _ = policy.sample(ctx, 8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="temperature"):
        PolicyWithValue(policy.lm, policy.pad_id, temperature=0)
    with pytest.raises(ValueError, match="Lc"):
        policy.forward_stats(torch.cat([ctx, a], 1), 0)
    # real token ids: in the vocabulary, never the pad (which lies at or past the vocabulary)
    assert a.dtype == torch.long and (a >= 0).all() and (a < policy.pad_id).all()


def test_chunked_output_layer_gives_the_same_logprobs_gradients_and_entropies(policy):
    """Above ``logits_chunk_elements`` the output layer runs in row chunks under activation checkpointing
    (big vocabularies): log-probs, entropies and the gradients they give equal the one-pass ones."""
    ctx = _context(policy, ["It was a dark and stormy night;", "Call me", "The sea", "Once upon"])
    responses, _ = policy.sample(ctx, 5, generator=torch.Generator().manual_seed(3))
    full = torch.cat([ctx, responses], 1)
    grads = []
    for chunk in (2**40, 5 * policy.vocab_size):  # one pass; then one row per chunk
        policy.logits_chunk_elements = chunk
        policy.zero_grad()
        stats = policy.forward_stats(full, ctx.shape[1])
        assert not stats.entropy.requires_grad and stats.logprobs.requires_grad
        stats.logprobs.sum().backward()
        grads.append((stats, [p.grad.clone() for p in policy.lm.parameters() if p.grad is not None]))
    del policy.logits_chunk_elements
    (a, ga), (b, gb) = grads
    torch.testing.assert_close(a.logprobs, b.logprobs)
    torch.testing.assert_close(a.entropy, b.entropy)
    assert len(ga) == len(gb) > 0
    for x, y in zip(ga, gb):
        # chunks sum the gradient in another order: equal to float32 rounding of the largest entry
        torch.testing.assert_close(x, y, atol=1e-5 * x.abs().max().item(), rtol=1e-5)


def test_a_separate_value_network_leaves_an_untied_output_layer_frozen():
    """The value reads the reward model's trunk and head, never its LM output layer: untied, that layer
    stays frozen (no optimiser state, and DDP's reduction never waits for a gradient that cannot come)."""
    import transformers as hf

    from rewards.model import RewardModel

    cfg = hf.LlamaConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=64,
        tie_word_embeddings=False,
    )
    rm = RewardModel(hf.LlamaForCausalLM(cfg), pad_id=64)
    policy = PolicyWithValue(hf.LlamaForCausalLM(cfg), pad_id=64, value_model=rm)
    assert not rm.lm.get_output_embeddings().weight.requires_grad
    assert rm.lm.get_input_embeddings().weight.requires_grad and rm.head.weight.requires_grad
    stats = policy.forward_stats(torch.randint(0, 64, (2, 6)), 3)
    stats.values.sum().backward()
    trainable = [p for p in rm.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable)  # every trainable value parameter gets a gradient


@pytest.mark.parametrize("sampler", ["dynamic", "static"])
def test_sample_stats_records_the_values_and_entropies_a_forward_pass_gives(policy, sampler):
    """``sample_stats`` (the reference code's ``respond``, PAPER.md §1.8) records what ``forward_stats``
    recomputes on context ⊕ response: the same tokens and log-probs as ``sample``, the value of token t
    from the state before it (position Lc - 1 + t) and the entropy it was drawn from, up to the rounding
    of a KV-cached pass; padded rows included."""
    ctx = _context(policy, ["It was a dark and stormy night;", "Call me", "The"])
    head = policy.value_head
    saved = head.weight.detach().clone(), head.bias.detach().clone()
    with torch.no_grad():  # a non-zero head (zero at init would make any state agree)
        head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(0)))
        head.bias.fill_(0.3)
    policy.sampler = sampler
    try:
        responses, logps = policy.sample(ctx, 7, generator=torch.Generator().manual_seed(5))
        same, stats = policy.sample_stats(ctx, 7, generator=torch.Generator().manual_seed(5))
        assert torch.equal(same, responses) and torch.equal(stats.logprobs, logps)
        full = policy.forward_stats(torch.cat([ctx, responses], 1), ctx.shape[1])
    finally:
        del policy.sampler
        with torch.no_grad():
            head.weight.copy_(saved[0])
            head.bias.copy_(saved[1])
    assert stats.values.shape == stats.entropy.shape == (3, 7)
    assert stats.values.dtype == torch.float32 and stats.values.abs().min() > 0
    torch.testing.assert_close(stats.values, full.values, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(stats.entropy, full.entropy, atol=1e-4, rtol=1e-4)
    assert not torch.equal(stats.values[:, 1:], stats.values[:, :-1])  # one state per step, not one repeated


def test_sample_stats_refuses_a_separate_value_network():
    import transformers as hf

    from rewards.model import RewardModel

    cfg = hf.LlamaConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=64
    )
    policy = PolicyWithValue(
        hf.LlamaForCausalLM(cfg), pad_id=63, value_model=RewardModel(hf.LlamaForCausalLM(cfg), 63)
    )
    with pytest.raises(ValueError, match="separate value_model gets them from forward_stats"):
        policy.sample_stats(torch.randint(0, 63, (2, 4)), 3)
