"""Reward plug-ins (textenv.reward_plugins, rewards.serving): a sequence-classification checkpoint with its
own tokenizer, a reward served over HTTP on loopback (and servers that time out or answer garbage), and
module:function callables, each from gym.make, a TOML config and the train-policy CLI."""

from __future__ import annotations

import json
import string
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import textenv  # noqa: F401  (registers the envs)
from textenv.reward_plugins import (
    HttpReward,
    RewardEndpointError,
    RewardPluginError,
    RewardSpec,
    SequenceClassifierReward,
    encode_texts,
    import_callable,
    resolve_reward,
)

TINY_TASK = dict(query_length=8, response_length=4, min_query_length=4, truncate_token="", truncate_after=0)


def char_tokenizer():
    """A one-character-per-token tokenizer: nothing like the policy's GPT-2 BPE, so ids must be re-tokenised."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{c: i + 2 for i, c in enumerate(string.printable)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]")


def save_seqcls(folder: Path, num_labels: int = 1) -> Path:
    """A tiny random Llama sequence classifier (seeded) with the character tokenizer, saved to ``folder``."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = char_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        num_labels=num_labels,
        pad_token_id=tok.pad_token_id,
        **({"id2label": {0: "NEGATIVE", 1: "POSITIVE"}} if num_labels == 2 else {}),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        LlamaForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def seqcls_dir(tmp_path_factory):
    return save_seqcls(tmp_path_factory.mktemp("seqcls") / "rm")


@pytest.fixture(scope="module")
def policy_tok():
    from textenv.models import load_tokenizer

    return load_tokenizer("tiny-gpt2")


