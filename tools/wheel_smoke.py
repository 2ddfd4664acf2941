"""The commands of the installed-wheel check, run by ``tools/wheel_check.sh`` with the fresh virtual
environment's Python, from an empty folder, with the checkout hidden (an empty read-only mount over it)
where the machine allows, and always watched by ``checkout_guard.py`` (the audit hook in that environment).

Each command runs as a user would run it; its seconds are printed. The check fails on the first command
that fails or says the wrong thing, and at the end when the guard logged any reach into the checkout.

Reads from the environment (set by wheel_check.sh): ``TEXTENV_GUARD_ROOT`` (the checkout),
``TEXTENV_GUARD_LOG``, ``WHEEL_CHECK_VERSION`` (pyproject.toml's version), ``WHEEL_CHECK_PRESETS`` (the
checkout's preset names), ``WHEEL_CHECK_HIDDEN`` ("1" when the checkout is hidden), ``TEXTENV_CACHE``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = os.environ["TEXTENV_GUARD_ROOT"]
GUARD_LOG = Path(os.environ["TEXTENV_GUARD_LOG"])
VERSION = os.environ["WHEEL_CHECK_VERSION"]
PRESETS = os.environ["WHEEL_CHECK_PRESETS"].split()
CACHE = os.environ["TEXTENV_CACHE"]
BIN = Path(sys.executable).parent
TEXTENV = str(BIN / "textenv")


class CheckFailed(RuntimeError):
    pass


def run(argv: list[str], expect: str | None = None, label: str | None = None, timeout: float = 300) -> str:
    """Run one command; fail unless it exits 0 (and prints ``expect``, when given)."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    shown = label or " ".join(argv).replace(str(BIN) + "/", "")
    print(f"  {time.perf_counter() - t0:5.1f}s  {shown}", flush=True)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or (expect is not None and expect not in proc.stdout):
        raise CheckFailed(
            f"`{shown}` exited {proc.returncode}"
            + (f" without printing {expect!r}" if expect is not None else "")
            + f"; its output:\n{out[-4000:]}"
        )
    return proc.stdout


# Every other train-policy preset trains one iteration from the wheel, shrunk to a random tiny GPT-2 and
# 4-token responses (the paper-size presets take minutes per iteration on the embedded model; the code
# path, the preset file and the task's data are the same). One process: the imports are paid once.
# demo.toml is the demo's PPO stage: `textenv demo` below runs it.
PRESET_TRAIN = r"""
import json, sys
from agents.cli import main
for preset in json.loads(sys.argv[1]):
    code = main(["train-policy", "--config", preset, "--run.iterations=1", "--policy.model=tiny-gpt2",
                 f"--run.out_dir=runs/{preset}", "--batch_size=4", "--minibatches=1", "--run.tensorboard=false",
                 "--env.overrides.response_length=4", "--env.overrides.truncate_after=0", "--no-progress"])
    assert code in (0, None), (preset, code)
    print("trained", preset, flush=True)
print("presets ok")
"""

