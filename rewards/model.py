"""The reward model: an LM trunk, a scalar head at the last real token, and a gain/bias normaliser.

PAPER.md §1.3 and must-have 6: ``r = gain * head(h_last) + bias`` where ``h_last`` is the trunk's final
hidden state (after the final norm) at the last non-pad token of ``query ⊕ response``; the head weight is
drawn from N(0, 1/sqrt(d + 1)) with bias 0; gain starts at 1 and bias at 0. The forward pass is
padding-invariant (pads masked, position ids skip them), so pads anywhere change nothing.

Trainable subset (a CPU-friendly option, not in the paper): ``top_blocks=k`` freezes the embeddings and
all but the top ``k`` transformer blocks. The frozen part is then a fixed feature extractor, so
:meth:`RewardModel.features` computes its output once per sequence and :meth:`RewardModel.score_features`
runs only the top ``k`` blocks (``k = 0``: the head on cached final features). ``top_blocks=None`` trains
the whole model, as the paper does.

Feature layer (a named option, not in the paper): ``layer=k`` cuts the trunk to its first ``k`` blocks (the
final norm kept), so the head reads block ``k``'s output instead of the last block's and scoring runs ``k``
blocks instead of all. On the mock sentiment labels a head on SmolLM2-135M's block 2 (of 30) learns from
fewer labels than one on its final layer (BENCHMARKS.md, ``make demo``): the labeler judges words, which the
early blocks still hold. ``layer=None`` (the default) is the paper's whole trunk.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from textenv.models.tokenization import pad_sequences, padded_inputs
from textenv.models.trunk import (
    Features,
    freeze_lower,
    keep_lower_blocks,
    lower_features,
    n_blocks,
    top_forward,
)

__all__ = ["Features", "RewardModel", "last_token_index"]


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-pad position of each row, (B,)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(dim=1)


class RewardModel(nn.Module):
    """LM trunk + scalar head + gain/bias (see the module docstring)."""

    def __init__(
        self,
        lm: nn.Module,
        pad_id: int,
        *,
        base_spec: str | None = None,
        seed: int = 0,
        pool: str = "last",
        layer: int | None = None,
    ) -> None:
        super().__init__()
        if pool not in ("last", "mean"):
            raise ValueError(f"pool={pool!r}; use 'last' (the paper's) or 'mean' (over the response tokens).")
        self.pool = pool
        if layer is not None:  # the head reads block `layer`'s output: the blocks above it are dropped
            keep_lower_blocks(lm.base_model, layer)
        self.layer = layer
        self.lm = lm
        self.pad_id = int(pad_id)
        self.base_spec = base_spec
        self.seed = int(seed)
        d = lm.config.hidden_size
        self.head = nn.utils.skip_init(nn.Linear, d, 1)  # initialised below without the global RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(d + 1))  # §1.3: std 1/sqrt(d+1)
        nn.init.zeros_(self.head.bias)
        self.gain = nn.Parameter(torch.tensor(1.0))
        self.bias = nn.Parameter(torch.tensor(0.0))
        self.top_blocks: int | None = None

    # -------------------------------------------------------------------------------- building
    @classmethod
    def from_spec(
        cls,
        spec: str = "smollm2-135m",
        *,
        seed: int = 0,
        device: str = "cpu",
        dtype=None,
        pool: str = "last",
        layer: int | None = None,
    ) -> RewardModel:
        """A fresh reward model on the LM ``spec`` (any :func:`textenv.models.load_causal_lm` spec);
        ``pool`` and ``layer``: see the module docstring."""
        from textenv.models import load_causal_lm

        lm, tok = load_causal_lm(spec, seed=seed, device=device, dtype=dtype)
        rm = cls(lm, tok.pad_token_id, base_spec=str(spec), seed=seed, pool=pool, layer=layer)
        rm.tokenizer = tok
        return rm.to(device)

    @property
    def base(self) -> nn.Module:
        return self.lm.base_model

    @property
    def n_blocks(self) -> int:
        return n_blocks(self.base)

    def set_trainable(self, top_blocks: int | None) -> None:
        """Train everything (None) or only the top ``top_blocks`` blocks, the final norm and the head."""
        self.top_blocks = top_blocks
        freeze_lower(self.lm, top_blocks)

    # --------------------------------------------------------------------------------- scoring
    def raw_scores(self, input_ids: torch.Tensor, response_start: int | None = None) -> torch.Tensor:
        """Head output before gain/bias for (B, T) ids with pads anywhere; (B,).

        ``response_start``: the column where responses begin in the ``[query][response]`` layout of
        :meth:`sequences` (needed by ``pool="mean"``, ignored by the paper's last-token head).
        """
        inputs = padded_inputs(input_ids, self.pad_id)
        hidden = self.base(**inputs).last_hidden_state  # (B, T, d), after the final norm
        return self.head(
            self._pooled(hidden, self._pool_mask(inputs["attention_mask"], response_start))
        ).squeeze(-1)

    def _pool_mask(self, attention_mask: torch.Tensor, response_start: int | None) -> torch.Tensor:
        """The positions the head pools: every real token for ``last``; real response tokens for ``mean``."""
        if self.pool == "last":
            return attention_mask
        if response_start is None:
            raise ValueError(
                "pool='mean' averages the response tokens, so it needs response_start (the query width of "
                "the [query][response] layout); build ids with sequences_with_start() or score()."
            )
        mask = attention_mask.clone()
        mask[:, :response_start] = 0
        return mask

    def _pooled(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, d) from (B, T, d): the last real token (the paper's) or, with ``pool="mean"``, the mean over
        the response tokens (a named option, not in the paper). The query is left out of the mean: it is
        the same for every sample of a question, so it carries no preference signal, and averaging it in
        would add a prompt-dependent offset that the policy cannot change."""
        if self.pool == "mean":
            m = mask.to(hidden.dtype).unsqueeze(-1)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        last = last_token_index(mask)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def forward(self, input_ids: torch.Tensor, response_start: int | None = None) -> torch.Tensor:
        """Normalised scores ``gain * head(pooled) + bias``, (B,)."""
        return self.gain * self.raw_scores(input_ids, response_start) + self.bias

    def sequences_with_start(
        self, queries: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, int]:
        """``[left-padded query][response][right pads]`` as one (B, T) id tensor (pads are invisible),
        and the column where the responses start."""
        q = pad_sequences([list(map(int, x)) for x in queries], self.pad_id, side="left")
        r = pad_sequences([list(map(int, x)) for x in responses], self.pad_id, side="right")
        ids = torch.as_tensor(np.concatenate([q, r], axis=1), device=self.head.weight.device)
        return ids, q.shape[1]

    def sequences(self, queries: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> torch.Tensor:
        """The ids of :meth:`sequences_with_start` alone."""
        return self.sequences_with_start(queries, responses)[0]

    @torch.no_grad()
    def score(self, queries, responses, batch_size: int = 32) -> np.ndarray:
        """Scores of (query, response) id pairs (pads in either are ignored), as a float64 array."""
        out = []
        for i in range(0, len(queries), batch_size):
            ids, start = self.sequences_with_start(queries[i : i + batch_size], responses[i : i + batch_size])
            out.append(self(ids, start).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def as_reward_fn(self, batch_size: int = 32):
        """The callable environments take: ``(queries, responses) -> scores`` on padded id arrays."""

        def reward_fn(queries: np.ndarray, responses: np.ndarray) -> np.ndarray:
            q = [[int(t) for t in row if t != self.pad_id] for row in np.asarray(queries)]
            r = [[int(t) for t in row if t != self.pad_id] for row in np.asarray(responses)]
            return self.score(q, r, batch_size=batch_size)

        reward_fn.__name__ = f"RewardModel({self.base_spec})"
        return reward_fn

    # ------------------------------------------------------------------------- cached features
    @torch.no_grad()
    def features(self, input_ids: torch.Tensor, response_start: int | None = None) -> Features:
        """Output of the frozen lower part (needs :meth:`set_trainable` with an int).

        For ``k >= 1`` the forward stops at the input of the first trainable block (a pre-hook captures
        it), so the top blocks are not run twice.
        """
        if self.top_blocks is None:
            raise RuntimeError(
                "features() needs a frozen lower part: call set_trainable(k) with an int k first."
            )
        inputs = padded_inputs(input_ids, self.pad_id)
        pool_mask = self._pool_mask(inputs["attention_mask"], response_start)
        hidden = lower_features(self.base, inputs, self.top_blocks)
        if self.top_blocks == 0:
            hidden = self._pooled(hidden, pool_mask)
        return Features(hidden, inputs["attention_mask"], inputs["position_ids"], pool_mask)

    def score_features(self, feats: Features) -> torch.Tensor:
        """Normalised scores from cached features, running only the trainable top blocks; (B,)."""
        if self.pool == "mean" and getattr(feats, "pool_mask", None) is None:
            raise ValueError(
                "these features carry no pool mask (cached by an older textenv, or built without "
                "response_start); recompute them with features(ids, response_start) / cache_features()."
            )
        if self.top_blocks == 0:
            return self.gain * self.head(feats.hidden).squeeze(-1) + self.bias
        hidden = top_forward(self.base, feats, self.top_blocks)
        mask = feats.attention_mask if self.pool == "last" else feats.pool_mask
        return self.gain * self.head(self._pooled(hidden, mask)).squeeze(-1) + self.bias

    # ----------------------------------------------------------------------------- persistence
    def save(self, folder: str | Path) -> None:
        """``reward_model.json`` + ``weights.safetensors`` (head, gain, bias and every trainable trunk
        tensor; the frozen rest is re-loaded from ``base_spec``)."""
        from safetensors.torch import save_file

        if self.base_spec is None:
            raise ValueError(
                "save() needs base_spec (the trunk's load_causal_lm spec); build with from_spec()."
            )
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        trunk_trained = {n: p for n, p in self.lm.named_parameters() if p.requires_grad}
        tensors = {
            "head.weight": self.head.weight,
            "head.bias": self.head.bias,
            "gain": self.gain.reshape(1),
            "bias": self.bias.reshape(1),
            **{f"lm.{n}": p for n, p in trunk_trained.items()},
        }
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
            str(folder / "weights.safetensors"),
        )
        meta = {
            "base_spec": self.base_spec,
            "seed": self.seed,
            "pad_id": self.pad_id,
            "top_blocks": self.top_blocks,
            "pool": self.pool,
            "layer": self.layer,
            "format": 2,  # 2: pool="mean" averages the response tokens only (format 1: every token)
        }
        (folder / "reward_model.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: str | Path, *, device: str = "cpu") -> RewardModel:
        from safetensors.torch import load_file

        folder = Path(folder)
        meta_path = folder / "reward_model.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{folder} is not a saved reward model (no reward_model.json).")
        meta = json.loads(meta_path.read_text())
        if meta.get("pool") == "mean" and meta.get("format", 1) < 2:
            raise ValueError(
                f"{folder} was saved by an older textenv whose pool='mean' averaged the query too; "
                "retrain it (textenv train-reward) with this version."
            )
        rm = cls.from_spec(
            meta["base_spec"],
            seed=meta.get("seed", 0),
            device=device,
            pool=meta.get("pool", "last"),
            layer=meta.get("layer"),
        )
        tensors = load_file(str(folder / "weights.safetensors"))
        with torch.no_grad():
            rm.head.weight.copy_(tensors.pop("head.weight"))
            rm.head.bias.copy_(tensors.pop("head.bias"))
            rm.gain.copy_(tensors.pop("gain")[0])
            rm.bias.copy_(tensors.pop("bias")[0])
            params = dict(rm.lm.named_parameters())
            for name, value in tensors.items():
                params[name.removeprefix("lm.")].copy_(value)
        rm.set_trainable(meta["top_blocks"])
        rm.eval()
        return rm
