"""``PolicyWithValue``: a causal LM with a zero-initialised value head on its own trunk (PAPER.md §1.8).

* ``sample`` draws fixed-length responses by ancestral sampling with a KV cache: temperature T divides
  the logits, no top-k/top-p, EOS does not stop sampling, and only the tokenizer's real vocabulary can be
  drawn: the pad id (even one inside the vocabulary, like Gemma's ``<pad>`` = 0) and the padding rows of
  an output layer wider than the tokenizer (Qwen2.5) are masked out of sampling, log-probs and entropies
  alike. It returns the sampling-time log-probs too (must-haves 2, 3); ``sample_stats`` the values and
  entropies as well, recorded while sampling as the reference code's ``respond`` does (§1.8).
* ``forward_stats`` recomputes tempered log-probs, values and entropies for query ⊕ response in one
  padding-invariant pass. The value for response token t is read at position ``context_len - 1 + t``,
  the state before y_t is emitted, aligned with the logits that score y_t (must-have 15).
* ``reference()`` is a frozen copy: the paper's rho (must-have 1).

What trains (``set_trainable`` / ``enable_lora``):

* the whole model (the paper's choice, the default);
* only the top ``k`` blocks + final norm + value head (``set_trainable(k)``, a CPU-friendly option): the
  frozen lower blocks and embeddings are *shared* with the reference (no copy), and their output is
  computed once per rollout (:meth:`PolicyWithValue.features`) and reused by the policy, the reference
  and every PPO epoch;
* LoRA adapters through ``peft`` (``enable_lora``, the ``lora`` extra): the reference is the same module
  with its adapters disabled, so no second copy of the weights exists.

Value function: a zero-initialised head on the policy's own trunk (the paper's), or, as an option, a
separate value network initialised from a reward model (``value_model=``; the head starts from the reward
model's head, gain and bias).
"""

from __future__ import annotations

import contextlib
import copy
from typing import NamedTuple

import torch
import torch.utils.checkpoint
from torch import nn

from textenv.models.tokenization import banned_token_mask, padded_inputs, real_vocab_size
from textenv.models.trunk import Features, freeze_lower, lower_features, top_forward


