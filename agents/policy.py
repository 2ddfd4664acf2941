"""``PolicyWithValue``: a causal LM with a zero-initialised value head on its own trunk (PAPER.md §1.8).

* ``sample`` draws fixed-length responses by ancestral sampling with a KV cache: temperature T divides
  the logits, no top-k/top-p, EOS does not stop sampling, and only the model's own vocabulary can be
  drawn (the pad id lies outside it). It returns the sampling-time log-probs too (must-haves 2, 3).
* ``forward_stats`` recomputes tempered log-probs, values and entropies for query ⊕ response in one
  padding-invariant pass. The value for response token t is read at position ``context_len - 1 + t``,
  the state before y_t is emitted, aligned with the logits that score y_t (must-have 15).
* ``reference()`` is a frozen copy: the paper's rho (must-have 1).
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import nn

from agents.core import entropy_from_logits, logprobs_from_logits
from textenv.tokenization import padded_inputs


class Stats(NamedTuple):
    logprobs: torch.Tensor  # (B, Lr)
    values: torch.Tensor  # (B, Lr)
    entropy: torch.Tensor  # (B, Lr)


class PolicyWithValue(nn.Module):
    """A Hugging Face causal LM + a scalar value head on the final hidden state (zero init)."""

    def __init__(self, lm: nn.Module, pad_id: int, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.lm = lm
        self.pad_id = int(pad_id)
        self.temperature = float(temperature)
        self.value_head = nn.Linear(lm.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)  # V == 0 at the start (reference code: fc_layer(scale=0))
        nn.init.zeros_(self.value_head.bias)

    @classmethod
    def from_spec(
        cls, spec: str, temperature: float = 1.0, *, seed: int = 0, device: str = "cpu", dtype=None
    ):
        from textenv.models import load_causal_lm

        lm, tok = load_causal_lm(spec, seed=seed, device=device, dtype=dtype)
        policy = cls(lm, tok.pad_token_id, temperature).to(device)
        policy.tokenizer = tok
        return policy

    @property
    def vocab_size(self) -> int:
        return int(self.lm.get_output_embeddings().weight.shape[0])

    def reference(self) -> PolicyWithValue:
        """A frozen deep copy (the reference model rho): same weights, no gradients, eval mode."""
        ref = copy.deepcopy(self)
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref.eval()

    def _logits_and_hidden(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.lm.base_model(**padded_inputs(input_ids, self.pad_id)).last_hidden_state  # (B, T, d)
        logits = self.lm.get_output_embeddings()(hidden)  # (B, T, V)
        return logits, hidden

    def forward_stats(self, query_responses: torch.Tensor, context_length: int) -> Stats:
        """Tempered log-probs, values and entropies of the response tokens of ``query_responses``.

        Args:
            query_responses: (B, Lc + Lr) ids: the (left-padded) context then the response.
            context_length: Lc.
        """
        if query_responses.dim() != 2 or not 0 < context_length < query_responses.shape[1]:
            raise ValueError(
                f"query_responses must be (B, Lc + Lr) with 0 < Lc={context_length} < {query_responses.shape[-1]}."
            )
        logits, hidden = self._logits_and_hidden(query_responses)
        # position Lc - 1 + t predicts response token t (and holds the value before it is emitted)
        logits = logits[:, context_length - 1 : -1]
        responses = query_responses[:, context_length:]
        values = self.value_head(hidden[:, context_length - 1 : -1]).squeeze(-1)
        return Stats(
            logprobs=logprobs_from_logits(logits, responses, self.temperature),
            values=values,
            entropy=entropy_from_logits(logits, self.temperature),
        )

    @torch.no_grad()
    def sample(
        self, context: torch.Tensor, length: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``length`` tokens per row of the left-padded ``context`` (B, Lc); returns (responses, logprobs).

        A KV cache makes each step one token per row; the attention mask grows with the response and
        the position ids continue from each row's last real token.
        """
        inputs = padded_inputs(context, self.pad_id)
        mask, positions = inputs["attention_mask"], inputs["position_ids"]
        out = self.lm(**inputs, use_cache=True)
        cache_key = "cache" if "cache" in out else "past_key_values"
        cache = out[cache_key]
        next_logits = out.logits[:, -1]
        next_pos = positions[:, -1:] + mask[:, -1:]  # one past the last real token
        tokens, logps = [], []
        for t in range(length):
            logp = torch.log_softmax(next_logits.float() / self.temperature, dim=-1)  # (B, V)
            token = torch.multinomial(logp.exp(), 1, generator=generator)  # (B, 1)
            tokens.append(token)
            logps.append(logp.gather(-1, token))
            if t == length - 1:
                break
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            out = self.lm(
                input_ids=token,
                attention_mask=mask,
                position_ids=next_pos,
                use_cache=True,
                **{cache_key: cache},
            )
            cache = out[cache_key]
            next_logits = out.logits[:, -1]
            next_pos = next_pos + 1
        return torch.cat(tokens, dim=1), torch.cat(logps, dim=1)
