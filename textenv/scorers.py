"""Built-in scores, so that ``gym.make(id)`` works offline with no reward model.

A reward function is any callable ``(queries, responses) -> scores``: ``queries`` is an int64 array
(B, query_length) of raw query ids (left-padded, no prefix/suffix) and ``responses`` an int64 array
(B, response_length) of *truncated* response ids (pads after the truncate token); it returns B floats
(PAPER.md §1.3: the reward model reads the raw query and the post-processed response). A callable with
the attribute ``needs_references = True`` is also given ``references=`` (the task's reference
summaries), which is how the ROUGE score works.

These are the mock labelers' scores in their simplest documented form; the learned reward model and the
full mock labelers (with noise and agreement controls) live in ``rewards/``.

=================  ============================================================================
name               score of a response
=================  ============================================================================
sentiment          VADER compound polarity of the response text, in [-1, 1]
mock_sentiment     log-odds of "positive": log((1 + c) / (1 - c)) of VADER's compound c, clipped to
                   |c| <= 0.999 (the paper's mock reward is a classifier's log-odds, §1.10)
descriptiveness    share of the response's words that are concrete/sensory (a small lexicon of
                   colours, textures, sounds, smells, light, weather and materials, plus -y/-ous/-ful/
                   -ish/-en adjectives); a simple stand-in until the norms-based labeler in rewards/
rouge              R-AVG, the mean of ROUGE-1/2/L F1 (rouge-score, Porter stemmer) against the reference
=================  ============================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class RewardFn(Protocol):
    """``(queries, responses) -> scores``: token ids in, one float per row out."""

    def __call__(self, queries: np.ndarray, responses: np.ndarray) -> np.ndarray: ...


class _TextScorer:
    """Decode ids with ``tokenizer`` (pads dropped) and score the response text."""

    needs_references = False

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id

    def decode(self, ids: np.ndarray) -> str:
        return self.tokenizer.decode([int(t) for t in ids if t != self.pad_id], skip_special_tokens=False)

    def score_text(self, text: str) -> float:
        raise NotImplementedError

    def __call__(self, queries: np.ndarray, responses: np.ndarray) -> np.ndarray:
        return np.array([self.score_text(self.decode(r)) for r in responses], dtype=np.float64)


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(text: str) -> float:
    """VADER compound polarity of ``text``, in [-1, 1]."""
    return float(_vader().polarity_scores(text)["compound"])


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge_avg(reference: str, text: str) -> float:
    """R-AVG: the mean of ROUGE-1/2/L F1 of ``text`` against ``reference`` (Porter stemmer)."""
    s = _rouge_scorer().score(reference, text)
    return float(np.mean([s[k].fmeasure for k in ("rouge1", "rouge2", "rougeL")]))


class SentimentScore(_TextScorer):
    """VADER compound polarity (``vaderSentiment``, offline, MIT)."""

    def score_text(self, text: str) -> float:
        return sentiment(text)


class MockSentimentScore(SentimentScore):
    """Log-odds of positive sentiment, from VADER's compound score (PAPER.md §1.10 uses log-odds)."""

    def score_text(self, text: str) -> float:
        c = float(np.clip(super().score_text(text), -0.999, 0.999))
        return float(np.log((1 + c) / (1 - c)))


_SENSORY = set(
    """red orange yellow green blue purple violet pink brown black white grey gray golden silver crimson
    scarlet amber pale dark bright dim glowing gleaming shining glittering sparkling shimmering shadow
    shadows light sunlight moonlight candle flame fire smoke mist fog rain snow frost ice wind storm
    thunder lightning cloud clouds sky sun moon stars dawn dusk twilight soft hard rough smooth silky
    velvet cold warm hot icy damp wet dry sticky heavy sharp dull loud quiet silent whisper whispered
    roar roared rustle rustled creak creaked crash hum hummed echo echoed scent smell smelled fragrant
    sweet bitter sour salty taste perfume rose roses leaves grass trees tree forest river sea waves
    stone stones wood wooden iron glass silk wool velvet leather marble dust mud sand earth flowers
    blossom feathers fur skin hair eyes lips cheeks trembling shivering blazing flickering tangled
    crumbling ancient towering vast tiny narrow wide deep hollow crisp brittle""".split()
)
_ADJ_SUFFIX = re.compile(r"[a-z]{3,}(y|ous|ful|ish|en|ive|ent|ant)$")
_WORD = re.compile(r"[A-Za-z']+")


def descriptiveness(text: str) -> float:
    """Share of the words of ``text`` that are sensory/concrete or adjective-shaped, in [0, 1]."""
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return 0.0
    hits = sum(1 for w in words if w in _SENSORY or _ADJ_SUFFIX.fullmatch(w))
    return hits / len(words)


class DescriptivenessScore(_TextScorer):
    """Share of words that are sensory/concrete or adjective-shaped; see the module table."""

    def score_text(self, text: str) -> float:
        return descriptiveness(text)


class RougeScore(_TextScorer):
    """R-AVG (mean ROUGE-1/2/L F1, Porter stemmer) of the response against the reference summary."""

    needs_references = True

    def __call__(
        self, queries: np.ndarray, responses: np.ndarray, references: Sequence[str] | None = None
    ) -> np.ndarray:
        if references is None or len(references) != len(responses):
            raise ValueError("RougeScore needs one reference summary per response (references=...).")
        return np.array(
            [rouge_avg(ref, self.decode(r)) for r, ref in zip(responses, references)], dtype=np.float64
        )


BUILTIN_SCORES: dict[str, Callable] = {
    "sentiment": SentimentScore,
    "mock_sentiment": MockSentimentScore,
    "descriptiveness": DescriptivenessScore,
    "rouge": RougeScore,
}


def make_builtin_score(name: str, tokenizer) -> Callable:
    """Instantiate the built-in score ``name`` for ``tokenizer``."""
    if name not in BUILTIN_SCORES:
        raise ValueError(
            f"Unknown built-in reward {name!r}; choose from {sorted(BUILTIN_SCORES)} or pass a callable."
        )
    return BUILTIN_SCORES[name](tokenizer)
