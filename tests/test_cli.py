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