def direct_scores(folder: Path, queries: list[str], responses: list[str]) -> np.ndarray:
    """The checkpoint's logits on each text pair, one at a time (no batching, no padding)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok, model = (
        AutoTokenizer.from_pretrained(folder),
        AutoModelForSequenceClassification.from_pretrained(folder),
    )
    with torch.no_grad():
        return np.array(
            [float(model(**tok(q, r, return_tensors="pt")).logits[0, 0]) for q, r in zip(queries, responses)]
        )


def batch(tok, queries, responses):
    return encode_texts(tok, queries, responses)


QUERIES = ["The ship sailed", "She opened the door and", "Rain", "It was late"]
RESPONSES = [" into the grey fog.", " smiled.", " fell all night long", " and cold."]


# ------------------------------------------------------------------------- sequence classification
def test_seqcls_rescores_decoded_text_with_its_own_tokenizer_in_batches(seqcls_dir, policy_tok):
    q, r = batch(policy_tok, QUERIES, RESPONSES)
    fn = resolve_reward(RewardSpec(str(seqcls_dir), batch_size=3), policy_tok)
    assert isinstance(fn, SequenceClassifierReward) and not any(
        p.requires_grad for p in fn.model.parameters()
    )
    got = fn(q, r)
    assert got.dtype == np.float64 and got.shape == (4,)
    np.testing.assert_allclose(got, direct_scores(seqcls_dir, QUERIES, RESPONSES), atol=1e-5)
    # what the response alone / the concatenation reads
    response_only = resolve_reward(RewardSpec(str(seqcls_dir), input="response"), policy_tok)
    np.testing.assert_allclose(response_only(q, r), direct_scores(seqcls_dir, [""] * 4, RESPONSES), atol=1e-5)


def test_seqcls_from_gym_make_scores_the_truncated_response(seqcls_dir, policy_tok):
    env = gym.make("BookSentiment-v0", tokenizer=policy_tok, reward_fn=str(seqcls_dir), **TINY_TASK)
    obs, _ = env.reset(seed=0)
    for t in (262, 3290, 318, 13):
        _, reward, terminated, _, info = env.step(t)
    task = env.unwrapped.task
    query = task.decode(obs[len(task.prefix) : len(task.prefix) + task.config.query_length])
    assert terminated and reward == pytest.approx(
        direct_scores(seqcls_dir, [query], [info["truncated_text"]])[0], abs=1e-5
    )


def test_seqcls_labels_and_heads(tmp_path, policy_tok):
    two = save_seqcls(tmp_path / "two", num_labels=2)
    with pytest.raises(
        RewardPluginError,
        match=r"has 2 labels \{'NEGATIVE': 0, 'POSITIVE': 1\}; choose the one to reward with the option label",
    ):
        resolve_reward(str(two), policy_tok)
    with pytest.raises(
        RewardPluginError, match=r"label='happy' is not one of \{'NEGATIVE': 0, 'POSITIVE': 1\}"
    ):
        resolve_reward(RewardSpec(str(two), label="happy"), policy_tok)
    fn = resolve_reward(RewardSpec(str(two), label="POSITIVE", input="concat"), policy_tok)
    q, r = batch(policy_tok, QUERIES[:2], RESPONSES[:2])
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(two)
    with torch.no_grad():
        logits = model(
            **fn.tokenizer([a + b for a, b in zip(QUERIES, RESPONSES)][:1], return_tensors="pt")
        ).logits[0]
    assert fn(q, r)[0] == pytest.approx(float(logits[1] - logits[0]), abs=1e-5)  # log-odds of POSITIVE
    # a causal LM folder has no trained head: refused, never scored by a random one
    from textenv.models import load_causal_lm

    lm, tok = load_causal_lm("tiny-gpt2", seed=0)
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    with pytest.raises(
        RewardPluginError, match=r"has no trained classification head \(missing weights \['score.weight'\]\)"
    ):
        resolve_reward(str(tmp_path / "lm"), policy_tok)


def test_bad_specs_name_the_value_and_the_fix(tmp_path, monkeypatch, policy_tok):
    with pytest.raises(ValueError, match=r"^Unknown built-in reward 'happy'; pass a built-in score \["):
        resolve_reward("happy", policy_tok)
    with pytest.raises(ValueError, match=r"^reward 'runs/nope/rm': no such folder; pass"):
        resolve_reward("runs/nope/rm", policy_tok)
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ValueError, match=r"holds neither a plug-in marker \['reward_model.json'\] nor a config.json"
    ):
        resolve_reward(str(tmp_path / "empty"), policy_tok)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"not in the Hugging Face cache, and the hub cannot be reached"):
        resolve_reward("no-such-org/no-such-reward-model", policy_tok)
    with pytest.raises(
        ValueError, match=r"reward input='xml'; choose one of \['pair', 'concat', 'response', 'chat'\]"
    ):
        RewardSpec("sentiment", input="xml")
    with pytest.raises(ValueError, match=r"unknown reward option\(s\) \['timout'\]; valid options"):
        RewardSpec.from_options("sentiment", {"timout": 3})


# ------------------------------------------------------------------------------- module:function
def write_module(folder: Path, monkeypatch) -> None:
    """``my_rewards.py`` in ``folder``, importable (a stale ``my_rewards`` of another test forgotten)."""
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)
    (folder / "my_rewards.py").write_text(
        "import numpy as np\n"
        "def length(queries, responses):\n"
        "    return (np.asarray(responses) != 50257).sum(1).astype(float)\n"
        "NOT_CALLABLE = 3\n"
        "class Scores:\n"
        "    @staticmethod\n"
        "    def zero(queries, responses):\n"
        "        return np.zeros(len(responses))\n"
    )


def test_module_function_good_and_bad(tmp_path, monkeypatch, policy_tok):
    write_module(tmp_path, monkeypatch)
    env = gym.make("BookSentiment-v0", tokenizer=policy_tok, reward_fn="my_rewards:length", **TINY_TASK)
    env.reset(seed=0)
    for _ in range(4):
        _, reward, *_ = env.step(262)
    assert reward == 4.0
    assert import_callable("my_rewards:Scores.zero")(None, np.zeros((2, 3))).tolist() == [0.0, 0.0]
    with pytest.raises(
        ValueError,
        match=r"^reward 'no_such_mod:f': cannot import module 'no_such_mod' \(No module named 'no_such_mod'\); "
        r"install it or put its folder on PYTHONPATH\.$",
    ):
        gym.make("BookSentiment-v0", tokenizer=policy_tok, reward_fn="no_such_mod:f", **TINY_TASK)
    with pytest.raises(
        ValueError,
        match=r"^reward 'my_rewards:lenght': 'my_rewards' has no attribute 'lenght'; check the name after the colon\.$",
    ):
        import_callable("my_rewards:lenght")
    with pytest.raises(
        ValueError,
        match=r"^reward 'my_rewards:NOT_CALLABLE' is a int, not a callable; point it at a function "
        r"\(queries, responses\) -> scores\.$",
    ):
        import_callable("my_rewards:NOT_CALLABLE")


# ------------------------------------------------------------------------------------------ HTTP
def serve(server: ThreadingHTTPServer):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    return server


@pytest.fixture
def servers():
    running = []
    yield running
    for s in running:
        s.shutdown()
        s.server_close()


def test_served_seqcls_equals_local_and_works_from_gym_make(seqcls_dir, policy_tok, servers):
    from rewards.serving import make_server

    server = serve(make_server(str(seqcls_dir), port=0))
    servers.append(server)
    q, r = batch(policy_tok, QUERIES, RESPONSES)
    remote = resolve_reward(RewardSpec(server.url, batch_size=3), policy_tok)
    assert isinstance(remote, HttpReward)
    np.testing.assert_allclose(remote(q, r), resolve_reward(str(seqcls_dir), policy_tok)(q, r), atol=1e-6)
    env = gym.make("BookSentiment-v0", tokenizer=policy_tok, reward_fn=server.url, **TINY_TASK)
    env.reset(seed=0)
    for _ in range(4):
        _, reward, terminated, _, info = env.step(262)
    assert terminated and np.isfinite(reward) and reward == info["score"]
    import urllib.request

    info = json.loads(urllib.request.urlopen(server.url.replace("/score", "/info"), timeout=5).read())
    assert info == {"version": 1, "model": str(seqcls_dir), "kind": "seqcls"}


def test_served_reward_model_folder_uses_the_ids_when_tokenizers_match(tmp_path, policy_tok, servers):
    from rewards.model import RewardModel
    from rewards.serving import make_server

    RewardModel.from_spec("tiny-gpt2", seed=0).save(tmp_path / "rm")
    local = resolve_reward(str(tmp_path / "rm"), policy_tok)  # the reward_model.json plug-in
    server = serve(make_server(str(tmp_path / "rm"), port=0))
    servers.append(server)
    assert (
        server.scorer.kind == "folder"
        and server.scorer.fingerprint == HttpReward(server.url, policy_tok).fingerprint
    )
    q, r = batch(policy_tok, QUERIES, RESPONSES)
    np.testing.assert_allclose(resolve_reward(server.url, policy_tok)(q, r), local(q, r), atol=1e-6)
    # another policy tokenizer: the client's texts are re-tokenised on the server
    remote = HttpReward(server.url, None)
    np.testing.assert_allclose(remote.score_texts(QUERIES, RESPONSES), local(q, r), atol=1e-6)
    # locally too: a policy with another tokenizer gets the reward model through re-tokenisation
    chars = char_tokenizer()
    retok = resolve_reward(str(tmp_path / "rm"), chars)
    assert type(retok).__name__ == "Retokenized"
    np.testing.assert_allclose(retok(*batch(chars, QUERIES, RESPONSES)), local(q, r), atol=1e-6)


class Scripted(BaseHTTPRequestHandler):
    """Answers every POST with ``server.answer`` (status, body bytes), after ``server.delay`` seconds."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.calls += 1
        time.sleep(self.server.delay)
        status, body = self.server.answers[min(self.server.calls, len(self.server.answers)) - 1]
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (timed out) first
            pass

    def log_message(self, *args):
        pass


