"""One sampler: draw a task's prompts, sample ``k`` fixed-length responses per prompt with any policy.

A *sample function* is ``(contexts, length, seed) -> responses``: ``contexts`` an int64 array
(B, context_length) of left-padded contexts (:meth:`textenv.task.Task.contexts`), ``length`` the tokens
per response, ``seed`` an int that makes the call deterministic; it returns (B, length) token ids (a
numpy array or a torch tensor). Two adapters plug in the samplers of this project:

* :func:`textenv.models.sampling.hf_sample_fn`: Hugging Face ``generate`` (PAPER.md §1.6, pure
  ancestral sampling at the task's temperature);
* :func:`textenv.models.sampling.generator_sample_fn`: any ``sample(context_tensor, length,
  generator=torch.Generator)``, e.g. ``agents.policy.PolicyWithValue.sample``.

Determinism: prompts come from ``np.random.default_rng(seed)`` only (:meth:`Task.draw_prompts`); the
rows are sampled in batches of ``batch_size`` rows, batch ``b`` with seed ``sample_seed + b``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from textenv.families import Prompt
from textenv.task import Task

SampleFn = Callable[[np.ndarray, int, int], "np.ndarray"]


@dataclass
class TaskSamples:
    """``k`` responses to each of ``prompts``: row ``i * k + j`` is response ``j`` to prompt ``i``."""

    prompts: list[Prompt]
    k: int
    contexts: np.ndarray  # (n * k, context_length)
    responses: np.ndarray  # (n * k, length), untruncated

    def row_prompts(self) -> list[Prompt]:
        """The prompt of every row (each prompt ``k`` times in a row)."""
        return [p for p in self.prompts for _ in range(self.k)]

    def per_prompt(self) -> list[np.ndarray]:
        """The (k, length) responses of each prompt, in prompt order."""
        return [self.responses[i * self.k : (i + 1) * self.k] for i in range(len(self.prompts))]


def sample_for_prompts(
    task: Task,
    prompts: Sequence[Prompt],
    sample_fn: SampleFn,
    *,
    k: int = 1,
    seed: int = 0,
    batch_size: int | None = None,
    length: int | None = None,
) -> TaskSamples:
    """``k`` responses of ``length`` tokens (default: the task's ``response_length``) to each prompt.

    The ``n * k`` rows go to ``sample_fn`` in batches of ``batch_size`` rows (default: all at once),
    batch ``b`` with seed ``seed + b``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1 responses per prompt, got {k!r}.")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 rows or None, got {batch_size!r}.")
    length = task.config.response_length if length is None else length
    contexts = task.contexts(prompts, k)
    if not len(contexts):
        return TaskSamples([], k, contexts, np.empty((0, length), dtype=np.int64))
    step = batch_size or len(contexts)
    out = []
    for b, start in enumerate(range(0, len(contexts), step)):
        responses = _as_numpy(sample_fn(contexts[start : start + step], length, seed + b))
        if responses.shape != (len(contexts[start : start + step]), length):
            raise ValueError(
                f"the sample function returned shape {responses.shape} for {len(contexts[start : start + step])} "
                f"contexts; return (batch, {length}) token ids."
            )
        out.append(responses)
    responses = out[0] if len(out) == 1 else np.concatenate(out)
    return TaskSamples(list(prompts), k, contexts, responses)


def sample_task(
    task: Task,
    sample_fn: SampleFn,
    n: int,
    *,
    k: int = 1,
    seed: int | np.random.Generator = 0,
    sample_seed: int | None = None,
    batch_size: int | None = None,
    length: int | None = None,
) -> TaskSamples:
    """Draw ``n`` prompts with ``seed`` (:meth:`Task.draw_prompts`) and sample ``k`` responses to each
    (:func:`sample_for_prompts`, seeds ``sample_seed + b``; ``sample_seed`` defaults to ``seed``)."""
    prompts = task.draw_prompts(n, seed)
    if sample_seed is None:
        if not isinstance(seed, (int, np.integer)):
            raise ValueError("pass sample_seed= when seed is a generator.")
        sample_seed = int(seed)
    return sample_for_prompts(
        task, prompts, sample_fn, k=k, seed=sample_seed, batch_size=batch_size, length=length
    )


def _as_numpy(responses) -> np.ndarray:
    if hasattr(responses, "detach"):  # a torch tensor
        responses = responses.detach().cpu().numpy()
    return np.asarray(responses)
