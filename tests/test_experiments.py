"""Each experiment script runs at a tiny size (a random tiny GPT-2, a few episodes) so that it cannot rot."""

import json

import pytest


def test_exp_mock_sentiment_and_label_efficiency_tiny(tmp_path):
    from benchmarks import exp_label_efficiency, exp_mock_sentiment

    common = [
        "--model",
        "tiny-gpt2",
        "--iterations",
        "1",
        "--batch",
        "4",
        "--heldout",
        "4",
        "--eval-prompts",
        "4",
        "--query-length",
        "8",
        "--response-length",
        "4",
        "--out",
        "-",
    ]
    rows = exp_mock_sentiment.main(
        [*common, "--labels", "8", "--out-dir", str(tmp_path / "m"), "--plot", str(tmp_path / "m.png")]
    )
    assert [r["setting"] for r in rows] == ["direct", "rm-8"]
    assert all(0.0 <= r["win_rate_vs_initial"] <= 1.0 for r in rows) and (tmp_path / "m.png").exists()
    assert json.loads((tmp_path / "m" / "rm-8" / "curve.jsonl").read_text().splitlines()[0])["episodes"] == 4
    rows = exp_label_efficiency.main(
        [
            *common,
            "--labels",
            "8",
            "12",
            "--out-dir",
            str(tmp_path / "e"),
            "--plot",
            str(tmp_path / "e1.png"),
            "--win-plot",
            str(tmp_path / "e.png"),
        ]
    )
    assert [r["labels"] for r in rows] == [0, 8, 12] and (tmp_path / "e.png").exists()
    assert not any(r["stopped_at_target"] for r in rows)


def test_experiments_stop_each_run_at_its_kl_target(tmp_path):
    """``--stop-at-target``: every setting's PPO run ends after the first iteration whose KL reaches the
    target (a KL budget), well before ``--iterations``; the row says so; ``--rm-epochs`` reaches the head."""
    from benchmarks import exp_mock_sentiment

    rows = exp_mock_sentiment.main(
        [
            *"--model tiny-gpt2 --batch 4 --heldout 4 --eval-prompts 4 --query-length 8 --response-length 4".split(),
            *"--iterations 6 --target-kl 1e-6 --stop-at-target --lr 1e-2 --labels 8 --rm-epochs 2 --out -".split(),
            *["--out-dir", str(tmp_path / "m"), "--plot", str(tmp_path / "m.png")],
        ]
    )
    for r in rows:
        curve = [
            json.loads(x) for x in (tmp_path / "m" / r["setting"] / "curve.jsonl").read_text().splitlines()
        ]
        assert r["stopped_at_target"] and r["rm_epochs"] == 2 and len(curve) < 6
        assert curve[-1]["kl"] >= 1e-6 and all(c["kl"] < 1e-6 for c in curve[:-1])


def test_exp_reward_vs_kl_tiny(tmp_path):
    from benchmarks import exp_reward_vs_kl

    rows = exp_reward_vs_kl.main(
        [
            "--model",
            "tiny-gpt2",
            "--targets",
            "2",
            "--iterations",
            "1",
            "--batch",
            "4",
            "--prompts",
            "3",
            "--samples",
            "4",
            "--query-length",
            "8",
            "--response-length",
            "4",
            "--out",
            "-",
            "--out-dir",
            str(tmp_path / "r"),
            "--plot",
            str(tmp_path / "r.png"),
            "--final-samples",
            "2",
            "--eval-prompts",
            "3",
        ]
    )
    assert len(rows) == 1 and rows[0]["target_kl"] == 2 and (tmp_path / "r.png").exists()
    assert rows[0]["ppo_point"] == "final policy, frontier prompts" and rows[0]["final_samples"] == 2
    assert 0 <= rows[0]["win_rate_vs_initial"] <= 1 and rows[0]["eval_prompts"] == 3
    assert all(isinstance(rows[0][k], float) for k in ("ppo_kl", "ppo_reward", "frontier_reward_at_ppo_kl"))
    r = rows[0]
    gain = r["frontier_reward_at_ppo_kl"] - r["rho_reward"]
    assert r["frontier_fraction"] == (
        pytest.approx((r["ppo_reward"] - r["rho_reward"]) / gain) if gain > 0 else None
    )


