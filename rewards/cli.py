"""``textenv`` subcommands of the reward-learning path: sample, label, train-reward, labelers, serve-labeling,
serve-reward."""

from __future__ import annotations

import argparse
import json
import sys
import time

from textenv.cli import finite_float


def _bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="q", file=sys.stderr, dynamic_ncols=True)


def cmd_sample(args: argparse.Namespace) -> int:
    import textenv  # noqa: F401
    from rewards.comparisons import ComparisonStore
    from rewards.pipeline import sample_questions
    from textenv.models import load_causal_lm

    model, tok = load_causal_lm(args.model, device=args.device)
    t0 = time.perf_counter()
    with ComparisonStore(args.store) as store, _bar(args.queries, "sampling questions") as bar:
        stats = sample_questions(
            store,
            args.task,
            model,
            tok,
            n_queries=args.queries,
            n_samples=args.n,
            seed=args.seed,
            batch_size=args.batch_size,
            require_valid=args.require_valid,
            policy_version=args.policy_version,
            progress=bar.update,
            split=args.split,
        )
    stats["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({"store": str(args.store), **stats}))
    if stats["questions"] == 0:
        print(
            f"textenv sample: stored 0 questions: none of the {stats['sampled']} samples of {args.model!r} had a "
            f"truncate token in the allowed window ({stats['skipped_queries']} queries skipped); pass "
            "--no-require-valid to keep invalid samples, or sample from a model that ends its sentences.",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from rewards.comparisons import ComparisonStore
    from rewards.labelers import make_labeler
    from rewards.pipeline import label_pending

    labeler = make_labeler(args.labeler, temperature=args.temperature, seed=args.seed)
    with ComparisonStore(args.store) as store:
        todo = len(store.pending(task=args.task, limit=args.limit))
        with _bar(todo, f"labelling with {args.labeler}") as bar:
            stats = label_pending(
                store,
                labeler,
                name=f"mock:{args.labeler}:T={args.temperature}",
                task=args.task,
                limit=args.limit,
                duplicate_rate=args.duplicate_rate,
                seed=args.seed,
                progress=bar.update,
            )
    print(json.dumps(stats))
    return 0


def cmd_train_reward(args: argparse.Namespace) -> int:
    from rewards.train import cli_train_reward

    return cli_train_reward(args)


def add_parsers(sub) -> dict:
    _add_sample_parser(sub)
    _add_label_parser(sub)
    _add_train_reward_parser(sub)
    _add_labeling_parsers(sub)
    from rewards import serving

    serving.add_parser(sub)
    return {
        "sample": cmd_sample,
        "label": cmd_label,
        "train-reward": cmd_train_reward,
        "labelers": cmd_labelers,
        "serve-labeling": cmd_serve_labeling,
        "serve-reward": serving.cmd_serve_reward,
    }


def _add_sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="sample N responses per query from a policy into the comparison store")
    p.add_argument("--task", default="BookSentiment-v0")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--store", required=True, help="SQLite file of the comparison store")
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--n", type=int, default=4, help="samples per query (the paper's best-of-4)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--split", default="train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--policy-version", type=int, default=0)
    p.add_argument(
        "--require-valid",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reject samples without a truncate token in the window, as the paper (default: on)",
    )


def _add_label_parser(sub) -> None:
    p = sub.add_parser("label", help="label pending questions with a mock labeler")
    p.add_argument("--store", required=True)
    p.add_argument("--labeler", required=True, choices=["sentiment", "descriptiveness", "summarization"])
    p.add_argument(
        "--temperature", type=finite_float, default=0.0, help="Boltzmann noise (0: always the best)"
    )
    p.add_argument("--duplicate-rate", type=finite_float, default=0.0, help="share of questions asked twice")
    p.add_argument("--task", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)


def _add_train_reward_parser(sub) -> None:
    p = sub.add_parser("train-reward", help="train a reward model on the store's labels")
    p.add_argument("--store", required=True)
    p.add_argument("--task", default="BookSentiment-v0")
    p.add_argument("--model", default="smollm2-135m", help="trunk: any load_causal_lm spec")
    p.add_argument("--out", required=True, help="folder for the trained reward model")
    p.add_argument(
        "--preset",
        default="books",
        help="hyper-parameter preset (books, summarize, paper-books, paper-summarize)",
    )
    p.add_argument("--top-blocks", type=int, default=None, help="train only the top k blocks (0: head only)")
    p.add_argument("--holdout", type=finite_float, default=0.1, help="share of labels held out for accuracy")
    p.add_argument(
        "--normalize-samples", type=int, default=256, help="policy samples for gain/bias (0: skip)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")


def _add_labeling_parsers(sub) -> None:
    """``labelers`` and ``serve-labeling``: the human labeling app."""
    p = sub.add_parser("labelers", help="manage the labeling app's labelers and their access tokens")
    p.add_argument(
        "action",
        choices=["add", "list", "revoke", "rotate"],
        help="add NAME (prints a token once), list, revoke NAME (token and sessions stop working; answers "
        "stay), rotate NAME (a new token, printed once; the old one and all sessions stop working)",
    )
    p.add_argument("name", nargs="?", help="the labeler's name (for add, revoke and rotate)")
    p.add_argument("--store", default="runs/labels.db", help="the comparison store the app serves")
    p.add_argument("--admin", action="store_true", help="may see the admin view and export")
    p = sub.add_parser(
        "serve-labeling", help="start the labeling web app (extra 'labeling'); binds 127.0.0.1 unless told"
    )
    p.add_argument("--store", default="runs/labels.db")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; anything but loopback needs --allow-remote (and TLS in front)",
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--task", default=None, help="only questions of this task id")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host beyond loopback (put a TLS reverse proxy in front; see the printed advice)",
    )
    p.add_argument(
        "--secure-cookies",
        action="store_true",
        help="mark the session cookie Secure (sent over HTTPS only): use it behind a TLS reverse proxy",
    )
    p.add_argument(
        "--lease-minutes", type=finite_float, default=10.0, help="how long a served question is held (10)"
    )
    p.add_argument("--session-hours", type=finite_float, default=12.0, help="lifetime of a login (12)")
    p.add_argument(
        "--max-body-kib", type=int, default=64, help="largest request body in KiB; larger gets 413 (64)"
    )


def cmd_labelers(args: argparse.Namespace) -> int:
    from rewards.labeling.store import LabelingStore

    if args.action != "list" and not args.name:
        print(f"textenv labelers {args.action} NAME: give the labeler's name.", file=sys.stderr)
        return 2
    with LabelingStore(args.store) as store:
        if args.action == "list":
            for who in store.labelers(include_revoked=True):
                print(f"{who.name}{'  (admin)' if who.admin else ''}{'  (revoked)' if who.revoked else ''}")
            return 0
        try:
            if args.action == "add":
                token = store.add_labeler(args.name, admin=args.admin)
            elif args.action == "rotate":
                token = store.rotate_token(args.name)
            else:
                ended = store.revoke_labeler(args.name)
        except (KeyError, ValueError) as exc:
            print(f"textenv labelers {args.action}: {exc.args[0]}", file=sys.stderr)
            return 2
    if args.action == "revoke":
        print(
            f"labeler {args.name!r} revoked in {args.store}: their token and {ended} open session(s) stop working "
            f"now; their answers stay. `textenv labelers rotate {args.name}` gives them a new token."
        )
        return 0
    what = "added to" if args.action == "add" else "has a new token in"
    extra = "" if args.action == "add" else " The old token and all their sessions no longer work."
    print(
        f"labeler {args.name!r} {what} {args.store}.{extra} Access token (shown once, give it to them):\n{token}"
    )
    return 0


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (localhost, 127.0.0.0/8 or ::1)."""
    import ipaddress

    bare = host.strip().strip("[]").lower()
    if bare in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


REVERSE_PROXY_ADVICE = """\
textenv serve-labeling: listening on {host}:{port}, beyond loopback. The app speaks plain HTTP: tokens and
session cookies cross the network in clear unless a TLS reverse proxy sits in front. Either keep the app on
127.0.0.1 and let the proxy (on the same machine) be the only thing that listens outside, e.g. Caddy
(automatic HTTPS certificates):

    labels.example.org {{
        reverse_proxy 127.0.0.1:{port}
        request_body {{
            max_size {kib}KiB
        }}
    }}

or nginx:

    server {{
        listen 443 ssl;
        server_name labels.example.org;
        ssl_certificate     /etc/letsencrypt/live/labels.example.org/fullchain.pem;
        ssl_certificate_key /etc/letsencrypt/live/labels.example.org/privkey.pem;
        client_max_body_size {kib}k;
        location / {{
            proxy_pass http://127.0.0.1:{port};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}

or, if the app must listen on {host}, firewall port {port} so that only the proxy reaches it. Behind
HTTPS, start the app with --secure-cookies (cookies {secure} now) so the browser never sends the session
cookie over plain HTTP.
"""


def cmd_serve_labeling(args: argparse.Namespace) -> int:
    if not is_loopback(args.host) and not args.allow_remote:
        print(
            f"textenv serve-labeling: --host {args.host} listens beyond this machine, and the app speaks plain "
            "HTTP (tokens and cookies in clear). Keep the default 127.0.0.1 behind a TLS reverse proxy, or "
            "pass --allow-remote to listen there anyway.",
            file=sys.stderr,
        )
        return 2
    for flag, value in (
        ("--lease-minutes", args.lease_minutes),
        ("--session-hours", args.session_hours),
        ("--max-body-kib", args.max_body_kib),
    ):
        if value <= 0:
            print(f"textenv serve-labeling: {flag} {value} must be positive.", file=sys.stderr)
            return 2
    if not is_loopback(args.host):
        secure = "are Secure" if args.secure_cookies else "are NOT Secure"
        print(
            REVERSE_PROXY_ADVICE.format(host=args.host, port=args.port, secure=secure, kib=args.max_body_kib),
            file=sys.stderr,
        )
    from rewards.labeling.app import serve

    print(
        f"labeling app on http://{args.host}:{args.port}/ (admin: /admin), store {args.store}",
        file=sys.stderr,
    )
    serve(
        args.store,
        host=args.host,
        port=args.port,
        task=args.task,
        lease_seconds=args.lease_minutes * 60,
        session_seconds=args.session_hours * 3600,
        max_body_bytes=args.max_body_kib * 1024,
        secure_cookies=args.secure_cookies,
    )
    return 0