# The Python API from the installed wheel: every env id, every preset, the package data, nothing from the
# checkout. Run as `python -c`, the way a user's script imports the package.
IMPORT_CHECK = r"""
import json, os, sys
import gymnasium as gym
import textenv
from agents.config import PRESETS_DIR, load_config, preset_names
from textenv.corpora.common import FIXTURES

prefix = os.path.realpath(sys.prefix) + os.sep
for name, path in [("textenv", textenv.__file__), ("presets", PRESETS_DIR), ("fixtures", FIXTURES)]:
    assert os.path.realpath(path).startswith(prefix), f"{name} at {path}, not in the environment {prefix}"
assert preset_names() == sorted(json.loads(sys.argv[1])), (preset_names(), sys.argv[1])
assert (FIXTURES / "tldr_sample.jsonl").is_file()
for preset in preset_names():
    load_config(preset)  # found through the package and validated
env = gym.make("BookSentiment-v0", response_length=4, truncate_after=0)
obs, info = env.reset(seed=0)
assert obs.shape == env.observation_space.shape
for env_id in textenv.ENV_IDS:  # every env id, from the cached assets and the shipped TL;DR sample
    env = gym.make(env_id, response_length=4, truncate_after=0)
    env.reset(seed=0)
    done, steps = False, 0
    while not done:
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        done, steps = terminated or truncated, steps + 1
    assert steps == 4 and isinstance(reward, float), (env_id, steps, reward)
from importlib import resources
static = resources.files("rewards.labeling") / "static"
assert os.path.realpath(str(static)).startswith(prefix), static
print("import-check ok:", len(textenv.ENV_IDS), "env ids,", len(preset_names()), "presets")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_labeling_app() -> None:
    """``textenv serve-labeling`` (extra ``labeling``) serves its pages and scripts from the wheel."""
    port = free_port()
    argv = [TEXTENV, "serve-labeling", "--store", "labels.db", "--port", str(port)]
    t0 = time.perf_counter()
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise CheckFailed(f"serve-labeling did not come up:\n{server.communicate()[0]}") from None
                time.sleep(0.2)
        for page, expect in [
            ("/", "<html"),
            ("/admin", "<html"),
            ("/static/app.js", "fetch("),
            ("/static/style.css", "{"),
            ("/api/openapi.json", '"openapi"'),
        ]:
            body = urllib.request.urlopen(base + page, timeout=10).read().decode()
            if expect not in body:
                raise CheckFailed(f"serve-labeling {page}: {expect!r} not in {body[:200]!r}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        f"  {time.perf_counter() - t0:5.1f}s  textenv serve-labeling --store labels.db (5 pages)", flush=True
    )


def guard_self_test() -> None:
    """The guard is loaded in this environment and logs a reach into the checkout (then the log is reset)."""
    probe = os.path.join(ROOT, "pyproject.toml")
    subprocess.run([sys.executable, "-c", f"open({probe!r})"], capture_output=True, check=False)
    logged = GUARD_LOG.read_text() if GUARD_LOG.exists() else ""
    if probe not in logged:
        raise CheckFailed(f"the checkout guard is not active in {sys.prefix} (it did not log {probe})")
    GUARD_LOG.unlink()


def main() -> int:
    t0 = time.perf_counter()
    if any(Path.cwd().iterdir()):
        raise CheckFailed(f"the working folder {Path.cwd()} is not empty")
    guard_self_test()
    hidden = not os.path.exists(os.path.join(ROOT, "pyproject.toml"))  # os.stat: no audit event, no log
    if os.environ.get("WHEEL_CHECK_HIDDEN") == "1" and not hidden:
        raise CheckFailed(f"the checkout {ROOT} should be hidden (an empty mount) but is not")
    run([TEXTENV, "--version"], expect=f"textenv {VERSION}\n")
    run([TEXTENV, "info"], expect=f"cache: {CACHE}\n")
    run([TEXTENV, "setup"], expect="assets ready")
    run(
        [TEXTENV, "train-policy", "--config", "tiny_toy", "--run.iterations=2", "--no-progress"],
        "2 iteration(s)",
    )
    rows = Path("runs/tiny_toy/metrics.jsonl").read_text().splitlines()
    if [json.loads(r)["iteration"] for r in rows] != [1, 2]:
        raise CheckFailed(f"runs/tiny_toy/metrics.jsonl in the working folder: {rows!r}")
    run([TEXTENV, "demo", "--env-only", "--episodes", "1"], expect="[demo] mean reward")
    others = [p for p in PRESETS if p not in ("tiny_toy", "demo")]
    run(
        [sys.executable, "-c", PRESET_TRAIN, json.dumps(others)],
        expect="presets ok",
        label=f"textenv train-policy --config NAME (1 tiny iteration each: {' '.join(others)})",
    )
    run(
        [
            TEXTENV,
            "demo",
            "--model",
            "tiny-gpt2",
            "--questions",
            "8",
            "--heldout-questions",
            "8",
            "--eval-prompts",
            "8",
            "--iterations",
            "2",
        ],
        expect="[demo] held-out reward-model score",
    )
    label = "python -c 'import textenv; gym.make(...)' (every env id; every preset loaded; package data)"
    run([sys.executable, "-c", IMPORT_CHECK, json.dumps(PRESETS)], expect="import-check ok", label=label)
    check_labeling_app()
    if GUARD_LOG.exists() and GUARD_LOG.read_text().strip():
        raise CheckFailed(f"reached into the checkout {ROOT}:\n{GUARD_LOG.read_text()}")
    print(f"  {time.perf_counter() - t0:5.1f}s  all commands, nothing read from the checkout")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (CheckFailed, subprocess.TimeoutExpired) as exc:
        print(f"wheel-check FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
