"""``train-policy --online --resume``: a tiny online run killed at each of the three points the issue names
(while waiting for labels, inside a reward-model retrain, between two PPO minibatches) resumes from its
last checkpoint and ends exactly as an uninterrupted run given the same answers: the same questions asked
once each, the same labels used by each retrain, the retrain count continued, the same metrics and
weights. The kills are simulated in process (a ``Killed`` raised from a hook, which no ``except Exception``
catches); one test kills a real process with SIGKILL.

Labels come from a scripted person (``labeler = "human"``): whenever the loop pauses for labels, every
pending question is answered by the mock sentiment labeler (deterministic), as people answering in the
labeling app would, so the killed, resumed and uninterrupted runs see the same answers.
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
    """Whenever the loop pauses for labels, the person answers everything pending. ``person.kill_at``:
    the pause (0-based count) at which the process is killed instead."""

    class Person:
        pauses = 0
        kill_at: int | None = None

    def pause(self):
        n, Person.pauses = Person.pauses, Person.pauses + 1
        if n == Person.kill_at:
            raise Killed(f"killed while waiting for labels (pause {n})")
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


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (its own person: pauses answered, never killed)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    mp = pytest.MonkeyPatch()
    mp.setattr(OnlineLoop, "pause", lambda self: answer_all(self.store.path))
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


def test_kill_while_waiting_for_labels_then_answers_arrive_while_down(tmp_path, person, reference):
    out = tmp_path / "run"
    person.kill_at = 1  # the second pause: before iteration 2, its questions asked, none answered yet
    with pytest.raises(Killed, match="waiting for labels"):
        run(out)
    with ComparisonStore(out / "labels.db") as store:
        asked = store.count()
        pending = store.count(labelled=False)
    assert pending > 0
    # people answer in the labeling app while the run is down
    assert answer_all(out / "labels.db", name="while-down") == pending
    pauses = person.pauses
    run(out, resume=True)
    assert person.pauses == pauses  # the labels were there: the resumed run did not wait
    log = final_state(out)["online"]["retrain_log"]
    assert log[1]["iteration"] == 1 and log[1]["labels"] == asked  # the answers given while down, used
    with ComparisonStore(out / "labels.db") as store:
        assert sum(c.labeler == "while-down" for c in store.labelled()) == pending
    assert_same_run(out, reference)


def test_kill_inside_a_reward_model_retrain(tmp_path, person, monkeypatch, reference):
    import rewards.train

    out, calls = tmp_path / "run", []
    train = rewards.train.train_reward_model

    def killing_train(rm, items, cfg, **kw):
        calls.append(len(items))
        if len(calls) == 2:  # retrain 1, before iteration 2: halfway through, say
            raise Killed("killed inside the reward-model retrain")
        return train(rm, items, cfg, **kw)

    monkeypatch.setattr(rewards.train, "train_reward_model", killing_train)
    with pytest.raises(Killed, match="retrain"):
        run(out)
    assert final_state(out)["online"]["retrains"] == 1  # the newest checkpoint: iteration 1, one retrain
    asked = len(questions(out))
    run(out, resume=True)
    # retrain 1 redone on the same labels (none asked twice, the store the killed run left); not restarted
    assert calls == [calls[0], calls[1], calls[1]] and calls[1] == asked
    assert [r["retrain"] for r in final_state(out)["online"]["retrain_log"]] == [0, 1]
    assert_same_run(out, reference)


def test_kill_between_ppo_minibatches(tmp_path, person, monkeypatch, reference):
    import agents.ppo
    import rewards.train

    out, steps, trainings = tmp_path / "run", [], []
    grad_norm, train = agents.ppo.checked_grad_norm, rewards.train.train_reward_model

    def killing_grad_norm(params, iteration, loss):
        steps.append(iteration)
        if len(steps) == 4:  # iteration 2, after its first minibatch's optimiser step
            raise Killed("killed between PPO minibatches")
        return grad_norm(params, iteration, loss)

    def counting_train(*args, **kw):
        trainings.append(1)
        return train(*args, **kw)

    monkeypatch.setattr(agents.ppo, "checked_grad_norm", killing_grad_norm)
    monkeypatch.setattr(rewards.train, "train_reward_model", counting_train)
    with pytest.raises(Killed, match="PPO"):
        run(out)
    assert steps == [0, 0, 1, 1] and len(trainings) == 2
    run(out, resume=True)
    # resumed from the checkpoint written right after retrain 1: the retrain is not redone
    assert len(trainings) == 2 and steps[4:] == [1, 1, 2, 2]
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


def test_sigkill_then_resume(tmp_path):
    """A real kill -9 of ``textenv train-policy --online`` (the mock labeler answering) after its second
    checkpoint, then ``--resume``: the run finishes, asks nothing twice, and continues the retrains."""
    out = tmp_path / "run"
    flags = [f"--run.out_dir={out}", *TINY, "--online.labeler=sentiment"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "agents.cli",
        "train-policy",
        "--config",
        "tiny_toy",
        "--no-progress",
        *flags,
    ]
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        target = out / "checkpoints" / "iter-0000001.rank0"
        deadline = time.time() + 120
        while not target.is_dir() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "stderr.txt").read_text()[-2000:]
    done = sorted(p.name for p in (out / "checkpoints").glob("iter-*"))
    assert "iter-0000003.rank0" not in done, f"the run finished before the kill ({done}); nothing was tested"
    before = questions(out)
    cfg = load_config("tiny_toy", [*flags])
    summary = train_policy(cfg, resume=True, progress=False)
    assert summary["iterations"] == 3 and summary["start"] >= 1
    after = questions(out)
    ids = [q[0] for q in after]
    assert len(set(ids)) == len(ids) and after[: len(before)] == before
    state = final_state(out)["online"]
    assert state["retrains"] == 2 and [r["retrain"] for r in state["retrain_log"]] == [0, 1]
    assert state["counts"]["requests"] == len(after)
