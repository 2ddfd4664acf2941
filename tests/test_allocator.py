"""agents.allocator: the training commands keep freed memory in the process (glibc), so a tensor freed and
allocated again does not page-fault its memory in again; TEXTENV_MALLOC=default leaves glibc alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agents.allocator import setting
from agents.cli import main

# a 64 MiB block allocated, freed and allocated again: the second one's page faults
FAULTS = """
import resource
from agents.allocator import keep_freed_memory
applied = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = bytearray(64 << 20); del b
f0 = faults(); b = bytearray(64 << 20); del b
print(applied, faults() - f0)
"""


def run(malloc: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "TEXTENV_MALLOC"}
    if malloc is not None:
        env["TEXTENV_MALLOC"] = malloc
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, env=env, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_is_reused_without_page_faults_and_default_leaves_glibc_alone():
    applied, faults = run(None)
    assert applied == "True" and faults < 64, faults  # the freed block came back from the heap
    applied, faults = run("default")
    # glibc's own: the 64 MiB block is a fresh mapping, every 4 KiB page faults in again
    assert applied == "False" and faults > (64 << 20) // 4096 // 2, faults
    assert run(" KEEP ")[0] == "True"  # case and spaces do not matter


def test_a_bad_textenv_malloc_is_named_with_the_choices(monkeypatch, capsys):
    monkeypatch.setenv("TEXTENV_MALLOC", "tuned")
    with pytest.raises(ValueError, match=r"TEXTENV_MALLOC='tuned': use 'keep' \(the default\) or 'default'"):
        setting()
    # a training command refuses it as a usage error (exit 2), before it does anything
    with pytest.raises(SystemExit) as exc:
        main(["train-policy", "--config", "does-not-matter.toml"])
    assert exc.value.code == 2
    assert "TEXTENV_MALLOC='tuned': use 'keep'" in capsys.readouterr().err
    monkeypatch.delenv("TEXTENV_MALLOC")
    assert setting() == "keep"
