"""``textenv serve-reward``: any reward spec served over HTTP, so that it can run on another machine or GPU.

The protocol (version 1: request and answer fields, errors, versioning) is documented in
:mod:`textenv.reward_plugins`, next to its client :class:`textenv.reward_plugins.HttpReward`. This module
is the server (the standard library's ``http.server``, threaded, one scoring at a time) and the plug-in
that loads this project's reward-model folders (``reward_model.json``) for textenv::

    textenv serve-reward --model runs/rm --port 8008          # -> http://127.0.0.1:8008/score
    gym.make("BookSentiment-v0", reward_fn="http://127.0.0.1:8008/score")

It listens on the loopback interface unless ``--host`` says otherwise; it has no authentication, so
expose it beyond the machine only on a trusted network (or behind an SSH tunnel).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from textenv.reward_plugins import (
    INPUT_MODES,
    PROTOCOL_VERSION,
    RewardSpec,
    TextScorer,
    load_text_scorer,
)

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8008
MAX_BODY = 64 * 2**20  # bytes


def load_reward_model_folder(folder: str | Path, *, device: str = "cpu", batch_size: int = 32):
    """The folder plug-in of ``reward_model.json`` (registered in :data:`textenv.reward_plugins.FOLDER_PLUGINS`):
    the reward model's ``as_reward_fn``, with its ``tokenizer`` attached (textenv re-tokenises for it when
    the policy's differs)."""
    from rewards.model import RewardModel

    rm = RewardModel.load(folder, device=device)
    fn = rm.as_reward_fn(batch_size=batch_size)
    fn.tokenizer = rm.tokenizer
    return fn


class RewardServer(ThreadingHTTPServer):
    """A threaded HTTP server of one :class:`TextScorer`; ``url`` is its ``/score`` endpoint."""

    daemon_threads = True

    def __init__(self, scorer: TextScorer, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        self.scorer = scorer
        self.lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/score"


def make_server(
    spec: str | RewardSpec, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, tokenizer: Any = None
) -> RewardServer:
    """A server of ``spec`` (built, bound, not yet serving: call ``serve_forever``); ``port=0`` picks one."""
    return RewardServer(load_text_scorer(spec, tokenizer), host, port)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _str_list(payload: dict, key: str) -> list[str]:
    value = payload.get(key)
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise _BadRequest(400, f"field {key!r} must be a list of strings")
    return value


def _ids(payload: dict, key: str, n: int) -> list[list[int]] | None:
    value = payload.get(key)
    if value is None:
        return None
    ok = isinstance(value, list) and len(value) == n
    ok = ok and all(isinstance(r, list) and all(type(t) is int for t in r) for r in value)
    if not ok:
        raise _BadRequest(400, f"field {key!r} must be a list of {n} lists of ints")
    return value


def handle_request(scorer: TextScorer, body: bytes) -> tuple[int, dict]:
    """``(status, answer)`` of one protocol-v1 request body (what the HTTP handler sends back)."""
    try:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _BadRequest(400, f"the request body is not JSON ({exc})") from None
        if not isinstance(payload, dict):
            raise _BadRequest(400, "the request must be a JSON object")
        if payload.get("version") != PROTOCOL_VERSION:
            raise _BadRequest(
                400,
                f"unsupported protocol version {payload.get('version')!r}; this server speaks "
                f"{PROTOCOL_VERSION}: run the same textenv version on both machines",
            )
        queries, responses = _str_list(payload, "queries"), _str_list(payload, "responses")
        if len(queries) != len(responses):
            raise _BadRequest(
                400, f"{len(queries)} queries for {len(responses)} responses; send one per response"
            )
        query_ids = _ids(payload, "query_ids", len(queries))
        response_ids = _ids(payload, "response_ids", len(responses))
        fingerprint = payload.get("tokenizer")
    except _BadRequest as exc:
        return exc.status, {"version": PROTOCOL_VERSION, "error": str(exc)}
    try:
        scores = scorer.score(queries, responses, query_ids, response_ids, fingerprint)
        scores = np.asarray(scores, dtype=np.float64)
    except Exception as exc:  # the scorer's failure goes back to the client, named, and to the log
        logger.exception("scoring failed")
        return 500, {"version": PROTOCOL_VERSION, "error": f"scoring failed: {type(exc).__name__}: {exc}"}
    if scores.shape != (len(responses),):
        return 500, {
            "version": PROTOCOL_VERSION,
            "error": f"the reward returned shape {scores.shape} for {len(responses)} responses",
        }
    if not np.isfinite(scores).all():
        rows = np.flatnonzero(~np.isfinite(scores)).tolist()
        return 500, {
            "version": PROTOCOL_VERSION,
            "error": f"the reward returned non-finite scores at rows {rows}",
        }
    return 200, {"version": PROTOCOL_VERSION, "scores": scores.tolist()}


class _Handler(BaseHTTPRequestHandler):
    server: RewardServer
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, answer: dict) -> None:
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/info", ""):
            scorer = self.server.scorer
            self._send(200, {"version": PROTOCOL_VERSION, "model": scorer.spec, "kind": scorer.kind})
        else:
            self._send(
                404, {"version": PROTOCOL_VERSION, "error": f"no such path {self.path!r}; POST /score"}
            )

    def do_POST(self) -> None:
        if self.path.split("?")[0].rstrip("/") != "/score":
            self._send(
                404, {"version": PROTOCOL_VERSION, "error": f"no such path {self.path!r}; POST /score"}
            )
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send(
                411,
                {"version": PROTOCOL_VERSION, "error": "send a Content-Length header (a byte count >= 0)"},
            )
            return
        if length > MAX_BODY:
            self.close_connection = True
            self._send(
                413, {"version": PROTOCOL_VERSION, "error": f"body of {length} bytes; at most {MAX_BODY}"}
            )
            return
        body = self.rfile.read(length)
        with self.server.lock:
            status, answer = handle_request(self.server.scorer, body)
        self._send(status, answer)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)


