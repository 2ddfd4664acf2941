import subprocess
import sys

import pytest

from textenv.cli import COMMANDS, build_parser, main


def test_parser_knows_every_command():
    for name in COMMANDS:
        assert build_parser().parse_args([name]).command == name


def test_info_runs(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "books" in out


def test_setup_rejects_unknown_asset(capsys):
    with pytest.raises(ValueError, match="Unknown asset"):
        main(["setup", "--only", "nope"])


def test_import_textenv_is_cheap():
    code = "import sys, textenv; print(any(m in sys.modules for m in ('torch', 'transformers')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["label", "--store", "x.db", "--labeler", "sentiment", "--temperature", "nan"],
            "'nan' is not a finite",
        ),
        (["train-reward", "--store", "x.db", "--out", "o", "--holdout", "inf"], "'inf' is not a finite"),
        (
            ["evaluate", "--task", "BookSentiment-v0", "--system", "s", "--wait-s=-inf"],
            "'-inf' is not a finite",
        ),
        (["train-sft", "--task", "CNNDMSummarize-v0", "--out", "o", "--lr", "x"], "'x' is not a number"),
    ],
)
def test_float_options_refuse_nan_and_inf(argv, message, capsys):
    from agents.cli import main as full_main

    with pytest.raises(SystemExit) as info:
        full_main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    import textenv
    from agents.cli import build_parser as full_parser
    from agents.cli import main as textenv_main

    expected = f"textenv {version('textenv')}\n"
    assert textenv.__version__ == version("textenv")
    assert textenv_main(["--version"]) == 0
    assert capsys.readouterr().out == expected
    # the parser's own --version (shown in --help) says the same
    with pytest.raises(SystemExit) as stop:
        full_parser()[0].parse_args(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out == expected
