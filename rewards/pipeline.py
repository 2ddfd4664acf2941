"""The paper's reward-learning data path: sample questions from a policy, label them, into the store.

``sample_questions`` draws queries from a task (the same prompts and preprocessing as its environment),
samples N responses per query from a causal LM at the task's temperature, applies the task's truncation
rule and stores each query with its N truncated samples as an unlabelled question. By default, as in the
paper, humans only see *valid* samples (a truncate token inside the allowed window): invalid samples are
rejected and resampled (PAPER.md §1.6, "rejection sampling"); ``require_valid=False`` keeps them.

``label_pending`` answers the unlabelled questions with a :class:`rewards.labelers.Labeler`, optionally
asking a share of them twice (the paper's duplicate questions) to measure agreement.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rewards.comparisons import Comparison, ComparisonStore

logger = logging.getLogger(__name__)


def sample_questions(
    store: ComparisonStore,
    task: str,
    model,
    tokenizer,
    *,
    n_queries: int,
    n_samples: int = 4,
    seed: int = 0,
    batch_size: int = 32,
    require_valid: bool = True,
    max_rounds: int = 10,
    policy_version: int = 0,
    progress: Callable[[int], None] | None = None,
    question_id_prefix: str = "",
    skip: int = 0,
    **task_overrides,
) -> dict:
    """Store ``n_queries`` questions of ``n_samples`` truncated samples each; returns statistics.

    Args:
        store: where the unlabelled questions go.
        task: a registered id (e.g. ``"BookSentiment-v0"``); ``task_overrides`` change its config.
        model, tokenizer: the policy to sample from (see :func:`textenv.models.load_causal_lm`).
        batch_size: sequences per ``generate`` call.
        require_valid: reject and resample invalid samples (the paper's behaviour).
        max_rounds: resampling rounds before a query that keeps producing invalid samples is skipped.
        question_id_prefix: name the questions ``<prefix><j>`` (j = 0, 1, ... in the order they are made)
            instead of the store's ``q<row id>``.
        skip: make the first ``skip`` questions but do not store them (they count in ``n_queries``): a
            resumed request redraws, with the same seed, what a killed one had already stored, and
            stores only the rest (``stats["questions"]`` counts the stored ones).
    """
    from textenv.models.sampling import hf_sample_fn
    from textenv.task import make_task

    if n_queries < 1 or n_samples < 2:
        raise ValueError(f"need n_queries >= 1 and n_samples >= 2, got {n_queries} and {n_samples}.")
    task = make_task(task, tokenizer, **task_overrides)
    # a best-of-N question's N samples share their query: its prefill runs once (a KV-cache LM only)
    sample_fn = hf_sample_fn(
        model, task.pad_id, task.config.temperature, task.vocab_size, share_prefix="auto"
    )
    rng = np.random.default_rng(seed)
    # the ids these samples can hold: imports into this store are checked against it
    rows = getattr(getattr(model, "config", None), "vocab_size", None) or 0  # output rows, when known
    store.record_vocab_size(max(len(tokenizer), int(rows)))
    stats = {"questions": 0, "sampled": 0, "valid": 0, "skipped_queries": 0}
    per_batch = max(1, batch_size // n_samples)
    call = made = 0  # made: questions made so far, stored or (the first ``skip``) not
    while made + stats["skipped_queries"] < n_queries:
        todo = min(per_batch, n_queries - made - stats["skipped_queries"])
        prompts = task.draw_prompts(todo, rng)
        kept, call = _sample_kept(
            task, prompts, sample_fn, stats, n_samples, require_valid, max_rounds, seed, call
        )
        questions = _full_questions(task, prompts, kept, n_samples, policy_version, stats)
        if question_id_prefix:
            for j, q in enumerate(questions, made):
                q.question_id = f"{question_id_prefix}{j}"
        questions, made = questions[max(0, skip - made) :], made + len(questions)
        store.add(questions)
        stats["questions"] += len(questions)
        if progress is not None:
            progress(len(questions))
    stats["valid_rate"] = stats["valid"] / max(stats["sampled"], 1)
    return stats


def _sample_kept(
    task,
    prompts,
    sample_fn,
    stats: dict,
    n_samples: int,
    require_valid: bool,
    max_rounds: int,
    seed: int,
    call: int,
) -> tuple[list[list[np.ndarray]], int]:
    """Up to ``n_samples`` truncated samples per prompt: with ``require_valid`` the valid ones, resampling
    the missing ones for up to ``max_rounds`` rounds; else one round, kept as they come. Counts into
    ``stats``; returns the samples per prompt and the next ``generate`` call number (it seeds the call)."""
    from textenv.sampler import sample_for_prompts

    kept: list[list[np.ndarray]] = [[] for _ in prompts]
    for _round in range(max_rounds if require_valid else 1):
        need = [i for i, k in enumerate(kept) if len(k) < n_samples]
        if not need:
            break
        rows = [i for i in need for _ in range(n_samples - len(kept[i]))]
        drawn = sample_for_prompts(task, [prompts[i] for i in rows], sample_fn, seed=seed * 100_003 + call)
        call += 1
        truncated, valid, _ = task.truncate(drawn.responses)
        stats["sampled"] += len(rows)
        stats["valid"] += int(valid.sum())
        for i, t, v in zip(rows, truncated, valid):
            if (v or not require_valid) and len(kept[i]) < n_samples:
                kept[i].append(t)
    return kept, call


def _full_questions(
    task, prompts, kept, n_samples: int, policy_version: int, stats: dict
) -> list[Comparison]:
    """The questions of the prompts that got all ``n_samples`` samples; the others count as skipped."""
    questions = []
    for prompt, samples in zip(prompts, kept):
        if len(samples) < n_samples:
            stats["skipped_queries"] += 1
            continue
        questions.append(make_question(task, prompt, samples, policy_version))
    return questions


def make_question(task, prompt, samples, policy_version: int = 0, question_id: str = "") -> Comparison:
    """A question for the store: ``prompt`` (drawn from ``task``, a :class:`textenv.Task`) and the sampled
    responses ``samples`` (pads dropped), with their decoded texts."""
    sample_ids = [[int(x) for x in s if x != task.pad_id] for s in samples]
    return Comparison(
        task=task.config.name,
        query=list(prompt.query),
        samples=sample_ids,
        query_text=task.decode(np.array(prompt.query)),
        sample_texts=[task.decode(np.array(s)) for s in sample_ids],
        reference=prompt.reference,
        policy_version=policy_version,
        question_id=question_id,
    )


def label_pending(
    store: ComparisonStore,
    labeler,
    *,
    name: str,
    task: str | None = None,
    limit: int | None = None,
    duplicate_rate: float = 0.0,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Label the store's pending questions with ``labeler``; ask ``duplicate_rate`` of them twice.

    Returns ``{"labelled": n, "duplicates": d, "agreement": share of duplicates answered the same}``.
    """
    if not 0.0 <= duplicate_rate <= 1.0:
        raise ValueError(f"duplicate_rate must be in [0, 1], got {duplicate_rate}.")
    rng = np.random.default_rng(seed)
    labelled = duplicates = agree = 0
    for c in store.pending(task=task, limit=limit):
        if c.sample_texts is None:
            raise ValueError(f"Question {c.id} has no sample texts; labelers judge text.")
        best = _best(labeler(c.query_text or "", c.sample_texts, c.reference))
        store.record_label(c.id, {"best": best}, name)
        labelled += 1
        if rng.random() < duplicate_rate:
            again = _best(labeler(c.query_text or "", c.sample_texts, c.reference))
            store.record_label(c.id, {"best": again}, name)
            duplicates += 1
            agree += int(again == best)
        if progress is not None:
            progress(1)
    return {
        "labelled": labelled,
        "duplicates": duplicates,
        "agreement": agree / duplicates if duplicates else None,
    }


def _best(answer) -> int:
    if isinstance(answer, tuple):
        answer = answer[0]
    return int(answer)


def mock_reward_model(
    task: str,
    lm,
    tokenizer,
    labeler,
    *,
    model_spec: str,
    questions: int,
    out_dir: str | Path,
    heldout_questions: int = 0,
    pool: str = "mean",
    layer: int | None = None,
    epochs: int = 10,
    lr: float = 1e-3,
    normalize_samples: int = 256,
    normalize: str = "before_and_after",
    seed: int = 0,
    require_valid: bool = True,
    **task_overrides,
) -> tuple:
    """The paper's offline reward path at small scale, with a mock labeler: sample ``questions`` best-of-4
    questions from ``lm`` (rho), label them, train a head on the frozen trunk's features (``top_blocks = 0``,
    ``pool``; several epochs: named deviations that suit small label counts on a CPU), normalise on fresh
    samples of rho (§1.3) and save to ``out_dir/reward_model``. ``require_valid=False`` keeps samples that
    break the task's truncation rule (the paper resamples them). ``layer``: the head reads that block's
    output (:class:`rewards.model.RewardModel`; None: the final layer's, the paper's). Returns
    ``(reward_model, metrics)``; the metrics' ``time/questions``, ``time/normalize`` and ``time/train`` say
    where the seconds went (sampling and labelling; the normalisation samples; caching features and
    training the head).

    ``normalize``: ``"before_and_after"`` (the paper's and the reference code's: gain/bias set on fresh
    samples of rho before training, seed ``seed + 12``, and again after it on other fresh samples, seed
    ``seed + 11``; the moments are returned as ``before/norm/*`` and ``norm/*``) or ``"after"`` (after
    training only, on the seed ``seed + 11`` samples: the behaviour before the option existed).
    """
    from rewards.model import RewardModel
    from rewards.train import check_normalize_when, normalize_on_policy

    check_normalize_when(normalize)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock = [time.perf_counter()]

    def lap() -> float:  # seconds since the previous lap: where the stage's time goes
        clock.append(time.perf_counter())
        return clock[-1] - clock[-2]

    sets = _mock_labelled_sets(
        task,
        lm,
        tokenizer,
        labeler,
        out,
        questions=questions,
        heldout_questions=heldout_questions,
        seed=seed,
        require_valid=require_valid,
        **task_overrides,
    )
    times = {"time/questions": lap()}  # sampling and labelling
    norm = {"sample_batch_size": 128, "score_batch_size": 64, **task_overrides}
    rm = RewardModel.from_spec(model_spec, seed=seed, pool=pool, layer=layer)
    before = {}
    if normalize == "before_and_after":
        before = normalize_on_policy(rm, task, lm, tokenizer, normalize_samples, seed=seed + 12, **norm)
    times["time/normalize"] = lap()
    metrics = _train_mock_head(rm, sets, epochs=epochs, lr=lr, seed=seed)  # features cached, head trained
    times["time/train"] = lap()
    metrics.update({f"before/{k}": v for k, v in before.items()})
    metrics.update(normalize_on_policy(rm, task, lm, tokenizer, normalize_samples, seed=seed + 11, **norm))
    times["time/normalize"] += lap()
    metrics.update(
        {"questions/train": len(sets["train"]), "questions/heldout": len(sets["heldout"]), **times}
    )
    rm.save(out / "reward_model")
    return rm, metrics


def _mock_labelled_sets(
    task: str,
    lm,
    tokenizer,
    labeler,
    out: Path,
    /,
    *,
    questions: int,
    heldout_questions: int,
    seed: int,
    require_valid: bool,
    **task_overrides,
) -> dict[str, list[Comparison]]:
    """``{"train": ..., "heldout": ...}``: questions sampled from the task's train (seed ``seed``) and valid
    (seed ``seed + 1``) splits into fresh stores ``out/labels_{name}.db``, labelled by ``labeler``."""
    sets = {}
    for name, n, split, s in (
        ("train", questions, "train", seed),
        ("heldout", heldout_questions, "valid", seed + 1),
    ):
        if n <= 0:
            sets[name] = []
            continue
        path = out / f"labels_{name}.db"
        path.unlink(missing_ok=True)
        with ComparisonStore(path) as store:
            sample_questions(
                store,
                task,
                lm,
                tokenizer,
                n_queries=n,
                seed=s,
                batch_size=128,
                split=split,
                require_valid=require_valid,
                **task_overrides,
            )
            label_pending(store, labeler, name=f"mock:{type(labeler).__name__}", task=task)
            sets[name] = store.labelled(task=task)
    return sets


def _train_mock_head(rm, sets: dict[str, list[Comparison]], *, epochs: int, lr: float, seed: int) -> dict:
    """Train the head of the reward model ``rm`` alone on ``sets["train"]`` (cached trunk features, batches
    of 16) and evaluate it on ``sets["heldout"]``; returns the metrics."""
    from rewards.train import RewardTrainConfig, cache_features, train_reward_model

    rm.set_trainable(0)
    feats = cache_features(rm, sets["train"], batch_size=32)
    held = cache_features(rm, sets["heldout"], batch_size=32) if sets["heldout"] else None
    return train_reward_model(
        rm,
        sets["train"],
        RewardTrainConfig(lr=lr, batch_size=16, epochs=epochs, top_blocks=0, seed=seed),
        eval_items=sets["heldout"] or None,
        features=feats,
        eval_features=held,
    )
