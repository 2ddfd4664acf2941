"""The compatibility matrix: every decoder family users train x every tokenizer situation (issue 16).

Each cell is a tiny random model built from the family's real transformers config class, with a tiny
byte-level BPE tokenizer (trained here in milliseconds, so the output layer is ~300 rows), in one of the
tokenizer situations models arrive in:

==========================  ==================================================================
situation                   what it looks like
==========================  ==================================================================
no-pad (tied)               no pad token: ``ensure_pad_token`` appends ``<|pad|>`` past the rows
pad-is-eos (untied)         pad == EOS (GPT-2 / Llama style): a new ``<|pad|>`` is appended
pad-in-vocab (tied)         the tokenizer's own ``<pad>`` is id 0, an output row (Gemma)
padding-rows (untied)       the output layer has 31 rows past the tokenizer (Qwen2.5's 151,936)
pad-in-vocab+padding-rows   both at once, untied
==========================  ==================================================================

and every cell checks: padding invariance (left, right, middle pads), KV-cached sampling log-probs equal
to recomputed ones, that neither the pad nor a padding row is ever sampled (built-in sampler, Hugging
Face ``generate``, the SB3 policy) even when the model prefers them, top-k freezing (the right parameters
train, cached features give the full forward), LoRA on the family's attention/MLP projections, a reward
model's scores and one training step, one PPO step, and the SB3 policy's forward. Architectures that
cannot work (no attention mask / positions: Mamba) get a clear error, checked below; nothing is skipped.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers as hf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from agents.algos import ALGOS
from agents.policy import PolicyWithValue
from agents.sections import HaltConfig, KLConfig, OptimConfig
from textenv.models.compat import check_causal_lm, lora_target_modules
from textenv.models.sampling import sample_responses
from textenv.models.tokenization import ensure_pad_token, padded_inputs, real_vocab_size
from textenv.models.trunk import blocks_of, final_modules

TEXT = [
    "The sea was calm. It was a dark and stormy night.\n",
    "Once upon a time there lived a king who loved to sing.\n",
    "My favourite food is bread with butter and honey.\n",
]
PROMPTS = ["The sea was calm and", "Once upon a time", "My favourite food", "It was a dark"]
D = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
KV = dict(num_key_value_heads=2, max_position_embeddings=128)

# family -> (config class, causal LM class, config kwargs); tiny shapes, the family's own code paths
FAMILIES = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=32, n_layer=2, n_head=4, n_positions=128)),
    "llama": ("LlamaConfig", "LlamaForCausalLM", {**D, **KV}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {**D, **KV, "sliding_window": 64}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {**D, **KV}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {**D, **KV, "head_dim": 8}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {**D, **KV, "head_dim": 8, "sliding_window": 64}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {**D, **KV, "head_dim": 8, "sliding_window": 64}),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {**D, "max_position_embeddings": 128}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {**D, **KV, "pad_token_id": None}),
    "opt": (
        "OPTConfig",
        "OPTForCausalLM",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=64,
            word_embed_proj_dim=32,
            max_position_embeddings=128,
        ),
    ),
    "phi": ("PhiConfig", "PhiForCausalLM", {**D, **KV}),
    "stablelm": ("StableLmConfig", "StableLmForCausalLM", {**D, **KV}),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {**D, **KV}),
}
SITUATIONS = {  # name -> (pad, extra output rows, tie embeddings)
    "no-pad": (None, 0, True),
    "pad-is-eos": ("eos", 0, False),
    "pad-in-vocab": ("<pad>", 0, True),
    "padding-rows": (None, 31, False),
    "pad-in-vocab+padding-rows": ("<pad>", 31, False),
}


def tiny_tokenizer(pad):
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(TEXT * 10, trainer)
    tok = hf.PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    if pad == "eos":
        tok.pad_token = tok.eos_token
    elif pad is not None:
        tok.pad_token = pad
    return tok


def build(family: str, situation: str, seed: int = 0):
    """(lm, tokenizer) of one cell; the tokenizer already has the project's pad convention applied."""
    cfg_name, lm_name, kwargs = FAMILIES[family]
    pad, extra_rows, tied = SITUATIONS[situation]
    tok = tiny_tokenizer(pad)
    eos = tok.eos_token_id
    cfg = getattr(hf, cfg_name)(
        **kwargs,
        vocab_size=len(tok) + extra_rows,
        bos_token_id=eos,
        eos_token_id=eos,
        tie_word_embeddings=tied,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = getattr(hf, lm_name)(cfg).eval()
    ensure_pad_token(tok)
    return lm, tok


CELLS = [pytest.param(f, s, id=f"{f}-{s}") for f in FAMILIES for s in SITUATIONS]


def banned_ids(lm, tok) -> set[int]:
    rows = lm.get_output_embeddings().weight.shape[0]
    out = set(range(real_vocab_size(tok), rows))
    if tok.pad_token_id < rows:
        out.add(tok.pad_token_id)
    return out


def prefer(lm, ids: set[int], boost: float = 30.0):
    """Make the model prefer ``ids``: +boost on their logits (a hook on the output layer)."""
    cols = torch.tensor(sorted(ids), dtype=torch.long)

    def hook(module, args, out):
        return out.index_add(-1, cols, torch.full((*out.shape[:-1], len(cols)), boost, dtype=out.dtype))

    return lm.get_output_embeddings().register_forward_hook(hook)


def ids_of(tok, texts, length):
    rows = [tok.encode(t, add_special_tokens=False)[:length] for t in texts]
    return rows


@pytest.mark.parametrize("family,situation", CELLS)
def test_cell(family, situation):
    torch.manual_seed(0)
    lm, tok = build(family, situation)
    check_causal_lm(lm)
    pad = tok.pad_token_id
    banned = banned_ids(lm, tok)
    assert (pad in banned) == (situation.startswith("pad-in-vocab") or situation.startswith("padding-rows"))

    # -- padding invariance: left, right and middle pads leave the real tokens' logits unchanged
    seq = ids_of(tok, ["It was a dark and stormy night"], 8)[0]
    plain = lm(**padded_inputs(torch.tensor([seq]), pad)).logits[0]
    for layout in ([pad] * 3 + seq, seq + [pad] * 3, seq[:4] + [pad] * 3 + seq[4:]):
        x = torch.tensor([layout])
        out = lm(**padded_inputs(x, pad)).logits[0][x[0] != pad]
        torch.testing.assert_close(out, plain, atol=2e-4, rtol=2e-4)

    # -- sampling: KV-cached log-probs == recomputed ones, and never a banned id, even when preferred
    policy = PolicyWithValue(lm, pad, temperature=0.8, vocab_size=real_vocab_size(tok))
    rows = ids_of(tok, PROMPTS, 6)
    width = max(map(len, rows))
    ctx = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    handle = prefer(lm, banned) if banned else None
    try:
        resp, logps = policy.sample(ctx, 6, generator=torch.Generator().manual_seed(0))
        stats = policy.forward_stats(torch.cat([ctx, resp], 1), ctx.shape[1])
        torch.testing.assert_close(stats.logprobs, logps, atol=2e-4, rtol=2e-4)
        assert torch.isfinite(stats.entropy).all()
        assert not set(resp.flatten().tolist()) & banned
        generated = sample_responses(lm, ctx.numpy(), pad, 6, 0.8, seed=0, vocab_size=real_vocab_size(tok))
        assert not set(generated.flatten().tolist()) & banned
    finally:
        if handle is not None:
            handle.remove()
    if banned:  # the masking is what kept them out: without it the boosted ids dominate
        handle = prefer(lm, banned)
        unmasked = lm(**padded_inputs(ctx, pad)).logits[:, -1].argmax(-1)
        handle.remove()
        assert set(unmasked.tolist()) <= banned

    # -- top-k freezing: only the top block, the final norm and the value head train; features are exact
    topk = PolicyWithValue(copy.deepcopy(lm), pad, vocab_size=real_vocab_size(tok))
    topk.set_trainable(1)
    base = topk.lm.base_model
    expected = {id(p) for p in blocks_of(base)[-1].parameters()}
    expected |= {id(p) for m in final_modules(base) for p in m.parameters()}
    expected |= {id(p) for p in topk.value_head.parameters()}
    assert {id(p) for p in topk.parameters() if p.requires_grad} == expected
    assert final_modules(base), f"{family}: no final norm found"
    full = torch.cat([ctx, resp], 1)
    with torch.no_grad():
        a = topk.forward_stats(full, ctx.shape[1], features=topk.features(full)).logprobs
        topk.top_blocks = None
        b = topk.forward_stats(full, ctx.shape[1]).logprobs
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

    # -- LoRA on the family's projections: only adapters (+ value head) train; disabled == the base model
    lora = PolicyWithValue(copy.deepcopy(lm), pad, vocab_size=real_vocab_size(tok))
    lora.enable_lora(r=4, alpha=8, target_modules=lora_target_modules(lora.lm))
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("value_head") for n in trainable)
    with torch.no_grad():
        torch.testing.assert_close(lora.reference().forward_stats(full, ctx.shape[1]).logprobs, b)

    # -- reward model: finite scores, one best-of-4 step changes the head and lowers the loss
    from rewards.losses import best_of_n_loss
    from rewards.model import RewardModel

    rm = RewardModel(copy.deepcopy(lm).train(), pad)
    opt = torch.optim.Adam([p for p in rm.parameters() if p.requires_grad], lr=1e-3)
    four = torch.cat([ctx, resp], 1)
    losses = []
    for _ in range(2):
        scores = rm(four)
        assert scores.shape == (4,) and torch.isfinite(scores).all()
        loss = best_of_n_loss(scores.view(1, 4), torch.tensor([2]))
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[1] < losses[0]

    # -- one PPO step through the env and the built-in agent
    from textenv.vector import TextVectorEnv

    ppo_policy = PolicyWithValue(copy.deepcopy(lm), pad, vocab_size=real_vocab_size(tok))
    envs = TextVectorEnv(
        "BookSentiment-v0",
        num_envs=4,
        tokenizer=tok,
        reward_fn=lambda q, r: (r % 7).mean(axis=1).astype(float),
        prompts=PROMPTS,
        response_length=4,
        truncate_token=None,
        truncate_after=0,
        query_length=6,
        min_query_length=1,
    )
    assert envs.single_action_space.n == real_vocab_size(tok)
    legal = envs.action_masks()
    assert legal.shape == (4, real_vocab_size(tok))
    assert legal.sum() == 4 * (real_vocab_size(tok) - (pad < real_vocab_size(tok)))
    assert pad >= real_vocab_size(tok) or not legal[:, pad].any()
    entry = ALGOS["ppo"]
    config = entry.config(
        batch_size=4,
        total_episodes=4000,
        epochs=1,
        minibatches=1,
        optim=OptimConfig(),
        kl=KLConfig(),
        halt=HaltConfig(),
    )
    agent = entry.agent(ppo_policy, envs, config)
    metrics = agent.step()
    assert metrics["objective/kl"] == pytest.approx(0.0, abs=1e-4)
    assert all(np.isfinite(v) for v in metrics.values() if isinstance(v, float))

    # -- the SB3 policy: forward and evaluate_actions over the real vocabulary, pad never acted
    from agents.sb3 import TransformerPolicy

    sb3 = TransformerPolicy(
        envs.single_observation_space,
        envs.single_action_space,
        lambda _: 1e-3,
        model=copy.deepcopy(lm),
        pad_id=pad,
    )
    obs, _ = envs.reset(seed=0)
    handle = prefer(sb3.lm, banned) if banned else None
    try:
        actions, values, logp = sb3(torch.as_tensor(obs))
    finally:
        if handle is not None:
            handle.remove()
    assert actions.shape == (4,) and values.shape == (4, 1) and torch.isfinite(logp).all()
    assert not set(actions.tolist()) & banned
    v, lp, ent = sb3.evaluate_actions(torch.as_tensor(obs), actions)
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all()


