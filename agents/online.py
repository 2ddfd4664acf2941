"""The paper's online data collection (PAPER.md §1.7): labels arrive while PPO trains.

Schedule, with N_pi the run's episodes, N_r0 the initial and N_r the final number of labels:

    l(n) = N_r0 + (N_r - N_r0) * (1 - (1 - n / N_pi)^2)          labels needed before episode n

* before each PPO iteration the loop tops the requests up to ``l(n) + outstanding`` (questions of 4
  samples from the *current* policy, sampled into the comparison store), lets a mock labeler answer
  those whose simulated latency has passed (or waits for people answering in the labeling app, which
  writes into the same store), and pauses PPO while fewer than ``l(n)`` labels have arrived;
* the reward model is retrained *from scratch* (a fresh head on the initial model rho) on every label so
  far at ``retrains`` evenly spaced label counts (20 by default, the first before any PPO episode),
  normalised on samples of rho, and swapped into the running environment;
* a constant share of the requests are validation questions (two samples from rho, two from pi): the
  share of them where a pi sample wins measures how often pi beats rho; they also train the reward model.

``mode="batched"`` is the paper's alternative: no requests run ahead; at each retrain point PPO stops,
exactly the labels up to that point are collected from the current policy, the reward model is
retrained, and PPO continues until the schedule asks for more than that point.

Normalisation (§1.3, ``normalize``): by default, as the reference code, every retrain normalises the fresh
reward model on samples of rho *before* training and again *after* it, each time on fresh samples (their
seed derives from the run's seed, the retrain's index and before/after); ``normalize = "after"``
normalises after training only.

Resume (``train-policy --online --resume``, after a kill -9 anywhere): the loop's state
(:meth:`OnlineLoop.state_dict`: the run id, the retrain points done, the retrain count and log, the
reward model now swapped in, the mock labeler's RNG) is saved in every checkpoint beside the agent's,
and a checkpoint is also written right after each retrain. The store itself is the record of what was
asked and answered: every request is round ``r`` of iteration ``i`` of this run, its questions are named
``online-<run id>-i<i>-r<r>-q<j>`` (``v<j>`` for validation questions) and drawn with a seed derived
from (seed, i, r), and the number to ask is always counted from the store (labelled + pending); so a
resumed run re-asks nothing already in the store, completes a request a kill cut short with exactly the
questions it would have asked, counts the questions still unanswered as outstanding, and uses the
answers that came in while it was down. On the CPU, given the same answers (the mock labeler with
``latency_s = 0``, or people answering the same), a resumed run's metrics and weights equal an
uninterrupted run's (tests/test_online_resume.py).
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from agents.sections import STRICT
from rewards.comparisons import ComparisonStore
from rewards.labeling import runs as run_records
from rewards.train import NormalizeWhen, RewardTrainConfig, normalization_seed


def labels_needed(n: float, initial: int, final: int, total_episodes: int) -> float:
    """l(n) of PAPER.md §1.7: labels needed before the n-th PPO episode (front-loaded)."""
    if total_episodes <= 0:
        raise ValueError(f"total_episodes must be > 0, got {total_episodes}.")
    frac = min(max(n / total_episodes, 0.0), 1.0)
    return initial + (final - initial) * (1.0 - (1.0 - frac) ** 2)


def retrain_points(initial: int, final: int, count: int = 20) -> list[int]:
    """Values of l(n) at which the reward model is (re)trained: ``count`` evenly spaced points, the first
    at ``initial`` (before any PPO episode), ``initial + k (final - initial) / count`` after it."""
    if count < 1:
        raise ValueError(f"retrains must be >= 1, got {count}.")
    return [round(initial + k * (final - initial) / count) for k in range(count)]


ONLINE_REWARD_DEFAULTS = RewardTrainConfig(lr=5e-5, batch_size=8, epochs=1, top_blocks=None)


@dataclass(frozen=True, config=STRICT)
class OnlineConfig:
    """``[online]`` of a train-policy config (and ``[online.reward]``: the reward-model training).

    Attributes:
        enabled: turn the online loop on (``--online``).
        mode: ``online`` (requests run ahead, PPO waits only when short) or ``batched``.
        labeler: a mock labeler name (``sentiment``, ``descriptiveness``, ``summarization``) or ``human``
            (people answer in ``textenv serve-labeling`` on the same store).
        latency_s: the mock labeler answers a question this long after it was asked (Scale: ~30 min).
        store: the comparison store (default ``<run.out_dir>/labels.db``).
        initial_labels, final_labels: N_r0 and N_r (the paper's TL;DR: 0-ish and 60k).
        retrains: reward-model trainings over the run (20).
        outstanding: questions kept in flight beyond l(n) (1000 in the paper).
        validation_share: share of requests that are validation questions (rho vs pi).
        samples: samples per question (4).
        reward: the reward-model training (:class:`rewards.train.RewardTrainConfig`; §1.3: one epoch,
            ``top_blocks`` unset trains the whole model). Given keys replace these defaults: lr 5e-5, batch
            8, one epoch. Its ``seed`` plus the retrain's index seeds each training.
        pool: the reward head's pooling, ``last`` (the paper) or ``mean`` (over the response).
        normalize_samples: samples of rho for each normalisation (§1.3).
        normalize: ``before_and_after`` (the paper's: a fresh reward model is normalised on samples of rho
            before training and again after, on fresh samples each time) or ``after`` (after only).
        poll_s, max_wait_s: how often to look for new labels, and how long PPO may wait (0: forever).
        seed: sampling seed (requests, the mock labeler, the reward model's initialisation).
    """

    enabled: bool = False
    mode: Literal["online", "batched"] = "online"
    labeler: str = "sentiment"
    latency_s: float = Field(0.0, ge=0)
    store: str = ""
    initial_labels: int = 64
    final_labels: int = 512
    retrains: int = Field(20, ge=1)
    outstanding: int = Field(1000, ge=0)
    validation_share: float = Field(0.05, ge=0, lt=1)
    samples: int = Field(4, ge=2)
    reward: RewardTrainConfig = dataclasses.field(default_factory=lambda: ONLINE_REWARD_DEFAULTS)
    pool: Literal["last", "mean"] = "last"
    normalize_samples: int = Field(256, gt=0)
    normalize: NormalizeWhen = "before_and_after"
    poll_s: float = Field(0.2, gt=0)
    max_wait_s: float = Field(0.0, ge=0)
    seed: int = Field(0, ge=0)

    @field_validator("reward", mode="before")
    @classmethod
    def _merge_reward(cls, value: Any) -> Any:
        """A partial ``[online.reward]`` table overrides only the keys it gives; its values are typed as
        strictly as every other table's (``epochs = true`` is refused, not read as 1)."""
        if isinstance(value, dict):
            merged = {**dataclasses.asdict(ONLINE_REWARD_DEFAULTS), **value}
            return RewardTrainConfig(**merged)  # strict, as every table
        return value

    def __post_init__(self) -> None:
        if not 1 <= self.initial_labels <= self.final_labels:
            raise ValueError(
                f"online.initial_labels={self.initial_labels} and final_labels={self.final_labels}: need "
                "1 <= initial <= final (the first reward model trains on the initial labels)."
            )


class SwappableReward:
    """The online run's reward function: handed to the env once, it scores with the newest reward model
    (:meth:`set` swaps it; the next episode to finish is scored by the new one)."""

    def __init__(self) -> None:
        self.current: Any = None

    def set(self, reward_fn) -> None:
        if not callable(reward_fn):
            raise TypeError(
                f"reward_fn must be a callable (queries, responses) -> scores, got {reward_fn!r}."
            )
        self.current = reward_fn

    def __call__(self, queries, responses):
        if self.current is None:
            raise RuntimeError(
                "the online loop has not trained a reward model yet (OnlineLoop.before_iteration)."
            )
        return self.current(queries, responses)


@contextmanager
def _as_lm(model):
    """The Hugging Face LM behind a policy, a frozen reference, or a LoRA reference (adapters off)."""
    inner = getattr(model, "policy", None)
    if inner is not None and getattr(inner, "lora", False):
        with inner.lm.disable_adapter():
            yield inner.lm
    else:
        yield model.lm


def derived_seed(seed: int, *path: int) -> int:
    """A 31-bit seed for the request, normalisation, ... at ``path`` (e.g. iteration, round) of a run with
    ``seed``: a pure function, so a resumed run draws exactly what the killed one would have."""
    return int(np.random.SeedSequence([int(seed), *map(int, path)]).generate_state(1)[0] & 0x7FFFFFFF)


STATE_VERSION = 1
_REQUEST, _VALIDATION = 1, 2  # derived_seed paths


class OnlineLoop:
    """Drives label requests, waiting and reward-model retraining around a built-in agent's iterations.

    Args:
        agent: a :class:`agents.ppo.PPOAgent` (or RLOO agent) whose env reward will be swapped.
        config: the ``[online]`` settings.
        task, overrides: the env's task id and overrides (questions are drawn from the same prompts).
        total_episodes: N_pi, the episodes of the whole run.
        model_spec: the reward model's base (the initial policy rho's spec).
        labeler: a labeler object for mock labelling (default: ``make_labeler(config.labeler)``).
        run_id: names this run's questions in the store (default: random; a resumed run takes its
            checkpoint's, :meth:`load_state_dict`).
    """

    def __init__(
        self,
        agent,
        config: OnlineConfig,
        *,
        task: str,
        overrides: dict,
        total_episodes: int,
        model_spec: str,
        store_path: str,
        labeler=None,
        run_id: str | None = None,
    ) -> None:
        from rewards.labelers import make_labeler

        self.agent, self.config, self.task, self.overrides = agent, config, task, dict(overrides)
        self.total_episodes, self.model_spec = int(total_episodes), model_spec
        self.store = ComparisonStore(store_path)
        self.human = config.labeler == "human"
        self.labeler = None if self.human else (labeler or make_labeler(config.labeler, seed=config.seed))
        self.points = retrain_points(config.initial_labels, config.final_labels, config.retrains)
        self.run_id = run_id or secrets.token_hex(6)
        self.next_point = 0  # index into points
        self.retrains = 0
        self.retrain_log: list[dict] = []  # one entry per retrain: iteration, labels, loss, normalisation
        self.round = 0  # request rounds so far in the current before_iteration
        self.checkpoint_due = False  # set by a retrain: the caller saves a checkpoint (train_policy does)
        self.tokenizer = agent.policy.tokenizer
        self.reward_model = None
        self.reward = SwappableReward()
        agent.envs.task.set_reward_fn(self.reward)  # handed over once; retrain() swaps what it scores with
        self.history: list[dict] = []

    @classmethod
    def from_config(cls, agent, cfg, store_path: str, labeler=None) -> OnlineLoop:
        """The loop of a train-policy run: ``cfg`` is its :class:`agents.train.TrainConfig` (the env's task
        and overrides, the policy's model as rho, N_pi = iterations x batch size)."""
        return cls(
            agent,
            cfg.online,
            task=cfg.env.task,
            overrides=cfg.env.overrides,
            total_episodes=cfg.iterations * cfg.algo_config.batch_size,
            model_spec=cfg.policy.model,
            store_path=store_path,
            labeler=labeler,
        )

    # ----------------------------------------------------------------------------- counting
    @property
    def id_prefix(self) -> str:
        """The question ids of this run start with this."""
        return f"online-{self.run_id}-"

    def request_tag(self, iteration: int, round_: int) -> str:
        """The id prefix of request round ``round_`` before iteration ``iteration + 1``."""
        return f"{self.id_prefix}i{int(iteration)}-r{int(round_)}-"

    def is_validation(self, question_id: str) -> bool:
        return question_id.startswith(self.id_prefix) and question_id.rsplit("-", 1)[-1].startswith("v")

    @property
    def requests(self) -> int:
        """Questions this run has asked (counted in the store, so a resumed run counts the killed one's)."""
        return self.store.count_questions(task=self.task, id_prefix=self.id_prefix)

    def counts(self) -> tuple[int, int]:
        """(labelled questions, pending questions) of this task in the store."""
        labelled = self.store.count_questions(task=self.task, labelled=True)  # polled: a count, not a read
        return labelled, self.store.count(task=self.task, labelled=False)

    def needed(self, episodes: int) -> int:
        c = self.config
        return math.ceil(
            labels_needed(episodes, c.initial_labels, c.final_labels, self.total_episodes) - 1e-9
        )

    # ------------------------------------------------------------------------------ requests
    def request(self, n: int) -> int:
        """Ask ``n`` new questions as the next request round of this iteration: ``samples`` samples of the
        current policy, or, for a constant share, validation questions (half from rho, half from pi).
        Returns the questions stored.

        Idempotent across a kill: the round's questions are named by :meth:`request_tag` and drawn with a
        seed derived from (seed, iteration, round). When the store already holds some of them (a killed
        run stored them after its last checkpoint), the caller's ``n``, counted from the store, no longer
        includes them: the round is redrawn whole (``n`` + those) and only the missing ones are stored.
        """
        iteration, round_ = int(self.agent.iteration), self.round
        self.round += 1
        if n <= 0:
            return 0
        tag = self.request_tag(iteration, round_)
        have_q = self.store.count_questions(task=self.task, id_prefix=tag + "q")
        have_v = self.store.count_questions(task=self.task, id_prefix=tag + "v")
        total = n + have_q + have_v
        seed = derived_seed(self.config.seed, _REQUEST, iteration, round_)
        share = self.config.validation_share
        n_val = int(np.random.default_rng(seed).binomial(total, share)) if share else 0
        stored = 0
        if total - n_val > have_q:
            from rewards.pipeline import sample_questions

            with _as_lm(self.agent.policy) as lm:
                stored += sample_questions(
                    self.store,
                    self.task,
                    lm,
                    self.tokenizer,
                    n_queries=total - n_val,
                    n_samples=self.config.samples,
                    seed=seed,
                    policy_version=iteration,
                    question_id_prefix=tag + "q",
                    skip=have_q,
                    **self.overrides,
                )["questions"]
        if n_val and not have_v:  # validation questions are stored in one transaction: all or none
            seed_v = derived_seed(self.config.seed, _VALIDATION, iteration, round_)
            stored += self._validation_questions(n_val, seed_v, iteration, tag + "v")
        return stored

    def _validation_questions(self, n: int, seed: int, version: int, prefix: str) -> int:
        """``n`` questions whose samples come half from rho (the reference policy), half from the policy."""
        from rewards.pipeline import make_question
        from textenv.models.sampling import hf_sample_fn
        from textenv.sampler import sample_for_prompts
        from textenv.task import make_task

        task = make_task(self.task, self.tokenizer, **self.overrides)
        prompts = task.draw_prompts(n, seed)
        half, temperature = self.config.samples // 2, task.config.temperature
        with _as_lm(self.agent.reference) as ref_lm:
            sample_fn = hf_sample_fn(ref_lm, task.pad_id, temperature, task.vocab_size)
            from_ref = sample_for_prompts(task, prompts, sample_fn, k=half, seed=seed).per_prompt()
        with _as_lm(self.agent.policy) as lm:
            sample_fn = hf_sample_fn(lm, task.pad_id, temperature, task.vocab_size)
            k = self.config.samples - half
            from_pi = sample_for_prompts(task, prompts, sample_fn, k=k, seed=seed + 1).per_prompt()
        questions = [
            make_question(task, p, [*from_ref[i], *from_pi[i]], version, question_id=f"{prefix}{i}")
            for i, p in enumerate(prompts)
        ]
        self.store.add(questions)
        return len(questions)

    # ------------------------------------------------------------------------------- labels
    def label_due(self) -> int:
        """The mock labeler answers every pending question older than ``latency_s``."""
        if self.human:
            return 0
        now, done = time.time(), 0
        for c in self.store.pending(task=self.task):
            if c.created + self.config.latency_s > now:
                continue
            answer = self.labeler(c.query_text or "", c.sample_texts or [], c.reference)
            self.store.record_label(
                c.id, {"best": int(answer[0] if isinstance(answer, tuple) else answer)}, self.config.labeler
            )
            done += 1
        return done

    def pause(self) -> None:
        """Wait ``poll_s`` before looking for labels again."""
        time.sleep(self.config.poll_s)

    def wait_for(self, target: int) -> float:
        """Block until ``target`` questions are labelled; returns the seconds waited."""
        t0 = time.perf_counter()
        while True:
            self.label_due()
            labelled, pending = self.counts()
            if labelled >= target:
                return time.perf_counter() - t0
            if labelled + pending < target:
                self.request(target - labelled - pending)
                continue
            waited = time.perf_counter() - t0
            if self.config.max_wait_s and waited > self.config.max_wait_s:
                raise TimeoutError(
                    f"waited {waited:.0f} s for labels: {labelled} of {target} arrived ({pending} pending). "
                    "Label in the app (textenv serve-labeling) or raise online.max_wait_s."
                )
            self.pause()

    # ---------------------------------------------------------------------------- retraining
    def retrain(self) -> dict:
        """A fresh reward model on rho, normalised on fresh samples of rho (before training too, by
        default), one pass over every label so far, normalised again on other fresh samples, swapped into
        the env (§1.3, §1.7). Asks the caller for a checkpoint (:attr:`checkpoint_due`)."""
        from rewards.model import RewardModel
        from rewards.train import normalize_on_policy, train_reward_model

        c, index = self.config, self.retrains
        items = self.store.labelled(task=self.task, label_type="best_of_n")
        rm = RewardModel.from_spec(self.model_spec, seed=c.seed + index, pool=c.pool)
        rm = rm.to(self.agent.device)

        def normalize(phase: str) -> dict:
            seed = normalization_seed(c.seed, index, phase)
            with _as_lm(self.agent.reference) as ref_lm:
                return normalize_on_policy(
                    rm, self.task, ref_lm, self.tokenizer, c.normalize_samples, seed=seed, **self.overrides
                )

        norm = {"before": normalize("before")} if c.normalize == "before_and_after" else {}
        cfg = dataclasses.replace(
            c.reward, batch_size=min(c.reward.batch_size, len(items)), seed=c.reward.seed + index
        )
        heldout = self._heldout_accuracy(items)  # the previous model, on the labels it never saw
        metrics = train_reward_model(rm, items, cfg)
        norm["after"] = normalize("after")
        self.reward.set(rm.as_reward_fn())
        self.reward_model = rm
        self.retrains += 1
        out = {
            "retrain": index,
            "iteration": int(self.agent.iteration),
            "labels": len(items),
            "loss_last": metrics["train/loss_last_10pct"],
            "normalize": norm,
            "labeled_until": max((it.labeled or 0.0 for it in items), default=0.0),
        }
        self.retrain_log.append(out)
        episodes = int(self.agent.iteration) * int(self.agent.config.batch_size)
        run_records.record_retrain(
            self.store, self.run_id, index, out["iteration"], episodes, len(items), out["loss_last"], heldout
        )
        self.checkpoint_due = True
        return out

    def _heldout_accuracy(self, items: list) -> tuple[float, int] | None:
        """(accuracy, count) of the reward model now in use on the labels among ``items`` that arrived
        after its retrain (it never trained on them), for the admin dashboard; None before the first
        retrain or when none arrived."""
        from rewards.train import evaluate

        if self.reward_model is None or not self.retrain_log:
            return None
        until = self.retrain_log[-1].get("labeled_until")
        new = [it for it in items if until is not None and (it.labeled or 0.0) > until]
        if not new:
            return None
        import torch

        with torch.no_grad():
            return float(evaluate(self.reward_model, new)["eval/accuracy"]), len(new)

    # --------------------------------------------------------------------------- the hook
    def before_iteration(self) -> dict:
        """Everything due before the agent's next iteration; returns ``online/*`` metrics.

        Online: top the requests up to ``l(n) + outstanding`` and wait until ``l(n)`` labels are in.
        Batched: wait only when the schedule passes a retrain point, for that point's labels. Either
        way, retrain once the schedule has passed the next retrain point.
        """
        c = self.config
        self.round = 0
        n = self.agent.iteration * self.agent.config.batch_size  # episodes done so far
        need = self.needed(n)
        due = [k for k in range(self.next_point, len(self.points)) if self.points[k] <= need]
        waited = 0.0
        if c.mode == "online":
            self.label_due()
            labelled, pending = self.counts()
            self.request(need + c.outstanding - labelled - pending)
            waited = self.wait_for(need)
        elif due:
            waited = self.wait_for(self.points[due[-1]])
        retrain = None
        if due:
            retrain = self.retrain()
            self.next_point = due[-1] + 1
        elif self.retrain_log and self.retrain_log[-1]["iteration"] == self.agent.iteration:
            retrain = self.retrain_log[-1]  # resumed from the checkpoint written right after this retrain
        labelled, pending = self.counts()
        self._record_progress(n, need, labelled, pending)
        stats = {
            "online/labels": labelled,
            "online/pending": pending,
            "online/labels_needed": need,
            "online/requests": self.requests,
            "online/retrains": self.retrains,
            "online/wait_s": waited,
            **self.validation_stats(),
        }
        if retrain:
            stats["online/rm_loss"] = retrain["loss_last"]
        self.history.append(stats)
        return stats

    def _record_progress(self, episodes: int, need: int, labelled: int, pending: int) -> None:
        """The schedule and this iteration's labels against l(n), in the store (the admin dashboard)."""
        c = self.config
        run_records.record_run(
            self.store,
            self.run_id,
            task=self.task,
            mode=c.mode,
            initial_labels=c.initial_labels,
            final_labels=c.final_labels,
            total_episodes=self.total_episodes,
            retrains=c.retrains,
        )
        run_records.record_progress(
            self.store, self.run_id, self.agent.iteration, episodes, need, labelled, pending
        )

    def validation_stats(self) -> dict:
        """How often a pi sample (indices >= samples // 2) wins one of this run's validation questions."""
        half = self.config.samples // 2
        wins = [
            c.best >= half for c in self.store.labelled(task=self.task) if self.is_validation(c.question_id)
        ]
        return {
            "online/validation_questions": len(wins),
            "online/pi_beats_rho": float(np.mean(wins)) if wins else None,
        }

    def labeler_score(self, texts: list[str]) -> float | None:
        """The mock labeler's mean score of ``texts`` (the gold score a simulated run tracks)."""
        if self.labeler is None or not hasattr(self.labeler, "scores"):
            return None
        return float(np.mean(self.labeler.scores("", texts)))

    # ---------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """What a resumed run needs beyond the agent's state (saved in the same checkpoint, JSON and
        safetensors): the run id (its questions' names), the retrain points done, the retrain count and
        log, the mock labeler's RNG, and the reward model now scoring the env.

        The reward model's weights are saved (its trained tensors, the frozen rest being rho's, and the
        gain/bias of its normalisation) rather than retrained from the store on resume: retraining would
        repeat the most expensive step of the loop (on the full model, §1.3) on every resume, would give
        other weights on a GPU (non-deterministic kernels), and would need the exact label set of that
        retrain, while the store keeps growing (answers arrive while the run is down). The price: every
        checkpoint also holds the reward model's trained tensors (with the default ``top_blocks`` unset,
        the whole model: about the size of the policy's tensors again). The counts below are derived from
        the store, which is the record of what was asked and answered, and are kept for reading only.
        """
        rm = self.reward_model
        saved_rm = None
        if rm is not None:
            trunk = {f"lm.{n}": p for n, p in rm.lm.named_parameters() if p.requires_grad}
            tensors = {
                "head.weight": rm.head.weight,
                "head.bias": rm.head.bias,
                "gain": rm.gain,
                "bias": rm.bias,
            }
            saved_rm = {
                "seed": rm.seed,
                "pool": rm.pool,
                "top_blocks": rm.top_blocks,
                "tensors": {k: v.detach().cpu().clone() for k, v in {**tensors, **trunk}.items()},
            }
        rng = getattr(self.labeler, "rng", None)
        labelled, pending = self.counts()
        return {
            "version": STATE_VERSION,
            "run_id": self.run_id,
            "iteration": int(self.agent.iteration),
            "next_point": self.next_point,
            "retrains": self.retrains,
            "retrain_log": self.retrain_log,
            "reward_model": saved_rm,
            "labeler_rng": rng.bit_generator.state if isinstance(rng, np.random.Generator) else None,
            "counts": {
                "labels": labelled,
                "pending": pending,
                "requests": self.requests,
                **self.validation_stats(),
            },
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` (after the agent's own state is loaded): the same run id, so
        the questions the killed run asked count as asked; the reward model swapped back in."""
        from rewards.model import RewardModel

        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"online-loop state version {state.get('version')!r}; this code reads {STATE_VERSION}."
            )
        if int(state["iteration"]) != int(self.agent.iteration):
            raise ValueError(
                f"the online-loop state is of iteration {state['iteration']}, the agent's of {self.agent.iteration}."
            )
        self.run_id = str(state["run_id"])
        self.next_point, self.retrains = int(state["next_point"]), int(state["retrains"])
        self.retrain_log = list(state["retrain_log"])
        saved = state["reward_model"]
        if saved is not None:
            rm = RewardModel.from_spec(self.model_spec, seed=int(saved["seed"]), pool=saved["pool"])
            tensors = dict(saved["tensors"])
            import torch

            with torch.no_grad():
                for name in ("head.weight", "head.bias", "gain", "bias"):
                    rm.get_parameter(name).copy_(tensors.pop(name))
                params = dict(rm.lm.named_parameters())
                unknown = [n for n in tensors if n.removeprefix("lm.") not in params]
                if unknown:
                    raise ValueError(
                        f"reward-model tensors {unknown[:3]} are not in a {self.model_spec} model."
                    )
                for name, value in tensors.items():
                    params[name.removeprefix("lm.")].copy_(value)
            rm.set_trainable(saved["top_blocks"])
            rm = rm.to(self.agent.device).eval()
            self.reward.set(rm.as_reward_fn())
            self.reward_model = rm
        rng = getattr(self.labeler, "rng", None)
        if state.get("labeler_rng") is not None and isinstance(rng, np.random.Generator):
            rng.bit_generator.state = state["labeler_rng"]
        self.checkpoint_due = False

    def close(self) -> None:
        self.store.close()


__all__ = [
    "OnlineConfig",
    "OnlineLoop",
    "SwappableReward",
    "derived_seed",
    "labels_needed",
    "retrain_points",
]