# ------------------------------------------------------------------------------------------ CLI
def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve-reward",
        help="serve a reward (seq-classification model, reward-model folder, built-in, module:function) over HTTP",
    )
    p.add_argument(
        "--model",
        required=True,
        help="reward spec: a sequence-classification folder or org/name hub id, a reward-model folder, a "
        "built-in score name, or package.module:function",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)"
    )
    p.add_argument("--device", default="cpu", help="torch device of the reward model")
    p.add_argument("--batch-size", type=int, default=32, help="rows scored at once")
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer whose ids a built-in score or module:function reads (default: the embedded model's)",
    )
    p.add_argument("--input", default="pair", choices=INPUT_MODES, help="what a sequence classifier reads")
    p.add_argument(
        "--label", default=None, help="label whose log-odds is the score (multi-label classifiers)"
    )
    p.add_argument("--max-length", type=int, default=None, help="token limit of a sequence classifier")


def cmd_serve_reward(args: argparse.Namespace) -> int:
    label: str | int | None = args.label
    if isinstance(label, str) and label.isdigit():
        label = int(label)
    try:
        spec = RewardSpec(
            args.model,
            device=args.device,
            batch_size=args.batch_size,
            input=args.input,
            label=label,
            max_length=args.max_length,
        )
        server = make_server(spec, host=args.host, port=args.port, tokenizer=args.tokenizer)
    except (ValueError, OSError) as exc:  # a bad spec (RewardPluginError), a missing model, a busy port
        print(f"textenv serve-reward: {exc}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"textenv serve-reward: listening on {args.host} without authentication; expose it only on a "
            "trusted network.",
            file=sys.stderr,
        )
    print(f"textenv serve-reward: serving {args.model} ({server.scorer.kind}) at {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