def _last(out, hidden: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The last position's logits (B, V) of a causal LM's output and, when ``hidden``, its final hidden
    state (B, d): the input of the output layer, which Hugging Face returns as the last of
    ``hidden_states`` (the final norm applied, as ``last_hidden_state``)."""
    return out.logits[:, -1], out.hidden_states[-1][:, -1] if hidden else None


def _decode_step(lm, token, mask, position_ids, cache, cache_position, hidden=False):
    """One static-shape decode step of the causal LM ``lm``: the next logits (B, V) and, when ``hidden``,
    the final hidden state (B, d) (else None)."""
    out = lm(
        input_ids=token,
        attention_mask=mask,
        position_ids=position_ids,
        cache=cache,
        cache_position=cache_position,
        use_cache=True,
        output_hidden_states=hidden,
    )
    return _last(out, hidden)


# compiled on first use; a plain module-level function, so it holds no policy alive (torch.compile guards
# on the LM it is called with and compiles once per model)
_COMPILED_DECODE: list = []


def _compiled_decode_step():
    if not _COMPILED_DECODE:
        _COMPILED_DECODE.append(torch.compile(_decode_step, dynamic=False))
    return _COMPILED_DECODE[0]


# run.precision -> the autocast dtype (None: plain float32)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Stats(NamedTuple):
    logprobs: torch.Tensor  # (B, Lr)
    values: torch.Tensor  # (B, Lr)
    entropy: torch.Tensor  # (B, Lr)


class PolicyWithValue(nn.Module):
    """A Hugging Face causal LM + a scalar value head on the final hidden state (zero init)."""

    def __init__(
        self,
        lm: nn.Module,
        pad_id: int,
        temperature: float = 1.0,
        value_model: nn.Module | None = None,
        vocab_size: int | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.lm = lm
        self.pad_id = int(pad_id)
        rows = int(lm.get_output_embeddings().weight.shape[0])
        # never sample (or score) the pad or an output row past the tokenizer (None: nothing to mask)
        banned = banned_token_mask(rows, rows if vocab_size is None else int(vocab_size), self.pad_id)
        self.register_buffer("banned", banned, persistent=False)
        self.temperature = float(temperature)
        self.top_blocks: int | None = None
        self.lora = False
        self.value_model = value_model
        if value_model is None:
            self.value_head = nn.utils.skip_init(nn.Linear, lm.config.hidden_size, 1)  # no global-RNG draw
            nn.init.zeros_(self.value_head.weight)  # V == 0 at the start (reference code: fc_layer(scale=0))
            nn.init.zeros_(self.value_head.bias)
        else:  # a separate value network from a reward model: its trunk, head, gain and bias
            if not all(hasattr(value_model, a) for a in ("lm", "head", "gain", "bias")):
                raise TypeError("value_model must be a rewards.model.RewardModel (lm, head, gain, bias).")
            value_model.set_trainable(None)
            # the value reads the trunk and the head, never the LM's output layer: an untied one stays
            # frozen (no optimiser state; DDP would wait forever for its gradient)
            out, inp = value_model.lm.get_output_embeddings(), value_model.lm.get_input_embeddings()
            if out is not None and out.weight is not inp.weight:
                out.weight.requires_grad_(False)
            self.value_head = None

    # ---------------------------------------------------------------------------- what trains
    @property
    def hf(self) -> nn.Module:
        """The Hugging Face causal LM (under the peft wrapper when LoRA is on)."""
        return self.lm.get_base_model() if self.lora else self.lm

    def set_trainable(self, top_blocks: int | None) -> None:
        """Train the whole LM (None) or only its top ``top_blocks`` blocks and final norm (the value
        head always trains; the output layer and embeddings freeze with an int)."""
        if self.lora:
            raise ValueError("top_blocks and LoRA exclude each other; choose one way to train.")
        if top_blocks is not None and top_blocks < 1:
            raise ValueError(f"top_blocks={top_blocks} must be >= 1 (or None for the whole model).")
        freeze_lower(self.lm, top_blocks)
        self.top_blocks = top_blocks

    def enable_lora(
        self, r: int = 16, alpha: int = 32, dropout: float = 0.0, target_modules: list[str] | None = None
    ) -> None:
        """Wrap the LM with peft LoRA adapters (``pip install 'textenv[lora]'``); only they and the value
        head train. ``target_modules=None`` picks peft's default for the architecture."""
        if self.top_blocks is not None:
            raise ValueError("top_blocks and LoRA exclude each other; choose one way to train.")
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError("LoRA needs peft: pip install 'textenv[lora]' (or pip install peft).") from exc
        gpt2 = getattr(self.lm.config, "model_type", "") == "gpt2"
        if target_modules is None and gpt2:
            target_modules = ["c_attn", "c_proj", "c_fc"]
        config = LoraConfig(
            r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, fan_in_fan_out=gpt2
        )
        self.lm = get_peft_model(self.lm, config)
        self.lora = True

    @classmethod
    def from_spec(
        cls,
        spec: str,
        temperature: float = 1.0,
        *,
        seed: int = 0,
        device: str = "cpu",
        dtype=None,
        value_model: nn.Module | None = None,
    ):
        from textenv.models import load_causal_lm

        lm, tok = load_causal_lm(spec, seed=seed, device=device, dtype=dtype)
        policy = cls(
            lm, tok.pad_token_id, temperature, value_model=value_model, vocab_size=real_vocab_size(tok)
        ).to(device)
        policy.tokenizer = tok
        return policy

    @property
    def vocab_size(self) -> int:
        """The output layer's rows (the real vocabulary is smaller when ``banned`` masks rows)."""
        return int(self.lm.get_output_embeddings().weight.shape[0])

    def mask_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (..., V) in float32 with the banned rows at -1e9: their probability is exactly 0 and
        ``p * log p`` stays 0 (no -inf, so entropies and KLs stay finite)."""
        logits = logits.float()
        return logits if self.banned is None else logits.masked_fill(self.banned, -1e9)

    def reference(self) -> PolicyWithValue | AdapterDisabledReference:
        """The frozen reference model rho: same weights now, no gradients, eval mode.

        Whole-model training: a deep copy. Top-k training: a copy of the trainable top only; the frozen
        lower blocks and embeddings are the same tensors as the policy's. LoRA: the policy itself with
        its adapters disabled.
        """
        if self.lora:
            return AdapterDisabledReference(self)
        shared = {id(p): p for p in self.parameters() if not p.requires_grad}
        ref = copy.deepcopy(self, memo=dict(shared))
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref.eval()

    # ------------------------------------------------------------------------------- forward
    def _hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        # LoRA layers sit inside the HF modules, so the plain trunk call applies them (or not, under
        # peft's disable_adapter()).
        return self.hf.base_model(**padded_inputs(input_ids, self.pad_id)).last_hidden_state  # (B, T, d)

    @torch.no_grad()
    def features(self, query_responses: torch.Tensor) -> Features | None:
        """The frozen lower blocks' output for ``query_responses`` (None unless top-k training is on)."""
        if self.top_blocks is None:
            return None
        inputs = padded_inputs(query_responses, self.pad_id)
        with self.autocast():
            hidden = lower_features(self.hf.base_model, inputs, self.top_blocks)
        return Features(hidden, inputs["attention_mask"], inputs["position_ids"])

    def _values(self, query_responses: torch.Tensor, hidden: torch.Tensor, context_length: int):
        if self.value_model is None:
            return self.value_head(hidden[:, context_length - 1 : -1]).squeeze(-1)
        vm = self.value_model
        v_hidden = vm.lm.base_model(**padded_inputs(query_responses, self.pad_id)).last_hidden_state
        return (vm.gain * vm.head(v_hidden[:, context_length - 1 : -1]).squeeze(-1) + vm.bias).float()

    # ----------------------------------------------------------------------------- precision
    def set_precision(self, precision: str) -> None:
        """``"fp32"`` (default), ``"bf16"`` or ``"fp16"``: the model's forward passes (sampling, the
        policy and reference passes, backward) run under autocast in that dtype, while the weights, the
        optimiser state, log-softmax, KL, values and losses stay float32."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}; choose one of {sorted(PRECISIONS)}.")
        self.precision = precision

    def autocast(self):
        """The autocast context of ``self.precision`` on the policy's device (a no-op for fp32)."""
        dtype = PRECISIONS[getattr(self, "precision", "fp32")]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.value_device().type, dtype=dtype)

    def value_device(self) -> torch.device:
        return self.lm.get_output_embeddings().weight.device

    def forward_stats(
        self, query_responses: torch.Tensor, context_length: int, features: Features | None = None
    ) -> Stats:
        """Tempered log-probs, values and entropies of the response tokens of ``query_responses``.

        Args:
            query_responses: (B, Lc + Lr) ids: the (left-padded) context then the response.
            context_length: Lc.
            features: the frozen lower blocks' output for these rows (top-k training): only the top
                blocks run. Computed here when missing.
        """
        if query_responses.dim() != 2 or not 0 < context_length < query_responses.shape[1]:
            raise ValueError(
                f"query_responses must be (B, Lc + Lr) with 0 < Lc={context_length} < {query_responses.shape[-1]}."
            )
        with self.autocast():
            return self._forward_stats(query_responses, context_length, features)

    def _forward_stats(
        self, query_responses: torch.Tensor, context_length: int, features: Features | None
    ) -> Stats:
        if self.top_blocks is not None:
            feats = features if features is not None else self.features(query_responses)
            hidden = top_forward(self.hf.base_model, feats, self.top_blocks)
        else:
            hidden = self._hidden(query_responses)
        # position Lc - 1 + t predicts response token t (and holds the value before it is emitted); the
        # output layer runs on those Lr positions only, not on the context
        responses = query_responses[:, context_length:]
        logprobs, entropy = self._token_stats(hidden[:, context_length - 1 : -1], responses)
        values = self._values(query_responses, hidden, context_length)
        return Stats(logprobs=logprobs, values=values.float(), entropy=entropy)

    # float32 logits elements above which the output layer runs in row chunks under activation
    # checkpointing (2**27 = 512 MiB): a 262k vocabulary (Gemma) never holds full logits for every position
    logits_chunk_elements: int = 2**27

    def _token_stats(self, hidden: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tempered log-probs of ``tokens`` (B, Lr) (with gradient) and entropies (detached: only logged,
        no entropy bonus, §1.8) from the hidden states that predict them (B, Lr, d)."""
        head = self.hf.get_output_embeddings()

        def stats(h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.mask_logits(head(h))  # float32
            # one tempered log-softmax serves both (what logprobs_from_logits and entropy_from_logits
            # each compute): two fewer passes over the (rows, Lr, V) logits, the same numbers bit for bit
            logp = torch.log_softmax(logits / self.temperature, dim=-1)
            logprobs = torch.gather(logp, -1, y.unsqueeze(-1)).squeeze(-1)
            with torch.no_grad():
                entropy = -(logp.exp() * logp).sum(-1)
            return logprobs, entropy

        rows, vocab = hidden.shape[0], head.weight.shape[0]
        per_row = hidden.shape[1] * vocab
        if rows * per_row <= self.logits_chunk_elements:
            return stats(hidden, tokens)
        step = max(1, self.logits_chunk_elements // per_row)
        parts = []
        for i in range(0, rows, step):
            h, y = hidden[i : i + step], tokens[i : i + step]
            if torch.is_grad_enabled() and h.requires_grad:  # recompute the chunk's logits in backward
                parts.append(torch.utils.checkpoint.checkpoint(stats, h, y, use_reentrant=False))
            else:
                parts.append(stats(h, y))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    @torch.no_grad()
    def sample(
        self, context: torch.Tensor, length: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``length`` tokens per row of the left-padded ``context`` (B, Lc); returns (responses, logprobs).

        A KV cache makes each step one token per row; the attention mask grows with the response (a
        batch without padding needs none and gets none) and the position ids continue from each row's
        last real token. ``self.sampler = "static"`` (or ``compile_sampler``) preallocates the cache
        and the mask for Lc + length positions, so every decode step has the same shapes and
        ``torch.compile`` captures it once; neither loop synchronises the host with the device per token.
        """
        responses, stats = self._sample(context, length, generator, values=False)
        return responses, stats.logprobs

    @torch.no_grad()
    def sample_stats(
        self, context: torch.Tensor, length: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, Stats]:
        """As :meth:`sample`, and the rollout's :class:`Stats` recorded while sampling, as the reference
        code's ``respond`` does (PAPER.md §1.8, "old log-probs and values are recorded during sampling"):
        the value of response token t from the final hidden state of the step that drew it (position
        ``Lc - 1 + t``, as :meth:`forward_stats` reads it) and the entropy of the distribution it was
        drawn from. The same numbers as :meth:`forward_stats` on ``context ⊕ responses`` up to float
        rounding (a KV-cached pass sums in another order), without that second pass over the model.
        Only for the value head on the policy's own trunk: a separate value network has to run on
        the whole sequence (``ValueError``)."""
        if self.value_model is not None:
            raise ValueError(
                "sample_stats reads the values from the policy's own trunk; a policy with a separate "
                "value_model gets them from forward_stats."
            )
        return self._sample(context, length, generator, values=True)

    def _sample(self, context, length, generator, values: bool) -> tuple[torch.Tensor, Stats]:
        with self.autocast():
            if self.sampler == "static" or self.compile_sampler:
                return self._sample_static(context, length, generator, values)
            return self._sample_dynamic(context, length, generator, values)

    sampler: str = "dynamic"  # or "static" (fixed shapes; what compile_sampler compiles)
    compile_sampler: bool = False

    def _draw(self, next_logits: torch.Tensor, generator, entropy: bool):
        """One token per row from ``next_logits`` (B, V): (token, its log-prob, the entropy or None)."""
        logp = torch.log_softmax(self.mask_logits(next_logits) / self.temperature, dim=-1)  # (B, V)
        probs = logp.exp()
        token = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
        # as _token_stats computes it (banned rows have probability exactly 0, so no 0 * -inf)
        ent = -(probs * logp).sum(-1, keepdim=True) if entropy else None
        return token, logp.gather(-1, token), ent

    def _draw_all(self, first, length, generator, advance) -> tuple[torch.Tensor, Stats]:
        """``length`` draws: each from the current logits, then ``advance(token, t)`` runs the decode step
        that gives the next ``(logits, final hidden state or None)`` (not after the last draw); ``first``
        is the prefill's pair. With hidden states, the values and entropies are filled in too."""
        (next_logits, hidden), with_values = first, first[1] is not None
        tokens, logps, ents, hiddens = [], [], [], []
        for t in range(length):
            token, logp, ent = self._draw(next_logits, generator, with_values)
            tokens.append(token)
            logps.append(logp)
            if with_values:
                ents.append(ent)
                hiddens.append(hidden)
            if t < length - 1:
                next_logits, hidden = advance(token, t)
        responses, logprobs = torch.cat(tokens, dim=1), torch.cat(logps, dim=1)
        if not with_values:
            return responses, Stats(logprobs, None, None)
        # the value head once over the (B, Lr, d) states, as forward_stats applies it
        values = self.value_head(torch.stack(hiddens, dim=1)).squeeze(-1).float()
        return responses, Stats(logprobs, values, torch.cat(ents, dim=1))

    def _sample_dynamic(self, context, length, generator, values: bool):
        inputs = padded_inputs(context, self.pad_id)
        # one past each row's last real token
        pos = inputs["position_ids"][:, -1:] + inputs["attention_mask"][:, -1:]
        # no pad in the batch (one check per rollout): no mask at all, so the model builds none per step
        # (about a tenth of a decode step on CPU; the same tokens and log-probs)
        padded = not bool(inputs["attention_mask"].all())
        if not padded:
            del inputs["attention_mask"]
        # the prefill needs the last logits only; its final hidden state holds the first value
        out = self.lm(**inputs, use_cache=True, logits_to_keep=1, output_hidden_states=values)
        cache_key = "cache" if "cache" in out else "past_key_values"
        state = {"cache": out[cache_key], "mask": inputs.get("attention_mask"), "pos": pos}

        def advance(token, t):
            if padded:
                state["mask"] = torch.cat([state["mask"], torch.ones_like(token)], dim=1)
            step = self.lm(
                input_ids=token,
                attention_mask=state["mask"],
                position_ids=state["pos"],
                use_cache=True,
                output_hidden_states=values,
                **{cache_key: state["cache"]},
            )
            state["cache"], state["pos"] = step[cache_key], state["pos"] + 1
            return _last(step, values)

        return self._draw_all(_last(out, values), length, generator, advance)

    def _sample_static(self, context, length, generator, values: bool):
        from transformers import StaticCache

        batch, lc = context.shape
        inputs = padded_inputs(context, self.pad_id)
        # the whole mask up front: the response positions are real tokens, and the causal mask hides
        # those not written yet, so every decode step sees the same (B, Lc + length) mask
        mask = torch.cat([inputs["attention_mask"], inputs["attention_mask"].new_ones(batch, length)], 1)
        cache = StaticCache(config=self.hf.config, max_cache_len=lc + length)
        cache_positions = torch.arange(lc + length, device=context.device)
        out = self.lm(
            **inputs,
            cache=cache,
            cache_position=cache_positions[:lc],
            use_cache=True,
            logits_to_keep=1,
            output_hidden_states=values,
        )
        first_pos = inputs["position_ids"][:, -1:] + inputs["attention_mask"][:, -1:]
        step = _compiled_decode_step() if self.compile_sampler else _decode_step

        def advance(token, t):
            return step(
                self.lm, token, mask, first_pos + t, cache, cache_positions[lc + t : lc + t + 1], values
            )

        return self._draw_all(_last(out, values), length, generator, advance)


class AdapterDisabledReference:
    """The reference model of a LoRA policy: the same module with its adapters switched off."""

    def __init__(self, policy: PolicyWithValue) -> None:
        self.policy = policy

    @torch.no_grad()
    def forward_stats(
        self, query_responses: torch.Tensor, context_length: int, features: Features | None = None
    ) -> Stats:
        with self.policy.lm.disable_adapter():
            return self.policy.forward_stats(query_responses, context_length)

    def eval(self) -> AdapterDisabledReference:
        return self

    def parameters(self):
        return iter(())


class KLRecordingSampler:
    """``policy.sample`` that also records each sampled response's KL to ``reference``: the sum over its
    tokens of log pi - log rho (both tempered), the per-response KL of PAPER.md §2.2 that PPO's
    ``objective/kl`` estimates. Call it as a sample function (it returns the responses only); ``kls``
    holds one value per response sampled so far."""

    def __init__(self, policy: PolicyWithValue, reference: PolicyWithValue) -> None:
        self.policy, self.reference = policy, reference
        self._kls: list[torch.Tensor] = []

    @torch.no_grad()
    def __call__(
        self, context: torch.Tensor, length: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        responses, logprobs = self.policy.sample(context, length, generator=generator)
        query_responses = torch.cat([context, responses], 1)
        ref = self.reference.forward_stats(query_responses, context.shape[1]).logprobs
        self._kls.append((logprobs.float() - ref.float()).sum(-1).cpu())
        return responses

    @property
    def kls(self) -> torch.Tensor:
        return torch.cat(self._kls) if self._kls else torch.zeros(0)
