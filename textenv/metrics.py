"""Evaluation metrics of the paper (PAPER.md §3.3-3.5), on plain text: ROUGE, lead-3, novelty and copying.

* ROUGE-1/2/L F1 and their average R-AVG (``rouge-score`` with the Porter stemmer, offline), in percent
  as the paper's Table 4.
* lead-3: the first three sentences of the article (the paper's strongest baseline on CNN/DM).
* Sentence novelty: the share of summary sentences that do not appear verbatim in the source (paper
  Fig. 5; CNN/DM references 96.7 %, the RL model 2.5 %).
* Copying from the start: a summary "copies the start" when it begins with the source's opening words
  (the RL model does it 77.6 % of the time on CNN/DM); with preamble detection (TL;DR: the post opens
  with "hi", "hello", "hey", "ok", "okay" or "so"; CNN/DM: a colon within the first three words) the
  rate splits into inputs with and without a preamble: the paper's "preamble skipping".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "copies_start",
    "has_preamble",
    "lead3",
    "novel_sentence_share",
    "optimal_frontier",
    "rouge",
    "rouge_table",
    "sentences",
    "win_rate",
]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+")
TLDR_PREAMBLE = ("hi", "hello", "hey", "ok", "okay", "so")


def sentences(text: str) -> list[str]:
    """Split into sentences at ., ! or ? followed by whitespace (and at newlines); empty pieces dropped."""
    out = []
    for line in text.splitlines():
        out += [s.strip() for s in _SENTENCE_END.split(line.strip()) if s.strip()]
    return out


def _norm(sentence: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", sentence.lower()).split())


def lead3(article: str) -> str:
    """The first three sentences of ``article``."""
    return " ".join(sentences(article)[:3])


def rouge(reference: str, summary: str) -> dict[str, float]:
    """ROUGE-1/2/L F1 and R-AVG of one summary, in percent."""
    from textenv.scorers import _rouge_scorer

    s = _rouge_scorer().score(reference, summary)
    out = {k: 100.0 * s[k].fmeasure for k in ("rouge1", "rouge2", "rougeL")}
    out["ravg"] = float(np.mean(list(out.values())))
    return out


def rouge_table(references: Sequence[str], summaries: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE over a test set (the paper's Table 4 numbers), with the count."""
    if len(references) != len(summaries) or not references:
        raise ValueError(
            f"need as many summaries as references (got {len(summaries)} and {len(references)}), at least one."
        )
    rows = [rouge(r, s) for r, s in zip(references, summaries)]
    table = {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}
    table["n"] = len(rows)
    return table


def novel_sentence_share(source: str, summary: str) -> float | None:
    """Share of the summary's sentences that do not occur verbatim (case and punctuation aside) in the
    source; None for an empty summary."""
    summary_sentences = [_norm(s) for s in sentences(summary)]
    summary_sentences = [s for s in summary_sentences if s]
    if not summary_sentences:
        return None
    src = _norm(source)
    return float(np.mean([s not in src for s in summary_sentences]))


def has_preamble(source: str, family: str) -> bool:
    """The paper's uninformative-preamble rules: TL;DR posts opening with a greeting or filler word,
    CNN/DM articles with a colon in the first three words."""
    words = source.split()
    if family == "tldr":
        first = re.sub(r"[^\w]", "", words[0].lower()) if words else ""
        return first in TLDR_PREAMBLE
    if family == "cnndm":
        return any(":" in w for w in words[:3])
    raise ValueError(f"family={family!r}; preambles are defined for 'tldr' and 'cnndm'.")


def copies_start(source: str, summary: str, words: int = 8) -> bool:
    """Whether the summary begins with the source's opening: its first ``words`` words (case and
    punctuation aside; all of them when the source or summary is shorter) equal the source's. The paper
    reports this rate split by :func:`has_preamble` ("preamble skipping", §3.5)."""
    src, summ = _norm(source).split(), _norm(summary).split()
    n = min(words, len(src), len(summ))
    return n > 0 and src[:n] == summ[:n]


def win_rate(choices: Sequence[int], a_indices: Sequence[int]) -> float:
    """Share of questions whose chosen sample is one of policy A's (``a_indices``)."""
    if not choices:
        raise ValueError("win_rate needs at least one judged question.")
    a = set(a_indices)
    return float(np.mean([c in a for c in choices]))


def optimal_frontier(rewards: np.ndarray, betas: Sequence[float]) -> list[dict[str, float]]:
    """The reward-KL frontier of the KL-regularised optimum, from samples of the initial policy.

    For each β the optimal policy is ``π*(y|x) ∝ ρ(y|x) exp(r(x,y)/β)`` (PAPER.md §1.4's objective
    ``E[r] − β KL``). With ``m`` samples ``y_j ~ ρ(·|x)`` per prompt (``rewards`` is (prompts, m)), self-
    normalised importance weights ``w_j ∝ exp(r_j/β)`` give ``E_π*[r] ≈ Σ w_j r_j`` and
    ``KL(π*‖ρ) ≈ E_π*[r]/β − log mean_j exp(r_j/β)``, averaged over prompts. The KL estimate cannot
    exceed ``log m``: use enough samples for the β range of interest.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim == 1:
        r = r[None]
    if r.ndim != 2 or r.shape[1] < 2:
        raise ValueError(f"rewards must be (prompts, samples >= 2), got shape {np.shape(rewards)}.")
    out = []
    for beta in betas:
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}.")
        z = r / beta
        z_max = z.max(axis=1, keepdims=True)
        w = np.exp(z - z_max)
        w /= w.sum(axis=1, keepdims=True)
        reward = (w * r).sum(axis=1)
        log_mean = np.log(np.exp(z - z_max).mean(axis=1)) + z_max[:, 0]
        kl = reward / beta - log_mean
        out.append(
            {"beta": float(beta), "reward": float(reward.mean()), "kl": float(np.maximum(kl, 0.0).mean())}
        )
    return out