def scripted(servers, *answers, delay=0.0):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.daemon_threads = True
    server.answers, server.delay, server.calls = list(answers), delay, 0
    servers.append(serve(server))
    return server, f"http://127.0.0.1:{server.server_address[1]}/score"


def test_a_server_that_times_out(servers, policy_tok):
    server, url = scripted(servers, (200, b'{"version": 1, "scores": [0.0]}'), delay=1.0)
    fn = HttpReward(url, policy_tok, timeout=0.2, retries=1, backoff=0.0)
    t0 = time.perf_counter()
    with pytest.raises(RewardEndpointError) as exc:
        fn.score_texts(["q"], ["r"])
    assert time.perf_counter() - t0 < 1.0 and server.calls == 2
    assert str(exc.value) == (
        f"reward endpoint {url} failed 2 attempts (no answer within 0.2 s); start it there with `textenv "
        "serve-reward --model SPEC`, check the URL, or raise the timeout/retries reward options."
    )


def test_a_server_that_is_down(policy_tok):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slept = []
    fn = HttpReward(f"http://127.0.0.1:{port}", policy_tok, retries=2, backoff=0.5, sleep=slept.append)
    with pytest.raises(
        RewardEndpointError,
        match=rf"^reward endpoint http://127\.0\.0\.1:{port}/score failed 3 attempts \(cannot connect: .*refused\); "
        r"start it there with `textenv serve-reward --model SPEC`",
    ):
        fn.score_texts(["q"], ["r"])
    assert slept == [0.5, 1.0]  # exponential backoff