@pytest.mark.parametrize("family", ["gemma2", "gemma3", "qwen2", "mistral"])
def test_top_blocks_of_a_deep_model_with_mixed_layer_types_equal_the_full_forward(family):
    """Six layers, a sliding window of 4 and (Gemma) alternating sliding/full layers: the top block keeps
    its own layer type (and Gemma-3 its own rotary base) when it runs alone from cached features."""
    cfg_name, lm_name, kwargs = FAMILIES[family]
    extra = {"sliding_window": 4, "num_hidden_layers": 6}
    if family == "qwen2":
        extra.update(use_sliding_window=True, max_window_layers=2)
    tok = tiny_tokenizer(None)
    cfg = getattr(hf, cfg_name)(**{**kwargs, **extra}, vocab_size=len(tok))
    torch.manual_seed(0)
    lm = getattr(hf, lm_name)(cfg).eval()
    ensure_pad_token(tok)
    assert len(set(getattr(lm.config, "layer_types", None) or ["x"])) > 1 or family == "mistral"
    policy = PolicyWithValue(lm, tok.pad_token_id, vocab_size=real_vocab_size(tok))
    full = torch.randint(0, real_vocab_size(tok), (2, 20), generator=torch.Generator().manual_seed(0))
    for k in (1, 2, 5):
        policy.set_trainable(k)
        with torch.no_grad():
            a = policy.forward_stats(full, 10, features=policy.features(full)).logprobs
            policy.top_blocks = None
            b = policy.forward_stats(full, 10).logprobs
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_an_architecture_without_positions_gets_a_clear_error():
    cfg = hf.MambaConfig(hidden_size=32, num_hidden_layers=2, vocab_size=300, state_size=4)
    lm = hf.MambaForCausalLM(cfg)
    with pytest.raises(
        TypeError,
        match=r"MambaForCausalLM cannot be used: its forward takes no position_ids \(padding invariance",
    ):
        check_causal_lm(lm)


def test_the_matrix_covers_the_families_users_train():
    assert {
        "gpt2",
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma2",
        "gemma3",
        "gpt_neox",
        "phi3",
        "opt",
    } <= set(FAMILIES)
    assert len(CELLS) == len(FAMILIES) * len(SITUATIONS)
