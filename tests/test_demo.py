"""The demo pipeline end to end at a tiny size (a random tiny GPT-2): labels -> reward model -> PPO -> report."""

import json

from agents.demo import DemoConfig, run_pipeline


def test_demo_pipeline_tiny(tmp_path, capsys):
    cfg = DemoConfig(
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
    result = run_pipeline(cfg)
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary == {**summary, **{k: result[k] for k in summary}}
    assert (tmp_path / "demo" / "reward_model" / "reward_model.json").exists()
    assert (tmp_path / "demo" / "ppo" / "curves.png").exists()
    assert "held-out reward-model score" in capsys.readouterr().out
