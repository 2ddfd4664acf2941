"""The python blocks of the documentation run: docs/*.md, README.md and BENCHMARKS.md.

Each block is picked by its page and a string only it contains, and runs with substitutions that keep
the suite fast (a tiny random model, fewer envs and iterations, short responses). A block that cannot
run here carries the reason in an HTML comment on the line before it, ``<!-- not-tested: REASON -->``;
``test_every_block_runs_or_is_marked`` fails on a block that is neither run below nor marked.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md", ROOT / "BENCHMARKS.md"]
PYTHON = {"python", "py", "python3", "pycon"}
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)
MARK = re.compile(r"<!--\s*not-tested:(?P<reason>(?:(?!-->).)*)-->\s*\Z", re.S)

# (page, a string only that block contains): every block some test below runs
TOUR_README = ("README.md", 'gym.make("TLDRSummarize-v0")')
TOUR_DOCS = ("docs/getting-started.md", 'gym.make("TLDRSummarize-v0")')
KL = ("docs/concepts.md", "AdaptiveKLController(")
TASK_API = ("docs/environments.md", "sample_task(")
REWARD_MODEL = ("docs/reward-learning.md", "RewardModel.load(")
PPO = ("docs/agents.md", "PPOAgent(")
SB3 = ("docs/plugins.md", "stable_baselines3")
REINFORCE = ("docs/plugins.md", "R.mean()")
REWARD_PLUGINS = ("docs/plugins.md", "make_server(")
REWARD_MODULE = ("docs/plugins.md", "def distinct(")
COMPAT = ("docs/models.md", "check_causal_lm(mamba)")
RUN = [
    TOUR_README,
    TOUR_DOCS,
    KL,
    TASK_API,
    REWARD_MODEL,
    PPO,
    SB3,
    REINFORCE,
    REWARD_PLUGINS,
    REWARD_MODULE,
    COMPAT,
]


@dataclass
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence
    code: str
    not_tested: str | None  # the reason, when marked


def blocks(path: Path, root: Path = ROOT) -> list[Block]:
    text = path.read_text()
    found = []
    for m in FENCE.finditer(text):
        info = m["info"].strip().split()
        if not info or info[0] not in PYTHON:
            continue
        indent = m["indent"]
        code = "".join(line[len(indent) :] for line in m["body"].splitlines(keepends=True))
        mark = MARK.search(text[: m.start()])
        line = text.count("\n", 0, m.start()) + 1
        page = path.relative_to(root).as_posix()
        found.append(Block(page, line, code, mark["reason"].strip() if mark else None))
    return found


def block(key: tuple[str, str]) -> Block:
    page, needle = key
    (b,) = [b for b in blocks(ROOT / page) if needle in b.code and b.not_tested is None]
    return b


def run(b: Block, code: str, namespace: dict | None = None) -> dict:
    namespace = {} if namespace is None else namespace
    exec(compile(code, f"{b.page}:{b.line}", "exec"), namespace)
    return namespace


def test_every_block_runs_or_is_marked():
    problems = []
    for path in PAGES:
        for b in blocks(path):
            where = f"{b.page}:{b.line}"
            claimed = [key for key in RUN if key[0] == b.page and key[1] in b.code]
            if b.not_tested is not None:
                if not b.not_tested:
                    problems.append(f"{where}: the not-tested mark gives no reason")
                if claimed:
                    problems.append(f"{where}: marked not-tested but run by {claimed}")
            elif len(claimed) != 1:
                problems.append(
                    f"{where}: python block run by {len(claimed)} tests; add it to RUN with a test, or mark it "
                    "<!-- not-tested: REASON --> on the line before"
                )
    for key in RUN:
        matching = [b for b in blocks(ROOT / key[0]) if key[1] in b.code and b.not_tested is None]
        if len(matching) != 1:
            problems.append(f"{key}: matches {len(matching)} runnable blocks, not 1")
    assert not problems, "\n".join(problems)


def test_the_block_finder_sees_marks_and_indented_blocks(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "x\n\n<!-- not-tested: needs the hub -->\n```python\na = 1\n```\n\n- item\n\n  ```python\n  b = 2\n  ```\n"
        "\n```bash\nc\n```\n<!-- a comment, no mark -->\n```python\nc = 3\n```\n"
    )
    found = blocks(page, root=tmp_path)
    assert [(b.code, b.not_tested) for b in found] == [
        ("a = 1\n", "needs the hub"),
        ("b = 2\n", None),
        ("c = 3\n", None),
    ]


@pytest.mark.embedded
@pytest.mark.parametrize("key", [TOUR_README, TOUR_DOCS], ids=["README", "getting-started"])
def test_the_tour_runs(key):
    from textenv.models import embedded_available

    if not embedded_available():  # the envs' default tokenizer is the embedded one
        from textenv.assets import SETUP_COMMAND

        pytest.skip(f"embedded model not in the cache: run {SETUP_COMMAND}")
    b = block(key)
    code = b.code.replace('load_causal_lm("smollm2-135m")', 'load_causal_lm("tiny-gpt2", seed=0)')
    code = code.replace("num_envs=64", "num_envs=4")
    assert "smollm2" not in code and "num_envs=4" in code
    ns = run(b, code)
    assert ns["env"].unwrapped.task.config.response_length == 75 and ns["reward"] == 0
    assert ns["envs"].num_envs == 4
    if "logits" in ns:
        assert tuple(ns["logits"].shape[:2]) == tuple(ns["ids"].shape)
        assert len(ns["passages"]) > 0 and len(ns["articles"]) > 0


def test_compat_example_runs(capsys):
    b = block(COMPAT)
    run(b, b.code)
    assert capsys.readouterr().out.startswith(
        "MambaForCausalLM cannot be used: its forward takes no position_ids"
    )


def test_kl_example_runs(capsys):
    b = block(KL)
    ns = run(b, b.code)
    kl = (ns["logprobs"] - ns["ref_logprobs"]).sum(1)
    assert ns["rewards"].sum(1).tolist() == pytest.approx((ns["scores"] - 0.15 * kl).tolist())
    assert ns["beta"] == pytest.approx(0.15 * 1.01024)
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_task_api_example_runs(capsys):
    b = block(TASK_API)
    code = b.code.replace('"smollm2-135m"', '"tiny-gpt2"')
    code = code.replace("response_length=24)", "response_length=6, truncate_after=2)")
    assert "tiny-gpt2" in code and "response_length=6" in code
    ns = run(b, code)
    assert ns["contexts"].shape[0] == 4 and ns["drawn"].responses.shape == (8, 6)
    assert len(ns["out"]["reward"]) == 8 and capsys.readouterr().out.startswith("[")


def test_reward_model_example_runs(tmp_path, monkeypatch):
    from rewards.model import RewardModel

    RewardModel.from_spec("tiny-gpt2", seed=0).save(tmp_path / "runs" / "rm")
    monkeypatch.chdir(tmp_path)
    b = block(REWARD_MODEL)
    code = b.code.replace(
        'gym.make("BookSentiment-v0",',
        'gym.make("BookSentiment-v0", tokenizer="tiny-gpt2", response_length=4, truncate_after=0,',
    )
    assert "response_length=4" in code
    env = run(b, code)["env"]
    env.reset(seed=0)
    for _ in range(4):
        _, reward, terminated, _, info = env.step(5)
    assert terminated and np.isfinite(reward) and "score" in info


def test_ppo_python_example_runs():
    b = block(PPO)
    code = b.code.replace('"smollm2-135m"', '"tiny-gpt2"').replace("num_envs=64", "num_envs=8")
    code = code.replace("batch_size=64", "batch_size=8").replace(
        'reward_fn="sentiment"\n)', 'reward_fn="sentiment", response_length=4, truncate_after=0\n)'
    )
    assert code.count("=8") == 2 and "tiny-gpt2" in code and "response_length=4" in code
    ns = run(b, code)
    metrics = ns["metrics"]
    assert metrics["iteration"] == 1 and metrics["objective/kl"] == pytest.approx(0.0, abs=1e-4)
    assert ns["agent"].config.optim.lr == 1e-5 and ns["agent"].kl_ctl.value < 0.15


def test_sb3_example_runs(tmp_path, monkeypatch):
    b = block(SB3)
    code = b.code.replace('"smollm2-135m"', '"tiny-gpt2"')
    code = code.replace(
        "dict(response_length=24)", 'dict(response_length=4, truncate_after=0, tokenizer="tiny-gpt2")'
    )
    code = code.replace("n_steps=24,", "n_steps=4,").replace("batch_size=96,", "batch_size=32,")
    code = code.replace("24 * 8 * 10", "32")
    assert code.count("tiny-gpt2") == 2 and "n_steps=4," in code and "batch_size=32," in code
    monkeypatch.chdir(tmp_path)
    ns = run(b, code)
    assert (tmp_path / "runs" / "sb3_ppo.zip").exists()
    model = ns["model"]
    assert model.n_steps == 4 and model.num_timesteps == 32  # learn(32) runs exactly one whole rollout


def test_reinforce_loop_example_runs(capsys):
    b = block(REINFORCE)
    code = b.code.replace('"smollm2-135m"', '"tiny-gpt2"').replace("range(10)", "range(2)")
    code = code.replace(
        'TextVectorEnv("BookSentiment-v0", num_envs=16,',
        'TextVectorEnv("BookSentiment-v0", num_envs=4, response_length=4, truncate_after=0,',
    )
    assert "tiny-gpt2" in code and "range(2)" in code and "response_length=4" in code
    run(b, code)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("0 ")


def test_reward_plugins_example_runs(tmp_path, monkeypatch, capsys):
    from test_reward_plugins import save_seqcls

    save_seqcls(tmp_path / "runs" / "rm-seqcls")
    (tmp_path / "my_rewards.py").write_text(block(REWARD_MODULE).code)  # the module block, as a file
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)  # another test's module of that name
    b = block(REWARD_PLUGINS)
    code = b.code.replace(
        'gym.make("BookSentiment-v0",',
        'gym.make("BookSentiment-v0", tokenizer="tiny-gpt2", response_length=4, truncate_after=0,',
    ).replace("port=8008", "port=0")
    assert code.count('tokenizer="tiny-gpt2"') == 3 and "port=0" in code
    ns = run(b, code)
    local, remote, own = (float(x) for x in capsys.readouterr().out.split())
    assert local == pytest.approx(remote, abs=1e-6) and own == 0.25  # 4 equal tokens: 1 distinct of 4
    assert ns["remote"].unwrapped.task.reward_fn.url == ns["server"].url
