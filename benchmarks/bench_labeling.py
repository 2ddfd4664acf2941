"""Load test of the labeling app on loopback: concurrent labelers, a server restart mid-run, exactly-once.

``--labelers`` threads each submit ``--answers`` answers (GET /api/next, then POST /api/answers with a
bearer token) against ``textenv serve-labeling`` started as a subprocess on 127.0.0.1. Half-way through,
the server is killed and restarted on the same store. A client whose request fails (connection refused
or reset while the server is down) retries the same answer until it gets a reply: 200 acknowledges it,
409 "already answered" means the earlier attempt had committed before the crash (any other 409 fails
the run). Afterwards every acknowledged answer must be in the store exactly once, the store must hold
nothing else, and the coverage must be exact: the questions leases hand out (issue 15) get exactly their
wanted number of answers (one; five for the 5 % duplicates, PAPER.md §1.7), never more, with no question
skipped over; only duplicates still collecting answers when the run stops may have fewer.

    python -m benchmarks.bench_labeling [--labelers 20] [--answers 500]

``--scaling 10000,100000,1000000`` measures instead how the cost of a request grows with the store (issue
21): for each size, a synthetic store of that many questions (half of them answered by 20 synthetic
labelers, with their answer events; built with ``executemany``, then opened once by the app, which
counts its counters once) is served by ``textenv serve-labeling`` on loopback, and one labeler runs
``--rounds`` rounds of ``GET /api/next`` then ``POST /api/answers`` (after 10 rounds of warm-up); the
p50/p95 of each go to ``--out`` (default ``benchmarks/results/labeling_scaling.jsonl``), one row a size.

    python -m benchmarks.bench_labeling --scaling 10000,100000,1000000 [--rounds 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import RESULTS, arg_parser, emit, metadata, out_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "agents.cli", "serve-labeling", "--store", str(store), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the labeling server did not start on port {port} within 60 s.")


def request(port: int, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            method,
            path,
            body=None if body is None else json.dumps(body),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        res = conn.getresponse()
        return res.status, json.loads(res.read() or b"{}")
    finally:
        conn.close()


# a connection refused or reset, or a reply cut off (IncompleteRead, BadStatusLine) while the server is down
BROKEN = (OSError, http.client.HTTPException)


def labeler_loop(port_box: list, token: str, answers: int, acked: list, stats: dict, seed: int) -> None:
    try:
        _label(port_box, token, answers, acked, stats, seed)
    except Exception as exc:  # a dead client must fail the run, not shrink it
        stats["errors"].append(f"{type(exc).__name__}: {exc}")


def _label(port_box: list, token: str, answers: int, acked: list, stats: dict, seed: int) -> None:
    done = 0
    while done < answers:
        try:
            status, q = request(port_box[0], "GET", "/api/next", token)
        except BROKEN:
            stats["retries"] += 1
            time.sleep(0.05)
            continue
        if status != 200 or q.get("done"):
            raise RuntimeError(f"/api/next gave {status} {q}")
        body = {"id": q["id"], "choice": (q["id"] + seed) % len(q["samples"])}
        while True:  # the same answer until the server replies
            try:
                status, reply = request(port_box[0], "POST", "/api/answers", token, body)
            except BROKEN:
                stats["retries"] += 1
                time.sleep(0.05)
                continue
            break
        if status == 200:
            acked.append((reply["question_id"], body["choice"]))
        elif status == 409 and "already answered" in str(reply):  # committed before the connection broke
            stats["acked_after_crash"] += 1
            acked.append((q["question_id"], body["choice"]))
        else:
            raise RuntimeError(f"/api/answers gave {status} {reply}")
        done += 1


def parse_args(argv=None) -> argparse.Namespace:
    p = arg_parser(__doc__)
    p.add_argument("--labelers", type=int, default=20)
    p.add_argument("--answers", type=int, default=500, help="answers per labeler")
    p.add_argument("--no-restart", action="store_true")
    p.add_argument(
        "--out",
        default=None,
        help="JSON lines (default: results/labeling.jsonl or, with "
        "--scaling, results/labeling_scaling.jsonl; '-' prints only)",
    )
    p.add_argument(
        "--scaling", default=None, help="comma-separated store sizes (questions): latency per size"
    )
    p.add_argument("--rounds", type=int, default=200, help="next+answer rounds per size (--scaling)")
    args = p.parse_args(argv)
    if args.scaling is not None:
        try:
            args.sizes = [int(x) for x in args.scaling.split(",")]
        except ValueError:
            p.error(f"--scaling {args.scaling!r}: give store sizes as integers, e.g. 10000,100000,1000000.")
        if not args.sizes or min(args.sizes) < 2 * (args.rounds + 10):
            p.error(
                f"--scaling {args.scaling!r}: each size must be >= {2 * (args.rounds + 10)} questions "
                f"(twice --rounds {args.rounds} plus the warm-up), e.g. 10000."
            )
    if args.rounds < 1:
        p.error(f"--rounds {args.rounds} must be >= 1.")
    name = "labeling_scaling.jsonl" if args.scaling is not None else "labeling.jsonl"
    args.out = args.out or str(RESULTS / name)
    return args


def seed_store(labelers: int, answers: int) -> tuple[Path, list[str]]:
    """A fresh store with enough questions and ``labelers`` labelers: (its path, their tokens)."""
    from rewards.comparisons import Comparison, ComparisonStore
    from rewards.labeling.store import LabelingStore

    tmp = Path(tempfile.mkdtemp(prefix="bench_labeling_"))
    store_path = tmp / "labels.db"
    n_questions = labelers * answers  # enough even if every answer took a fresh question
    with ComparisonStore(store_path) as store:
        store.add(
            Comparison(
                task="BookSentiment-v0",
                query=[1],
                samples=[[2], [3], [4], [5]],
                query_text=f"q{i}",
                sample_texts=["a", "b", "c", "d"],
            )
            for i in range(n_questions)
        )
    users = LabelingStore(store_path)
    tokens = [users.add_labeler(f"l{i}") for i in range(labelers)]
    users.close()
    return store_path, tokens


def load_test(args, store_path: Path, tokens: list[str]) -> tuple[list[list], dict, float, float | None]:
    """One thread per labeler against the server, which is killed and restarted half-way (unless
    ``--no-restart``): (acknowledged answers per labeler, stats, seconds, restart seconds)."""
    port_box = [free_port()]
    server = start_server(store_path, port_box[0])
    acked: list[list] = [[] for _ in tokens]
    stats: dict = {"retries": 0, "acked_after_crash": 0, "errors": []}
    threads = [
        threading.Thread(
            target=labeler_loop, args=(port_box, tok, args.answers, acked[i], stats, i), daemon=True
        )
        for i, tok in enumerate(tokens)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    restart_seconds = None
    if not args.no_restart:
        total = args.labelers * args.answers
        while sum(len(a) for a in acked) < total // 2:
            time.sleep(0.05)
        r0 = time.perf_counter()
        server.send_signal(signal.SIGKILL)  # a crash, not a graceful stop
        server.wait()
        server = start_server(store_path, port_box[0])
        restart_seconds = time.perf_counter() - r0
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    server.terminate()
    server.wait()
    return acked, stats, seconds, restart_seconds


def coverage(store_path: Path, labelers: int) -> dict:
    """Answers per question against the number each question wants (the app's defaults: 5 % of questions
    answered 5 times). Exact: no question over-answered, none skipped over (unanswered below the newest
    answered one), and only duplicates still open at the end (at most one per labeler) short of answers."""
    from rewards.labeling.store import LabelingStore

    with LabelingStore(store_path) as store:
        rows = store.conn.execute(
            "SELECT c.question_id, MIN(c.id), COUNT(c.label) FROM comparisons c GROUP BY c.question_id"
        ).fetchall()
        wanted = {qid: store.wanted_answers(qid) for qid, _, _ in rows}
    newest = max((first for _, first, n in rows if n), default=0)
    histogram: dict[str, int] = {}
    for _, _, n in rows:
        if n:
            histogram[str(n)] = histogram.get(str(n), 0) + 1
    over = sum(n > wanted[q] for q, _, n in rows)
    gaps = sum(n == 0 and first < newest for q, first, n in rows)
    short = sum(0 < n < wanted[q] for q, _, n in rows)
    return {
        "questions_answered": sum(n > 0 for _, _, n in rows),
        "answers_per_question": dict(sorted(histogram.items(), key=lambda kv: int(kv[0]))),
        "duplicate_questions_complete": sum(n == wanted[q] > 1 for q, _, n in rows),
        "over_answered_questions": over,
        "skipped_over_questions": gaps,
        "duplicates_still_open": short,
        "coverage_exact": over == 0 and gaps == 0 and short <= labelers,
    }


def synthetic_store(path: Path, n: int, labelers: int = 20, answered: float = 0.5) -> float:
    """A store of ``n`` questions, the first ``answered`` share of them answered (one judgement each, by
    ``labelers`` synthetic labelers, with their answer events), built with ``executemany`` before the
    labeling tables have their triggers (the first :class:`LabelingStore` counts them once). Returns the
    seconds it took."""
    import sqlite3

    from rewards.comparisons import ComparisonStore
    from rewards.labeling.store import SCHEMA

    t0 = time.perf_counter()
    ComparisonStore(path).close()  # the comparisons table and its indexes
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.executescript(SCHEMA)
    done = int(n * answered)
    start = 1_700_000_000.0
    texts = json.dumps(["sample a", "sample b", "sample c", "sample d"])

    def rows():
        for i in range(1, n + 1):
            label = json.dumps({"best": i % 4}) if i <= done else None
            who = f"s{i % labelers}" if i <= done else None
            when = start + i if i <= done else None
            yield (
                i,
                f"q{i}",
                "BookSentiment-v0",
                "best_of_n",
                "[1, 2]",
                "[[3], [4], [5], [6]]",
                f"context {i}",
                texts,
                label,
                who,
                start,
                when,
            )

    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO comparisons (id, question_id, task, label_type, query, samples, query_text, sample_texts, "
        "label, labeler, created, labeled) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        rows(),
    )
    conn.executemany(
        "INSERT INTO labeling_events (question_id, comparison_id, judgement_id, labeler, action, choice, created) "
        "VALUES (?,?,?,?,'choose',?,?)",
        ((f"q{i}", i, i, f"s{i % labelers}", i % 4, start + i) for i in range(1, done + 1)),
    )
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def scaling(args) -> None:
    """p50/p95 of /api/next and /api/answers against stores of each size (see the module docstring)."""
    from rewards.labeling.store import LabelingStore

    for n in args.sizes:
        tmp = Path(tempfile.mkdtemp(prefix="bench_labeling_scaling_"))
        path = tmp / "labels.db"
        build_s = synthetic_store(path, n)
        t0 = time.perf_counter()
        with LabelingStore(path) as users:  # installs the counters (a one-time count over the store)
            token = users.add_labeler("bench")
        first_open_s = time.perf_counter() - t0
        port = free_port()
        server = start_server(path, port)
        times: dict[str, list[float]] = {"next": [], "answer": []}
        try:
            for r in range(args.rounds + 10):
                t = time.perf_counter()
                status, q = request(port, "GET", "/api/next", token)
                t_next = time.perf_counter() - t
                if status != 200 or q.get("done"):
                    raise RuntimeError(f"/api/next gave {status} {q}")
                t = time.perf_counter()
                status, reply = request(port, "POST", "/api/answers", token, {"id": q["id"], "choice": r % 4})
                t_answer = time.perf_counter() - t
                if status != 200:
                    raise RuntimeError(f"/api/answers gave {status} {reply}")
                if r >= 10:  # warm-up rounds not counted
                    times["next"].append(t_next)
                    times["answer"].append(t_answer)
        finally:
            server.terminate()
            server.wait()
        result = {
            "benchmark": "labeling_scaling",
            "questions": n,
            "answered_in_store": int(n * 0.5),
            "rounds": args.rounds,
            "pending_questions_reported": q["progress"]["pending_questions"],
            **{f"{k}_ms_p{p}": 1e3 * percentile(v, p / 100) for k, v in times.items() for p in (50, 95)},
            "build_s": build_s,
            "first_open_s": first_open_s,
            **metadata(),
        }
        emit(result, out_path(args.out))
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.scaling is not None:
        scaling(args)
        return
    from rewards.comparisons import ComparisonStore

    store_path, tokens = seed_store(args.labelers, args.answers)
    acked, stats, seconds, restart_seconds = load_test(args, store_path, tokens)

    with ComparisonStore(store_path) as store:
        rows = [(c.question_id, c.labeler, c.label["best"]) for c in store.labelled()]
    expected = sorted((qid, f"l{i}", choice) for i, a in enumerate(acked) for qid, choice in a)
    exactly_once = sorted(rows) == expected and len(set(rows)) == len(rows)
    cover = coverage(store_path, args.labelers)
    result = {
        "benchmark": "labeling",
        "labelers": args.labelers,
        "answers_per_labeler": args.answers,
        "acknowledged": len(expected),
        "rows_in_store": len(rows),
        "exactly_once": exactly_once,
        "lost_answers": len(set(expected) - set(rows)),
        "extra_answers": len(rows) - len(set(rows) & set(expected)),
        **cover,
        "answers_per_s": len(expected) / seconds,
        "seconds": seconds,
        "restart_seconds": restart_seconds,
        **stats,
        **metadata(),
    }
    emit(result, out_path(args.out))
    if not exactly_once:
        raise SystemExit("FAILED: the store does not hold every acknowledged answer exactly once.")
    if not cover["coverage_exact"]:
        raise SystemExit(f"FAILED: inexact coverage {cover}.")
    if stats["errors"] or len(expected) != args.labelers * args.answers:
        raise SystemExit(
            f"FAILED: {len(expected)} of {args.labelers * args.answers} answers acknowledged; "
            f"client errors: {stats['errors']}"
        )


if __name__ == "__main__":
    main()