GARBAGE = [
    (
        (200, b"<html>oops</html>"),
        "returned garbage, not JSON ('<html>oops</html>'); is it a reward server (textenv serve-reward) speaking "
        "protocol version 1?",
    ),
    (
        (200, b'{"version": 1, "scores": [1.0, 2.0]}'),
        "returned 2 scores for a batch of 1; the server must return one score per response.",
    ),
    (
        (200, b'{"version": 1, "scores": [NaN]}'),
        "returned non-finite scores [nan] at rows [0]; fix the reward model on the server (NaN/inf are never replaced).",
    ),
    (
        (200, b'{"version": 1, "scores": ["1"]}'),
        "returned a non-numeric score '1' at row 0; the server must return numbers.",
    ),
    (
        (200, b'{"version": 2, "scores": [1.0]}'),
        "speaks protocol version 2, this client 1; run the same textenv version on both machines.",
    ),
    (
        (200, b'{"score": 1.0}'),
        "returned JSON without a 'scores' list (\"{'score': 1.0}\"); the server must answer "
        '{"version": 1, "scores": [...]}.',
    ),
    (
        (200, b'{"version": 1, "scores": [1' + b"0" * 400 + b"]}"),
        "returned a score too large for a float at row 0; the server must return finite numbers.",
    ),
    (
        (500, b'{"version": 1, "error": "scoring failed: boom"}'),
        "answered HTTP 500: scoring failed: boom; fix the request or the server (see its log), or point "
        "env.reward at a textenv reward server.",
    ),
]


@pytest.mark.parametrize(
    ("answer", "message"), GARBAGE, ids=["html", "length", "nan", "string", "version", "shape", "huge", "500"]
)
def test_a_server_that_returns_garbage(servers, policy_tok, answer, message):
    server, url = scripted(servers, answer)
    with pytest.raises(RewardEndpointError) as exc:
        HttpReward(url, policy_tok, retries=3, backoff=0.0).score_texts(["q"], ["r"])
    assert str(exc.value) == f"reward endpoint {url} {message}"
    assert server.calls == 1  # garbage is not retried


def test_retries_503_then_succeeds(servers, policy_tok):
    server, url = scripted(servers, (503, b"busy"), (503, b"busy"), (200, b'{"version": 1, "scores": [0.5]}'))
    slept = []
    assert HttpReward(url, policy_tok, backoff=0.1, sleep=slept.append).score_texts(
        ["q"], ["r"]
    ).tolist() == [0.5]
    assert slept == [0.1, 0.2] and server.calls == 3


def test_the_server_refuses_bad_requests():
    from rewards.serving import handle_request
    from textenv.reward_plugins import load_text_scorer

    scorer = load_text_scorer("sentiment", "tiny-gpt2")
    ok = handle_request(
        scorer, json.dumps({"version": 1, "queries": ["a"], "responses": ["I love it"]}).encode()
    )
    assert ok[0] == 200 and ok[1]["scores"][0] > 0
    assert handle_request(scorer, b'{"version": 7}') == (
        400,
        {
            "version": 1,
            "error": "unsupported protocol version 7; this server speaks 1: run the same textenv version on both machines",
        },
    )
    assert handle_request(scorer, b'{"version": 1, "queries": [1], "responses": []}')[1]["error"] == (
        "field 'queries' must be a list of strings"
    )
    assert handle_request(scorer, b"nope")[0] == 400
    with pytest.raises(
        RewardPluginError, match="needs reference summaries, which protocol version 1 does not carry"
    ):
        load_text_scorer("rouge", "tiny-gpt2")