def test_the_final_point_of_the_initial_policy_is_rho_itself():
    """final_point measures a policy where the frontier is: rho's own policy has KL 0 there, and its
    reward is the mock reward of its samples on the frontier's prompts."""
    import argparse
    import math
    import types

    from agents.policy import PolicyWithValue
    from benchmarks.exp_reward_vs_kl import TASK, final_point
    from benchmarks.experiments import fixed_length_overrides
    from textenv.models import load_causal_lm
    from textenv.task import make_task

    lm, tok = load_causal_lm("tiny-gpt2")
    overrides = fixed_length_overrides(8, 4)
    task = make_task(TASK, tok, **overrides)
    agent = types.SimpleNamespace(policy=PolicyWithValue(lm, task.pad_id, 0.7, vocab_size=task.vocab_size))
    args = argparse.Namespace(prompts=3, final_samples=2, seed=0, temperature=0.7)
    kl, reward = final_point(agent, lm, tok, args, overrides)
    assert kl == pytest.approx(0.0, abs=1e-5) and math.isfinite(reward)


@pytest.mark.slow
def test_exp_cnndm_tiny(tmp_path):
    from benchmarks import exp_cnndm

    result = exp_cnndm.main(
        [
            "--model",
            "tiny-gpt2",
            "--query-length",
            "48",
            "--response-length",
            "8",
            "--sft-examples",
            "8",
            "--labels",
            "4",
            "--iterations",
            "1",
            "--batch",
            "4",
            "--eval-n",
            "3",
            "--out",
            "-",
            "--out-dir",
            str(tmp_path / "c"),
        ]
    )
    assert set(result["systems"]) == {
        "lead-3",
        "zero-shot",
        "supervised",
        "RL from mock labels",
        "supervised + RL",
    }
    assert result["systems"]["lead-3"]["copies_start"] == 1.0
    wins = result["r_avg_win_rate_vs_zero_shot"]
    assert set(wins) == {"lead-3", "supervised", "RL from mock labels", "supervised + RL"}
    assert all(0.0 <= w <= 1.0 for w in wins.values())


def test_win_rate_vs_initial_compares_responses_to_the_same_prompt():
    from benchmarks.experiments import paired_win_rate, responses
    from rewards.labelers import SentimentLabeler
    from textenv.models import load_causal_lm

    lm, tok = load_causal_lm("tiny-gpt2")
    kw = dict(
        seed=3, temperature=1.0, query_length=8, response_length=4, min_query_length=4, truncate_after=0
    )
    a = responses(lm, tok, "MockSentiment-v0", 6, sample_seed=1, **kw)
    b = responses(lm, tok, "MockSentiment-v0", 6, sample_seed=2, **kw)
    assert [q for q, _ in a] == [q for q, _ in b] and [r for _, r in a] != [r for _, r in b]
    judge = SentimentLabeler()
    assert paired_win_rate(judge, a, a) == (0.5, 0.0)  # every pair a tie: one half each, not a win
    happy = [(q, "a wonderful happy day") for q, _ in a]
    sad = [(q, "a terrible sad day") for q, _ in a]
    assert paired_win_rate(judge, happy, sad) == (1.0, 0.0)
    mixed = happy[:3] + sad[3:]
    rate, se = paired_win_rate(judge, mixed, sad)
    assert rate == 0.75 and se == pytest.approx(0.25 / 6**0.5)  # wins 3, ties 3
    with pytest.raises(
        ValueError, match=r"the same number \(>= 1\) of responses from both policies, got 6 and 5"
    ):
        paired_win_rate(judge, a, a[:5])
    with pytest.raises(ValueError, match="unpaired responses"):
        paired_win_rate(
            judge, a, responses(lm, tok, "MockSentiment-v0", 6, sample_seed=1, **{**kw, "seed": 4})
        )


def test_the_experiment_seed_drives_ppo_too(tmp_path):
    """``--seed`` reaches PPO's own seed (sampling, minibatch order): a second seed of an experiment is a
    second PPO run, not the first one again with other labels."""
    from benchmarks.experiments import ppo_config

    kw = dict(task="MockSentiment-v0", model="tiny-gpt2")
    assert ppo_config(tmp_path / "a", **kw).ppo.seed == 0
    assert ppo_config(tmp_path / "b", seed=3, **kw).ppo.seed == 3


def test_exp_reward_vs_kl_refuses_a_stop_window_under_one(capsys):
    from benchmarks import exp_reward_vs_kl

    with pytest.raises(SystemExit) as exc:
        exp_reward_vs_kl.parse_args(["--stop-at-target", "--stop-window", "0"])
    assert exc.value.code == 2
    assert "--stop-window 0: give a number of iterations, at least 1" in capsys.readouterr().err
    assert exp_reward_vs_kl.parse_args(["--stop-at-target", "--stop-window", "3"]).stop_window == 3
