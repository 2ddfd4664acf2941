"""benchmarks.seeds: several seeds of an experiment summarised from its JSON lines, checked against
hand-computed values, and its refusals."""

import json
import math

import numpy as np
import pytest

from benchmarks import seeds as S


def rows():
    out = []
    for seed, (w32, w128) in enumerate([(0.50, 0.70), (0.56, 0.80), (0.53, 0.72)]):
        extra = {} if seed == 0 else {"seed": seed}  # seed 0's row predates the field
        out.append({"labels": 32, "win_rate_vs_initial": w32, "win_rate_se": 0.03, "git": "a", **extra})
        out.append({"labels": 128, "win_rate_vs_initial": w128, "win_rate_se": 0.02, "git": "a", **extra})
    return out


def test_means_pooled_errors_and_paired_differences_match_a_hand_computation():
    s = S.summarize(rows(), "labels")
    first, second = s["settings"]
    assert first["seeds"] == [0, 1, 2] and first["n"] == 3
    assert first["win_rate_vs_initial"]["mean"] == pytest.approx(0.53)
    assert first["win_rate_vs_initial"]["sd"] == pytest.approx(0.03)
    assert first["win_rate_pooled_se"] == pytest.approx(math.sqrt(3 * 0.03**2) / 3)
    (adj,) = s["adjacent"]
    assert adj["difference"] == pytest.approx(0.74 - 0.53)
    assert adj["pooled_se"] == pytest.approx(math.hypot(0.03 / math.sqrt(3), 0.02 / math.sqrt(3)))
    d = np.array([0.20, 0.24, 0.19])
    assert adj["paired"] == pytest.approx(list(d))
    assert adj["in_paired_se"] == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(3)))
    table = S.report(s)
    assert "| 32 | 0, 1, 2 | 53.0 ± 3.0% |" in table and "| 32 -> 128 | +21.0 points |" in table


def test_experiment_2_rows_get_the_share_of_the_frontier_reward(tmp_path):
    path = tmp_path / "r.jsonl"
    lines = [
        {"target_kl": 2.0, "ppo_reward": 1.0, "frontier_reward_at_ppo_kl": 2.5, "lr": 7.5e-5, "seed": 1},
        {"target_kl": 2.0, "ppo_reward": 9.0, "frontier_reward_at_ppo_kl": 2.5, "lr": 1.5e-4, "seed": 1},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    s = S.main([str(path), "--by", "target_kl", "--where", "lr=7.5e-05"])
    assert s["settings"][0]["frontier_reward_share"]["values"] == [pytest.approx(0.4)]


def test_a_seed_counts_once_and_bad_arguments_are_named(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"two rows with labels=32 and seed 0 .*choose one with --where"):
        S.summarize([*rows(), rows()[0]], "labels")
    with pytest.raises(ValueError, match=r"a row has no field 'label' .*pass --by one of them"):
        S.summarize(rows(), "label")
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(rows()[0]) + "\n")
    with pytest.raises(SystemExit):
        S.main([str(path), "--by", "labels", "--where", "lr"])
    assert "--where 'lr': write FIELD=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        S.main([str(path), "--by", "labels", "--where", "git=zzz"])
    assert "no rows in" in capsys.readouterr().err


def test_the_plot_draws_the_means_and_the_settings_apart(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(
        "benchmarks.experiments.plot", lambda path, curves, *a, **kw: drawn.update(curves=curves, **kw)
    )
    S.plot_win_rates(S.summarize(rows(), "labels"), tmp_path / "p.png", ["128=RL"], True, "t")
    (line,) = drawn["curves"].values()
    assert line == [(32, pytest.approx(0.53))]
    assert list(drawn["points"]) == ["RL (drawn right of the grid)"]
    x, y, se = drawn["points"]["RL (drawn right of the grid)"]
    assert (x, y, se) == (pytest.approx(32 * 1.3), pytest.approx(0.74), pytest.approx(0.02 / math.sqrt(3)))
    with pytest.raises(ValueError, match=r"every setting is in --apart"):
        S.plot_win_rates(S.summarize(rows(), "labels"), tmp_path / "p.png", ["32", "128"], False, "t")


def test_a_broken_line_is_named(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(rows()[0]) + "\n{half a row\n")
    with pytest.raises(ValueError, match=r"r.jsonl, line 2: not a JSON object .*fix or remove the line"):
        S.load(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"line 1: not a JSON object \(a list\)"):
        S.load(path)


def test_a_seed_without_a_win_rate_is_left_out_of_the_paired_differences():
    r = rows()
    r[5]["win_rate_vs_initial"] = None  # seed 2, 128 labels
    (adj,) = S.summarize(r, "labels")["adjacent"]
    assert adj["paired"] == [pytest.approx(0.20), pytest.approx(0.24)]


def test_the_command_line_names_a_missing_file_and_a_wrong_field(tmp_path, capsys):
    with pytest.raises(SystemExit):
        S.main([str(tmp_path / "none.jsonl"), "--by", "labels"])
    assert "none.jsonl: no such file; give a JSON-lines results file" in capsys.readouterr().err
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(rows()[0]) + "\n")
    with pytest.raises(SystemExit):
        S.main([str(path), "--by", "label"])
    assert "a row has no field 'label'" in capsys.readouterr().err
