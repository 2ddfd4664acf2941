"""The demo pipeline end to end at a tiny size (a random tiny GPT-2): labels -> reward model -> PPO -> report."""

import json

import pytest

from agents.demo import HEADLINE, DemoConfig, finished_seed, mean_row, run_pipeline, run_seeds


def _tiny(tmp_path) -> DemoConfig:
    return DemoConfig(
        model="tiny-gpt2",
        out_dir=str(tmp_path / "demo"),
        questions=8,
        heldout_questions=4,
        query_length=8,
        response_length=4,
        rm_epochs=2,
        normalize_samples=8,
        eval_prompts=4,
        ppo_overrides=(
            "--run.iterations=2",
            "--ppo.batch_size=4",
            "--policy.top_blocks=1",
            "--run.tensorboard=false",
        ),
    )


def test_demo_pipeline_tiny(tmp_path, capsys):
    result = run_pipeline(_tiny(tmp_path))
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary == {**summary, **{k: result[k] for k in summary}}
    assert (tmp_path / "demo" / "reward_model" / "reward_model.json").exists()
    assert (tmp_path / "demo" / "ppo" / "curves.png").exists()
    out = capsys.readouterr().out
    assert "held-out reward-model score" in out and "comparisons with the initial policy" in out
    assert 0.0 <= summary["win_rate_vs_initial"] <= 1.0 and summary["eval_prompts"] == 4
    assert summary["rm_heldout_questions"] == 4
    phases = summary["phase_seconds"]
    assert set(phases) == {
        "questions",
        "normalize",
        "train",
        "evaluate",
        "ppo",
        "ppo_sample",
        "ppo_score",
    } | {
        "ppo_reference",
        "ppo_update",
    }
    assert all(v > 0 for v in phases.values()) and sum(phases.values()) < summary["seconds"] + phases["ppo"]
    assert summary["kl_off_target"] == pytest.approx(
        abs(summary["kl_heldout"] - summary["target_kl"]) / summary["target_kl"]
    )


def test_the_heldout_kl_is_the_summed_log_ratio_of_the_sampled_tokens():
    """evaluate_policy's KL against a plain loop: per response, the sum over its tokens of log pi - log rho
    (both tempered), from token-by-token full forward passes; zero when the reference is the policy."""
    import torch

    from agents.demo import evaluate_policy
    from agents.policy import PolicyWithValue
    from rewards.labelers import SentimentLabeler
    from textenv.models import load_causal_lm

    torch.manual_seed(0)
    lm, tok = load_causal_lm("tiny-gpt2")
    other, _ = load_causal_lm("tiny-gpt2")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    policy, ref = (PolicyWithValue(m, tok.pad_token_id, 0.7) for m in (other, lm))

    class Scores:  # a reward model stand-in: evaluate_policy only calls score
        def score(self, queries, responses, batch_size=64):
            return [0.0] * len(queries)

    drawn = []  # (context row without its left padding, response) as the policy sampled them
    sample = policy.sample

    def recording(context, length, generator=None):
        responses, logprobs = sample(context, length, generator=generator)
        for c, r in zip(context.tolist(), responses.tolist()):
            drawn.append(([t for t in c if t != tok.pad_token_id], r))
        return responses, logprobs

    policy.sample = recording
    overrides = {
        "query_length": 8,
        "response_length": 4,
        "min_query_length": 8,
        "truncate_token": None,
        "truncate_after": 0,
    }
    args = (Scores(), SentimentLabeler(), tok, overrides, 6, 3)
    out = evaluate_policy(policy, *args, reference=ref)
    assert len(drawn) == 6
    assert evaluate_policy(ref, *args, reference=ref)["kl"] == pytest.approx(0.0, abs=1e-5)
    assert "kl" not in evaluate_policy(policy, *args)
    # the plain loop: the same samples, scored token by token without a cache
    total = []
    for q, r in drawn:
        kl = 0.0
        for t in range(len(r)):
            ids = torch.tensor([q + r[:t]])
            lp, lr = (torch.log_softmax(m(ids).logits[0, -1] / 0.7, -1)[r[t]] for m in (other, lm))
            kl += float((lp - lr).detach())
        total.append(kl)
    assert out["kl"] == pytest.approx(sum(total) / len(total), rel=1e-4, abs=1e-4)