def test_the_server_answers_a_negative_content_length_at_once(servers):
    import http.client

    from rewards.serving import make_server

    server = serve(make_server("sentiment", port=0, tokenizer="tiny-gpt2"))
    servers.append(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    conn.putrequest("POST", "/score")
    conn.putheader("Content-Length", "-1")
    conn.endheaders()
    reply = conn.getresponse()
    assert reply.status == 411 and b"a byte count >= 0" in reply.read()


def test_serve_reward_cli_on_loopback(tmp_path, monkeypatch, capsys, policy_tok):
    import rewards.serving
    from agents.cli import main

    write_module(tmp_path, monkeypatch)
    made = []
    make_server = rewards.serving.make_server
    monkeypatch.setattr(
        rewards.serving, "make_server", lambda *a, **k: made.append(make_server(*a, **k)) or made[-1]
    )
    argv = ["serve-reward", "--model", "my_rewards:length", "--tokenizer", "tiny-gpt2", "--port", "0"]
    thread = threading.Thread(target=lambda: made.append(main(argv)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not capsys.readouterr().out.startswith("textenv serve-reward") and time.monotonic() < deadline:
        time.sleep(0.02)  # until the CLI says it serves
    (server,) = made
    assert server.server_address[0] == "127.0.0.1"  # loopback by default
    q, r = batch(policy_tok, QUERIES, RESPONSES)
    got = resolve_reward(server.url, policy_tok)(q, r)
    assert got.tolist() == (r != policy_tok.pad_token_id).sum(1).astype(float).tolist()
    server.shutdown()
    thread.join(10)
    assert made[-1] == 0
    assert main(["serve-reward", "--model", "no_such_mod:f"]) == 2
    assert capsys.readouterr().err.strip() == (
        "textenv serve-reward: reward 'no_such_mod:f': cannot import module 'no_such_mod' (No module named "
        "'no_such_mod'); install it or put its folder on PYTHONPATH."
    )


# ----------------------------------------------------------------------------- TOML and the CLI
def test_toml_reward_and_options(tmp_path, monkeypatch, seqcls_dir, policy_tok):
    from agents.build import build_reward
    from agents.config import ConfigError, load_config

    toml = tmp_path / "c.toml"
    toml.write_text(
        f'[env]\ntask = "BookSentiment-v0"\nreward = "{seqcls_dir}"\nreward_batch_size = 2\n'
        '[env.reward_options]\ninput = "response"\n[policy]\nmodel = "tiny-gpt2"\n'
    )
    fn = build_reward(load_config(toml), policy_tok)
    assert isinstance(fn, SequenceClassifierReward) and fn.input == "response" and fn.batch_size == 2
    assert fn.device == "cpu"
    with pytest.raises(ConfigError, match=r"unknown reward option\(s\) \['timout'\]"):
        load_config(toml, ["--env.reward_options.timout=3"])
    cfg = load_config(toml, ["--env.reward=no_such_mod:f"])
    with pytest.raises(
        ConfigError, match=r"^env.reward = 'no_such_mod:f': reward 'no_such_mod:f': cannot import module"
    ):
        build_reward(cfg, policy_tok)
    write_module(tmp_path, monkeypatch)
    assert (
        build_reward(load_config(toml, ["--env.reward=my_rewards:length"]), policy_tok).__name__ == "length"
    )
    cfg = load_config(toml, ["--env.reward=http://127.0.0.1:9/score", "--env.reward_options.timeout=2.5"])
    fn = build_reward(cfg, policy_tok)
    assert isinstance(fn, HttpReward) and fn.timeout == 2.5 and fn.retries == 3


@pytest.mark.parametrize("kind", ["seqcls", "http", "module", "down"])
def test_train_policy_cli_one_iteration(kind, tmp_path, seqcls_dir, servers, monkeypatch, capsys):
    from agents.cli import main

    extra = []
    if kind == "http":
        from rewards.serving import make_server

        server = serve(make_server(str(seqcls_dir), port=0))
        servers.append(server)
        spec = server.url
    elif kind == "module":
        write_module(tmp_path, monkeypatch)
        spec = "my_rewards:length"
    elif kind == "down":  # nothing listens on port 9: one line, exit 1, no traceback, never a zero
        spec, extra = "http://127.0.0.1:9/score", ["--env.reward_options.retries=0"]
    else:
        spec = str(seqcls_dir)
    out = tmp_path / "run"
    rc = main(
        [
            "train-policy",
            "--config",
            "tiny_toy",
            "--no-progress",
            f"--env.reward={spec}",
            *extra,
            "--run.iterations=1",
            f"--run.out_dir={out}",
            "--run.tensorboard=false",
            "--run.plot=false",
            "--ppo.epochs=1",
            "--run.checkpoint_every=0",
            "--run.sample_every=0",
        ]
    )
    if kind == "down":
        err = capsys.readouterr().err
        assert rc == 1 and "http://127.0.0.1:9/score" in err and "--resume" in err, err
        metrics = out / "metrics.jsonl"
        assert "Traceback" not in err and not (metrics.exists() and metrics.read_text().strip())
        return
    assert rc == 0
    (row,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(row["objective/score"])
