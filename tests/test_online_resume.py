"""``train-policy --online --resume``: a tiny online run killed at each of the three points the issue names
(while waiting for labels, inside a reward-model retrain, between two PPO minibatches) resumes from its
last checkpoint and ends exactly as an uninterrupted run given the same answers: the same questions asked
once each, the same labels used by each retrain, the retrain count continued, the same metrics and
weights. The first kill is a real SIGKILL of ``textenv train-policy --online``; the others are simulated
in process (a ``Killed`` raised from a hook, which no ``except Exception`` catches).

Labels come from a scripted person (``labeler = "human"``): whenever the loop pauses for labels, every
pending question is answered by the mock sentiment labeler (deterministic), as people answering in the
labeling app would, so the killed, resumed and uninterrupted runs see the same answers. The uninterrupted
run also shows the normalisation before and after each retrain, on fresh samples (PAPER.md §1.3).
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from agents import checkpoint as ckpt
from agents.build import build_agent
from agents.config import load_config
from agents.online import OnlineLoop
from agents.train import train_policy
from rewards.comparisons import ComparisonStore
from rewards.labelers import make_labeler

ROOT = Path(__file__).resolve().parents[1]

# 3 iterations of 4 episodes; l(n) before them: 3, 7, 9; retrain points 3 and 6: a retrain before each of
# the first two iterations
TINY = [
    "--run.iterations=3",
    "--run.tensorboard=false",
    "--run.plot=false",
    "--run.checkpoint_every=1",
    "--run.sample_every=0",
    "--ppo.batch_size=4",
    "--ppo.minibatches=2",
    "--ppo.epochs=1",
    "--online.enabled=true",
    "--online.labeler=human",
    "--online.poll_s=0.01",
    "--online.initial_labels=3",
    "--online.final_labels=9",
    "--online.retrains=2",
    "--online.outstanding=2",
    "--online.samples=2",
    "--online.validation_share=0.3",
    "--online.normalize_samples=4",
    "--online.reward.batch_size=4",
]


class Killed(BaseException):
    """A simulated kill -9: nothing in the run catches it (the finally clauses run, which kill -9 skips;
    they only close files)."""


def config(out: Path, *extra: str):
    return load_config("tiny_toy", [f"--run.out_dir={out}", *TINY, *extra])


def answer_all(store_path: Path, name: str = "person") -> int:
    """Answer every pending question as the scripted person does (the mock sentiment labeler's argmax)."""
    labeler = make_labeler("sentiment")
    with ComparisonStore(store_path) as store:
        pending = store.pending()
        for c in pending:
            best, _ = labeler(c.query_text or "", c.sample_texts or [], c.reference)
            store.record_label(c.id, {"best": int(best)}, name)
    return len(pending)


@pytest.fixture
def person(monkeypatch):
    """Whenever the loop pauses for labels, the person answers everything pending; ``person.at``: the
    iterations (before which) the loop paused."""

    class Person:
        at: list[int] = []

    def pause(self):
        Person.at.append(self.agent.iteration)
        answer_all(self.store.path)

    monkeypatch.setattr(OnlineLoop, "pause", pause)
    return Person


def metric_rows(out: Path) -> list[dict]:
    """metrics.jsonl without the timings (wall clock)."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "online/wait_s"} for r in rows]


def questions(out: Path) -> list[tuple]:
    """Every row of the store: (question id, query, samples, label), in the order they were stored."""
    with ComparisonStore(out / "labels.db") as store:
        return [
            (c.question_id, tuple(c.query), tuple(map(tuple, c.samples)), json.dumps(c.label))
            for c in store.all()
        ]


def final_state(out: Path) -> dict:
    path, _ = ckpt.latest_intact(out / "checkpoints", 0)
    return ckpt.load_state(path)


def run(out: Path, resume: bool = False) -> dict:
    return train_policy(config(out), resume=resume, progress=False)


REFERENCE_EVENTS: list[tuple] = []  # ("normalize", seed, queries, responses) and ("train", reward model)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (its own person: pauses answered, never killed), with the normalisations and
    trainings of its reward models recorded in order (:data:`REFERENCE_EVENTS`)."""
    import rewards.train

    out = tmp_path_factory.mktemp("reference") / "run"
    events = REFERENCE_EVENTS
    events.clear()
    samples, train = rewards.train.policy_samples, rewards.train.train_reward_model

    def spy_samples(task, model, tokenizer, n, *, seed=0, **kw):
        q, r = samples(task, model, tokenizer, n, seed=seed, **kw)
        events.append(("normalize", seed, q, r))
        return q, r

    def spy_train(rm, *args, **kw):
        events.append(("train", rm))
        return train(rm, *args, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(OnlineLoop, "pause", lambda self: answer_all(self.store.path))
    mp.setattr(rewards.train, "policy_samples", spy_samples)
    mp.setattr(rewards.train, "train_reward_model", spy_train)
    try:
        run(out)
    finally:
        mp.undo()
    return out


def assert_same_run(out: Path, ref: Path) -> None:
    """The resumed run asked, used and learned exactly what the uninterrupted one did."""
    got, want = questions(out), questions(ref)
    ids = [q[0] for q in got]
    assert len(set(ids)) == len(ids), Counter(ids).most_common(3)  # no question asked twice
    strip = [q[1:] for q in got]
    assert strip == [q[1:] for q in want]  # the same questions, in the same order, the same answers
    assert metric_rows(out) == metric_rows(ref)
    a, b = final_state(out), final_state(ref)
    assert a["online"]["retrains"] == b["online"]["retrains"] == 2
    assert [r["labels"] for r in a["online"]["retrain_log"]] == [
        r["labels"] for r in b["online"]["retrain_log"]
    ]
    for name, t in b["state"]["trainable"].items():
        assert torch.equal(a["state"]["trainable"][name], t), name
    for name, t in b["online"]["reward_model"]["tensors"].items():
        assert torch.equal(a["online"]["reward_model"]["tensors"][name], t), name


def test_reference_run_shape(reference):
    state = final_state(reference)
    log = state["online"]["retrain_log"]
    assert [(r["retrain"], r["iteration"]) for r in log] == [(0, 0), (1, 1)]
    rows = metric_rows(reference)
    assert [r["online/labels_needed"] for r in rows] == [3, 7, 9]
    assert [r["online/retrains"] for r in rows] == [1, 2, 2]
    assert rows[-1]["online/requests"] == len(questions(reference))
    names = sorted(p.name for p in (reference / "checkpoints").iterdir())
    assert names == ["iter-0000002.rank0", "iter-0000003.rank0"]  # keep_checkpoints = 2


def test_each_retrain_normalises_before_and_after_training_on_fresh_samples(reference):
    events = REFERENCE_EVENTS
    assert [e[0] for e in events] == ["normalize", "train", "normalize"] * 2  # two retrains
    norms = [e for e in events if e[0] == "normalize"]
    assert len({e[1] for e in norms}) == 4  # a seed per (retrain, before/after)
    assert len({repr((e[2], e[3])) for e in norms}) == 4  # never the same prompts and samples twice
    log = final_state(reference)["online"]["retrain_log"]
    assert [(r["normalize"]["before"]["norm/seed"], r["normalize"]["after"]["norm/seed"]) for r in log] == [
        (norms[0][1], norms[1][1]),
        (norms[2][1], norms[3][1]),
    ]
    # after training, each reward model scores its "after" samples of rho with mean 0 and std 1 (§1.3)
    for (_, rm), (_, _, q, r) in zip(events[1::3], events[2::3]):
        scores = rm.score(q, r)
        assert abs(scores.mean()) < 1e-5 and abs(scores.std() - 1.0) < 1e-4


def test_killed_at_each_point_and_resumed_ends_as_the_uninterrupted_run(
    tmp_path, person, monkeypatch, reference
):
    """One run killed three times and resumed after each (each resume redoes what the kill cut short):
    a real kill -9 while it waits for its first labels, then, in process, inside the reward-model retrain
    before iteration 2, then between the two PPO minibatches of iteration 2."""
    import agents.loop
    import rewards.train

    out, trainings, steps, kill = tmp_path / "run", [], [], {"retrain": 0, "ppo": 0}

    # 1. kill -9 while waiting for the first labels (nobody answers the subprocess), after its questions
    first = sum("-i0-" in q[0] for q in questions(reference))
    flags = [f"--run.out_dir={out}", *(f for f in TINY if f != "--online.enabled=true")]
    threads = str(torch.get_num_threads())  # the same float arithmetic as this process's runs
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    cmd = [sys.executable, "-m", "agents.cli", "train-policy", "--config", "tiny_toy", "--online"]
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = subprocess.Popen([*cmd, "--no-progress", *flags], env=env, cwd=ROOT, stdout=err, stderr=err)
        deadline, asked = time.time() + 120, 0
        while asked < first and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
            if (out / "labels.db").exists():
                with ComparisonStore(out / "labels.db") as store:
                    asked = store.count()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "stderr.txt").read_text()[-2000:]
    with ComparisonStore(out / "labels.db") as store:
        assert store.count() == store.count(labelled=False) == first  # asked, none answered
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["iter-0000000.rank0"]  # before iteration 1
    assert answer_all(out / "labels.db", name="while-down") == first  # people answer while it is down

    train, grad_norm = rewards.train.train_reward_model, agents.loop.checked_grad_norm

    def train_hook(rm, items, cfg, **kw):
        trainings.append(len(items))
        if len(trainings) == kill["retrain"]:
            raise Killed("killed inside the reward-model retrain")
        return train(rm, items, cfg, **kw)

    def grad_norm_hook(params, iteration, loss, **kw):
        steps.append(iteration)
        if len(steps) == kill["ppo"]:
            raise Killed("killed between PPO minibatches")
        return grad_norm(params, iteration, loss, **kw)

    monkeypatch.setattr(rewards.train, "train_reward_model", train_hook)
    monkeypatch.setattr(agents.loop, "checked_grad_norm", grad_norm_hook)  # before each optimiser step

    # 2. resumed in process; killed inside retrain 1, before iteration 2
    kill["retrain"] = 2
    with pytest.raises(Killed, match="retrain"):
        run(out, resume=True)
    assert person.at == [1]  # the first labels were there: no wait before iteration 1
    assert trainings[0] == first  # retrain 0 used the answers that came in while the run was down
    assert steps == [0, 0] and final_state(out)["online"]["retrains"] == 1

    # 3. resumed: retrain 1 redone on the same labels (the count continued, not restarted); killed between
    # the two minibatches of iteration 2
    kill["ppo"] = 4
    with pytest.raises(Killed, match="PPO"):
        run(out, resume=True)
    assert trainings[2] == trainings[1] and steps == [0, 0, 1, 1]
    state = final_state(out)["online"]  # the checkpoint written right after the retrain
    assert state["retrains"] == 2 and [r["retrain"] for r in state["retrain_log"]] == [0, 1]

    # 4. resumed to the end: the retrain is not redone
    run(out, resume=True)
    assert len(trainings) == 3 and steps[4:] == [1, 1, 2, 2]
    with ComparisonStore(out / "labels.db") as store:
        assert sum(c.labeler == "while-down" for c in store.labelled()) == first
    assert_same_run(out, reference)


def test_a_request_cut_short_is_completed_not_repeated(tmp_path, monkeypatch):
    """A kill between the policy questions and the validation questions of one request: the resumed
    request stores exactly the missing ones, the store ends as after an uninterrupted request."""
    cfg = config(tmp_path / "run", "--online.validation_share=0.5")
    agent = build_agent(cfg)

    def loop(name: str) -> OnlineLoop:
        lp = OnlineLoop.from_config(agent, cfg, str(tmp_path / f"{name}.db"))
        lp.run_id = "0123456789ab"
        return lp

    ref = loop("ref")
    assert ref.request(6) == 6
    want = [(c.question_id, c.query, c.samples) for c in ref.store.all()]
    assert {q[0].rsplit("-", 1)[1][0] for q in want} == {"q", "v"}  # both kinds in this request
    killed, add = loop("killed"), ComparisonStore.add

    def killing_add(self, items):
        items = list(items)
        if items and items[0].question_id.rsplit("-", 1)[1].startswith("v"):
            raise Killed("killed before the validation questions were stored")
        return add(self, items)

    monkeypatch.setattr(ComparisonStore, "add", killing_add)
    with pytest.raises(Killed):
        killed.request(6)
    monkeypatch.undo()
    killed.close()
    resumed = loop("killed")
    labelled, pending = resumed.counts()
    stored = resumed.request(6 - labelled - pending)  # what before_iteration asks: counted from the store
    assert 0 < stored < 6
    assert [(c.question_id, c.query, c.samples) for c in resumed.store.all()] == want
    assert resumed.requests == 6
    ref.close()
    resumed.close()


def test_resume_refuses_a_checkpoint_without_online_state(tmp_path, reference):
    """A checkpoint of an online run written before online resume existed has no loop state."""
    from agents.config import ConfigError

    path, _ = ckpt.latest_intact(reference / "checkpoints", 0)
    state = ckpt.load_state(path)
    del state["online"]
    out = tmp_path / "run"
    ckpt.save_state(out / "checkpoints" / path.name, state)
    with pytest.raises(ConfigError, match="holds no online-loop state"):
        run(out, resume=True)


def test_recover_puts_back_a_checkpoint_a_kill_caught_while_it_was_replaced(tmp_path):
    """An online run re-saves a checkpoint after a retrain: a kill between moving the old folder away and
    renaming the new one into place leaves only the old one, under a temporary name; resume puts it back."""
    d = tmp_path / "checkpoints"
    path = ckpt.save_state(ckpt.checkpoint_path(d, 3, 0), {"x": torch.ones(2)})
    path.rename(d / ".iter-0000003.rank0.old-0123456789ab")
    (d / ".iter-0000003.rank0.tmp-0123456789ab").mkdir()  # the new one, half written
    other = d / ".iter-0000003.rank1.old-0123456789ab"  # another rank's: not ours to touch
    other.mkdir()
    assert ckpt.latest_intact(d, 0)[0] is None
    ckpt.recover(d, 0)
    assert ckpt.latest_intact(d, 0)[0] == path and torch.equal(ckpt.load_state(path)["x"], torch.ones(2))
    assert sorted(p.name for p in d.iterdir()) == [other.name, path.name]
