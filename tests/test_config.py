"""train-policy configuration: every bad value gets one line naming the key, the value and what is
allowed; the CLI prints it without a traceback and exits with status 2; TOML round trip."""

import subprocess
import sys
from pathlib import Path

import pytest

from agents.algos import ALGOS
from agents.config import (
    PRESETS_DIR,
    ConfigError,
    TrainConfig,
    apply_overrides,
    dump_toml,
    load_config,
    preset_names,
    read_toml,
    resolve_config_path,
    table_names,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ('--ppo.batch_size="eight"', "ppo.batch_size = 'eight': input should be a valid integer"),
        ("--ppo.batch_size=-8", "ppo.batch_size = -8: input should be greater than 0"),
        ("--run.iterations=-2", "run.iterations = -2: input should be greater than or equal to 0"),
        ("--policy.temperature=inf", 'policy.temperature = inf: use a finite number > 0, or "task"'),
        ("--policy.temperature=0", 'policy.temperature = 0: use a finite number > 0, or "task"'),
        ("--kl.coef=nan", "kl.coef = nan: input should be a finite number"),
        ("--optim.lr=-1e-5", "optim.lr = -1e-05: input should be greater than 0"),
        ("--halt.kl_threshold=0", "halt.kl_threshold = 0: input should be greater than 0"),
        ("--rloo.k=1", "rloo.k = 1: input should be greater than or equal to 2"),
        ("--run.algo=dpo", "run.algo='dpo' is not an algorithm; choose one of ['grpo', 'ppo', 'rloo']"),
        ("--env.overrides.penalty_reward_value=nan", "penalty_reward_value must be a finite number, got nan"),
        ("--env.overrides.response_length=0", "response_length must be a positive int, got 0"),
        ("--env.task=NoSuchTask-v0", "Unknown task 'NoSuchTask-v0'"),
        ("--online.initial_labels=0", "initial_labels=0"),
        ("--ppo.lr=1e-5", "no key 'lr' in [ppo] (it is in [optim])"),
        # a bool is not a number (it once became batch_size 1); nor a number a bool
        (
            "--ppo.batch_size=true",
            "ppo.batch_size = True: input should be a valid integer (a number, not true/false)",
        ),
        ("--optim.lr=true", "optim.lr = True: input should be a valid number (a number, not true/false)"),
        ("--kl.adaptive=1", "kl.adaptive = 1: input should be a valid boolean (write true or false)"),
        # nor a float an int: the message says how to write it
        (
            "--ppo.total_episodes=1e6",
            "ppo.total_episodes = 1000000.0: input should be a valid integer (write it without a decimal "
            "point or exponent: 1000000)",
        ),
        ("--ppo.batch_size=2.5", "ppo.batch_size = 2.5: input should be a valid integer"),
        # [online] and [online.reward] are as strict
        ("--online.initial_labels=true", "online.initial_labels = True: input should be a valid integer"),
        ("--online.enabled=1", "online.enabled = 1: input should be a valid boolean"),
        ("--online.reward.epochs=true", "online.reward.epochs = True: input should be a valid integer"),
        ("--online.reward.lr=nan", "online.reward.lr = nan: input should be a finite number"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as info:
        load_config("tiny_toy", [override])
    assert message in str(info.value)


def test_a_toml_file_with_bad_values_reports_each_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[ppo]\nbatch_size = "eight"\n[run]\niterations = -2\n[kl]\ncoef = nan\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).splitlines() == [  # every problem, one line each
        "run.iterations = -2: input should be greater than or equal to 0",
        "kl.coef = nan: input should be a finite number",
        "ppo.batch_size = 'eight': input should be a valid integer",
    ]
    path.write_text("[ppo]\nbatch_size = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="not a text"):
        load_config(path)
    path.write_text("[nonsense]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"unknown config table\(s\) \['nonsense'\]"):
        load_config(path)
    path.write_text("ppo = 3\n")
    with pytest.raises(ConfigError, match=r"\[ppo\] must be a table"):
        load_config(path)


def test_cli_prints_one_line_without_a_traceback_and_exits_2(tmp_path):
    cmd = [sys.executable, "-m", "agents.cli", "train-policy", "--config", "tiny_toy", "--no-progress"]
    for bad in (
        '--ppo.batch_size="eight"',
        "--run.iterations=-2",
        "--env.overrides.penalty_reward_value=nan",
    ):
        out = subprocess.run(
            [*cmd, bad, f"--run.out_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True
        )
        assert out.returncode == 2, (bad, out.stderr)
        assert "Traceback" not in out.stderr and out.stderr.startswith("textenv train-policy: "), out.stderr
        assert not (tmp_path / "metrics.jsonl").exists()


def test_overrides_resolve_bare_keys_and_refuse_unknown_ones():
    data = apply_overrides({}, ["--lr=2e-5", "--epochs=3", "--algo=rloo", "--coef=0.1"])
    assert data["optim"]["lr"] == 2e-5 and data["rloo"]["epochs"] == 3 and data["kl"]["coef"] == 0.1
    with pytest.raises(ConfigError, match="in no table"):
        apply_overrides({}, ["--nonsense=1"])
    with pytest.raises(ConfigError, match=r"must look like --table\.key=value"):
        apply_overrides({}, ["--ppo.lr"])
    with pytest.raises(ConfigError, match="no table 'ppx'"):
        apply_overrides({}, ["--ppx.lr=1"])


def test_the_registry_drives_the_tables():
    assert set(ALGOS) <= set(table_names())
    cfg = load_config("tiny_toy", ["--algo=grpo"])
    assert type(cfg.algo_config) is ALGOS["grpo"].config and cfg.algo_config.kl is cfg.kl


def test_presets_are_package_data_of_agents(tmp_path, monkeypatch):
    """The presets are found through the package (importlib.resources), in the folder that ships in the
    wheel, whatever the working folder; the checkout's top-level configs/ is a link to the same files."""
    from importlib import resources

    assert PRESETS_DIR == Path(str(resources.files("agents") / "configs"))
    assert {"tiny_toy", "demo", "book_sentiment"} <= set(preset_names())
    assert (ROOT / "configs").resolve() == PRESETS_DIR.resolve()
    monkeypatch.chdir(tmp_path)
    for name in ("tiny_toy", "tiny_toy.toml", "configs/tiny_toy.toml"):
        assert resolve_config_path(name) == PRESETS_DIR / "tiny_toy.toml"
    (tmp_path / "tiny_toy.toml").write_text("[run]\niterations = 1\n")
    assert resolve_config_path("tiny_toy.toml") == Path("tiny_toy.toml")  # a file given by path comes first
    with pytest.raises(FileNotFoundError, match=r"one of the presets \[.*'tiny_toy'"):
        resolve_config_path("no_such_preset")


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_round_trips_through_toml(preset, tmp_path):
    cfg = load_config(preset)
    path = tmp_path / "config.toml"
    path.write_text(dump_toml(cfg))
    again = TrainConfig.from_dict(read_toml(path))
    assert again.to_dict() == cfg.to_dict() and cfg.iterations >= 1
    assert cfg.temperature() > 0


def test_presets_pin_the_papers_kl_settings():
    books = load_config("book_sentiment")
    assert (books.kl.coef, books.kl.adaptive, books.kl.target, books.halt.threshold(books.kl)) == (
        0.15,
        True,
        6.0,
        18.0,
    )
    assert load_config("mock_sentiment").kl.target == 8.0
    tldr = load_config("tldr_summarize")
    assert (tldr.kl.coef, tldr.kl.adaptive, tldr.temperature(), tldr.halt.kl_threshold) == (
        0.03,
        False,
        0.7,
        40.0,
    )
    cnndm = load_config("cnndm_summarize")
    assert (cnndm.kl.coef, cnndm.kl.adaptive, cnndm.temperature()) == (0.01, False, 0.5)
    assert load_config("book_sentiment", ['--policy.temperature="task"']).temperature() == 0.7
