"""The README's "Bring your own algorithm" examples run (on a tiny model, fewer iterations)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def section_blocks(title: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_reinforce_loop_example_runs(capsys):
    (code,) = [b for b in section_blocks("Bring your own algorithm") if "REINFORCE" in b or "R.mean()" in b]
    code = code.replace('"smollm2-135m"', '"tiny-gpt2"').replace("range(10)", "range(2)")
    code = code.replace(
        'TextVectorEnv("BookSentiment-v0", num_envs=16,',
        'TextVectorEnv("BookSentiment-v0", num_envs=4, response_length=4, truncate_after=0,',
    )
    assert "tiny-gpt2" in code and "range(2)" in code and "response_length=4" in code
    exec(compile(code, "README:reinforce", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("0 ")


def test_sb3_example_runs(tmp_path, monkeypatch):
    (code,) = [b for b in section_blocks("Bring your own algorithm") if "stable_baselines3" in b]
    code = code.replace('"smollm2-135m"', '"tiny-gpt2"')
    code = code.replace(
        "dict(response_length=24)", 'dict(response_length=4, truncate_after=0, tokenizer="tiny-gpt2")'
    )
    code = code.replace("n_steps=24, batch_size=96", "n_steps=4, batch_size=32").replace("24 * 8 * 10", "32")
    assert code.count("tiny-gpt2") == 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README:sb3", "exec"), namespace)
    assert (tmp_path / "runs" / "sb3_ppo.zip").exists()
    model = namespace["model"]
    assert model.num_timesteps == model.n_steps * model.n_envs  # learn(32) runs exactly one whole rollout


def test_ppo_python_example_runs():
    (code,) = [b for b in section_blocks("PPO agent (`agents/`)") if "PPOAgent(" in b]
    code = code.replace('"smollm2-135m"', '"tiny-gpt2"').replace("num_envs=64", "num_envs=8")
    code = code.replace("batch_size=64", "batch_size=8").replace(
        'reward_fn="sentiment")', 'reward_fn="sentiment", response_length=4, truncate_after=0)'
    )
    assert code.count("=8") == 2 and "tiny-gpt2" in code
    namespace: dict = {}
    exec(compile(code, "README:ppo", "exec"), namespace)
    metrics = namespace["metrics"]
    assert metrics["iteration"] == 1 and metrics["objective/kl"] == pytest.approx(0.0, abs=1e-4)
    assert namespace["agent"].config.optim.lr == 1e-5 and namespace["agent"].kl_ctl.value < 0.15


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
