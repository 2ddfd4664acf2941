"""``make demo`` / ``textenv demo``: the embedded default end to end, offline.

Loads the embedded SmolLM2-135M twice (the second load is timed: the cache makes it take about a
second), builds continuation prompts from the offline books corpus, samples fixed-length responses at
the paper's temperature, applies the paper's truncation rule and scores each with the mock sentiment
labeler (VADER), giving the -1 penalty to responses without a period in the allowed window (PAPER.md §1.6).
"""

from __future__ import annotations

import time

import numpy as np


def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def run_demo(model: str = "smollm2-135m", episodes: int = 4, seed: int = 0) -> int:
    import torch

    from textenv.data import load_books, trim_passage
    from textenv.models import load_causal_lm
    from textenv.tokenization import pad_sequences, padded_inputs, token_id

    query_length, response_length, temperature, truncate_after = 64, 24, 0.7, 16
    t0 = time.perf_counter()
    lm, tok = load_causal_lm(model)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    lm, tok = load_causal_lm(model)
    second = time.perf_counter() - t0
    print(f"[demo] model {model!r}: first load {first:.1f}s (includes imports), second load {second:.2f}s")

    period = token_id(tok, ".")
    queries: list[list[int]] = []
    for passage in load_books("valid"):
        ids = trim_passage(
            tok.encode(passage.text), max_length=query_length, min_length=32, start_id=period, end_id=period
        )
        if ids is not None:
            queries.append(ids)
        if len(queries) == episodes:
            break
    pad = tok.pad_token_id
    batch = torch.tensor(pad_sequences(queries, pad, query_length, side="left"))
    inputs = padded_inputs(batch, pad)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = lm.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=response_length,
            min_new_tokens=response_length,
            eos_token_id=None,
            pad_token_id=0,
        )
    responses = out[:, query_length:].numpy()
    print(
        f"[demo] sampled {episodes} x {response_length} tokens at T={temperature} in {time.perf_counter() - t0:.1f}s"
    )

    vader = _vader()
    scores = []
    for q, r in zip(queries, responses):
        hits = [i for i, t in enumerate(r) if t == period and i >= truncate_after]
        if hits:
            text = tok.decode(r[: hits[0] + 1])
            score = vader.polarity_scores(text)["compound"]
        else:
            text, score = tok.decode(r), -1.0
        scores.append(score)
        print("-" * 100)
        print(f"QUERY    ...{tok.decode(q)[-160:]!s}")
        print(f"RESPONSE {text!r}")
        print(f"SCORE    {score:+.3f}" + ("  (penalty: no period at index >= 16)" if not hits else ""))
    print("-" * 100)
    print(f"[demo] mean score {np.mean(scores):+.3f} over {episodes} episodes")
    return 0