def test_demo_seeds_append_one_row_each_and_the_mean(tmp_path, capsys):
    results = tmp_path / "results" / "demo.jsonl"
    rows, mean = run_seeds(_tiny(tmp_path), [0, 1], str(results))
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert [x["row"] for x in lines] == ["seed", "seed", "mean"] and lines[2] == mean
    assert [x["seed"] for x in lines[:2]] == [0, 1] and all(
        x["git"] and x["benchmark"] == "demo" for x in lines
    )
    assert (tmp_path / "demo" / "seed-0" / "summary.json").exists()
    assert (tmp_path / "demo" / "seed-1" / "summary.json").exists()
    import tomllib

    for seed in (0, 1):  # each seed drives PPO too
        cfg = tomllib.loads((tmp_path / "demo" / f"seed-{seed}" / "ppo" / "config.toml").read_text())
        assert cfg["ppo"]["seed"] == seed
    for key in HEADLINE:
        values = [r[key] for r in rows]
        assert mean[f"{key}_mean"] == pytest.approx(sum(values) / 2)
        assert mean[f"{key}_sd"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    assert "over seeds [0, 1]: win rate" in capsys.readouterr().out
    assert mean_row(rows[:1])["win_rate_vs_initial_sd"] == 0.0
    with pytest.raises(ValueError, match="distinct seeds"):
        run_seeds(_tiny(tmp_path), [1, 1])


def test_demo_skip_done_runs_only_the_seeds_without_a_finished_run(tmp_path, capsys):
    """After a kill (seed 1 left no summary.json), the same command with ``skip_done`` reruns only seed 1:
    seed 0's row is not appended again, and the mean equals the uninterrupted run's (deterministic)."""
    import dataclasses

    results = tmp_path / "r.jsonl"
    base = _tiny(tmp_path)
    _, mean = run_seeds(base, [0, 1], str(results))
    (tmp_path / "demo" / "seed-1" / "summary.json").unlink()  # killed before seed 1 ended
    _, again = run_seeds(base, [0, 1], str(results), skip_done=True)
    assert "seed 0: finished before" in capsys.readouterr().out
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert [(x["row"], x.get("seed")) for x in lines] == [
        *[("seed", 0), ("seed", 1), ("mean", None)],
        *[("seed", 1), ("mean", None)],
    ]
    same = [k for k in mean if k != "time" and not k.startswith("seconds")]
    assert {k: again[k] for k in same} == {k: mean[k] for k in same}
    seed0 = dataclasses.replace(base, seed=0, out_dir=str(tmp_path / "demo" / "seed-0"))
    assert finished_seed(seed0)["seed"] == 0
    assert finished_seed(dataclasses.replace(seed0, questions=9)) is None  # other settings: run again
    # another PPO config (an override here; an edited preset the same way): run again
    other_ppo = (*seed0.ppo_overrides, "--optim.lr=2e-4")
    assert finished_seed(dataclasses.replace(seed0, ppo_overrides=other_ppo)) is None
    moved = tmp_path / "moved"  # the folder itself is not a setting
    (tmp_path / "demo" / "seed-0").rename(moved)
    assert finished_seed(dataclasses.replace(seed0, out_dir=str(moved)))["seed"] == 0
    (moved / "summary.json").write_text("[1, 2]")  # not a summary: run again, no crash
    assert finished_seed(dataclasses.replace(seed0, out_dir=str(moved))) is None
    assert again["seed_commits"] == sorted({x["git"] for x in lines[:2]})


def test_a_rerun_deletes_the_old_summary_first(tmp_path):
    """A rerun killed half way must not leave the previous run's summary.json, the mark --skip-done
    trusts, beside its own half-written files (here the rerun fails at its PPO config)."""
    import dataclasses

    from agents.config import ConfigError

    cfg = _tiny(tmp_path)
    run_pipeline(cfg)
    assert finished_seed(cfg) is not None
    bad = dataclasses.replace(cfg, ppo_overrides=(*cfg.ppo_overrides, "--ppo.batch_size=true"))
    with pytest.raises(ConfigError, match=r"ppo\.batch_size = True"):
        run_pipeline(bad)
    assert not (tmp_path / "demo" / "summary.json").exists() and finished_seed(cfg) is None


def test_demo_cli_refuses_a_bad_rm_layer(capsys):
    from agents.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["demo", "--rm-layer", "top"])
    assert exc.value.code == 2
    assert "'top' is not a block number; give an int >= 1 or 'final'" in capsys.readouterr().err


def test_demo_cli_refuses_repeated_seeds(capsys):
    from agents.cli import main

    assert main(["demo", "--seeds", "1", "1"]) == 2
    assert "--seeds needs distinct seeds, got [1, 1]; e.g. --seeds 0 1 2." in capsys.readouterr().err
