"""textenv evaluate on tiny models and the embedded data: baselines, paired prompts, win rates, run folders."""

import json

import pytest

from agents.cli import main
from agents.evaluate import evaluate, generate, load_system
from agents.train import load_config, train_policy


def test_baselines_and_a_policy_on_cnndm():
    out = evaluate("CNNDMSummarize-v0", ["tiny-gpt2", "lead3", "reference"], n=6, labeler="summarization")
    ref, lead, tiny = (out["systems"][k] for k in ("reference", "lead3", "tiny-gpt2"))
    assert ref["rouge/ravg"] == pytest.approx(100.0)  # the reference against itself
    assert lead["novel_sentences"] == 0.0 and lead["copies_start"] == 1.0  # lead-3 copies the opening
    assert lead["rouge/ravg"] > tiny["rouge/ravg"]  # random tiny model < lead-3
    assert out["win_rate_vs_tiny-gpt2"]["reference"] == 1.0
    assert "| prompt | tiny-gpt2 | lead3 | reference |" in out["samples_markdown"]


def test_same_prompts_for_every_system_and_books_scores():
    lm, tok = load_system("tiny-gpt2")
    a = generate("tiny-gpt2", "BookSentiment-v0", 4, split="valid", seed=3, tokenizer=tok, model=lm)
    b = generate("tiny-gpt2", "BookSentiment-v0", 4, split="valid", seed=3, tokenizer=tok, model=lm)
    assert [r["query"] for r in a] == [r["query"] for r in b]
    out = evaluate("BookSentiment-v0", ["tiny-gpt2"], n=4, split="valid")
    assert -1.0 <= out["systems"]["tiny-gpt2"]["score"] <= 1.0  # VADER compound
    with pytest.raises(ValueError, match="summarization task"):
        evaluate("BookSentiment-v0", ["lead3"], n=2)


def test_a_train_policy_run_folder_is_a_system(tmp_path, capsys):
    cfg = load_config(
        "tiny_toy", [f"--run.out_dir={tmp_path / 'run'}", "--run.iterations=1", "--run.plot=false"]
    )
    train_policy(cfg, progress=False)
    assert (
        main(
            [
                "evaluate",
                "--task",
                "BookSentiment-v0",
                "--system",
                str(tmp_path / "run"),
                "--n",
                "3",
                "--split",
                "valid",
                "--out",
                str(tmp_path / "eval.json"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["systems"][str(tmp_path / "run")]["n"] == 3
