"""train-sft: the loss is on the summary tokens only, it falls, the best checkpoint is a loadable model."""

import json

import numpy as np
import pytest
import torch

from agents.cli import main
from agents.evaluate import evaluate
from agents.sft import SFTConfig, batch_loss, cosine_lr, examples, train_sft
from textenv.models import load_causal_lm


def test_examples_and_loss_mask():
    lm, tok = load_causal_lm("tiny-gpt2", seed=0)
    data = examples("CNNDMSummarize-v0", tok, "train", limit=3, query_length=32)
    assert len(data) == 3
    context, target = data[0]
    assert (
        context.shape == (len(context),) and target[-1] == tok.encode("\n")[0]
    )  # ends with the rule's token
    # the loss equals a plain loop over the target tokens
    with torch.no_grad():
        got = float(batch_loss(lm, tok.pad_token_id, data[:1]))
        real = [int(t) for t in context if t != tok.pad_token_id]
        logits = lm(torch.tensor([real + target])).logits[0]
        want = np.mean(
            [-torch.log_softmax(logits[len(real) - 1 + i], -1)[t].item() for i, t in enumerate(target)]
        )
    assert got == pytest.approx(want, rel=1e-4)
    assert cosine_lr(1.0, 0, 10) == 1.0 and cosine_lr(1.0, 10, 10) == pytest.approx(0.0)
    assert cosine_lr(1.0, 5, 10) == pytest.approx(0.5)


def test_train_sft_lowers_the_validation_loss_and_saves_a_model(tmp_path):
    cfg = SFTConfig(
        task="CNNDMSummarize-v0",
        model="tiny-gpt2",
        out=str(tmp_path / "sft"),
        lr=3e-3,
        batch_size=4,
        max_examples=48,
        valid_examples=8,
        eval_every=4,
        overrides={"query_length": 32},
    )
    out = train_sft(cfg, progress=False)
    assert out["steps"] == 12 and out["best_valid_loss"] < out["initial_valid_loss"]
    assert (
        json.loads((tmp_path / "sft" / "sft.json").read_text())["best_valid_loss"] == out["best_valid_loss"]
    )
    lm, tok = load_causal_lm(str(tmp_path / "sft"))
    assert lm.config.n_layer == 2
    report = evaluate("CNNDMSummarize-v0", [str(tmp_path / "sft")], n=3, query_length=32)
    assert report["systems"][str(tmp_path / "sft")]["n"] == 3
    with pytest.raises(ValueError, match="lr"):
        SFTConfig(lr=0)


def test_cli(tmp_path, capsys):
    assert (
        main(
            [
                "train-sft",
                "--model",
                "tiny-gpt2",
                "--out",
                str(tmp_path / "s"),
                "--max-examples",
                "8",
                "--valid-examples",
                "4",
                "--batch-size",
                "4",
                "--query-length",
                "24",
            ]
        )
        == 0
    )
    assert "validation loss" in capsys.readouterr().out
