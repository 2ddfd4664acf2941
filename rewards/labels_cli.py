"""``textenv labels import|export``: move labels between a comparison store and a file.

* ``textenv labels import FILE --store DB [--format jsonl|openai] [--task TASK] [--tokenizer SPEC |
  --vocab-size N]``: all or nothing; every row checked first (see :mod:`rewards.comparisons`); imported
  questions get fresh ids, the file's ``question_id`` kept as ``source_id``.
* ``textenv labels export --store DB --out FILE [--format jsonl|openai] [--task TASK] [--labelled-only]``:
  the file appears whole or not at all.

Exit status 0 on success, 2 with one line on stderr (``FILE:LINE: reason; fix``) on any bad input; nothing
is written then.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path


def add_parsers(sub) -> dict:
    p = sub.add_parser(
        "labels", help="import or export labels (JSONL or OpenAI's schema) of a comparison store"
    )
    actions = p.add_subparsers(dest="labels_action", required=True, metavar="{import,export}")

    imp = actions.add_parser(
        "import", help="add the rows of a label file to a store (all or nothing; fresh question ids)"
    )
    imp.add_argument("file", metavar="FILE", help="the label file (JSONL in the store's schema, or OpenAI's)")
    imp.add_argument(
        "--store", metavar="DB", required=True, help="SQLite file of the comparison store (created if new)"
    )
    imp.add_argument(
        "--format",
        choices=["jsonl", "openai"],
        default="jsonl",
        help="jsonl: the store's own schema (labels export); openai: OpenAI's best_of_N files",
    )
    imp.add_argument(
        "--task",
        metavar="TASK",
        default=None,
        help="the task the labels are for (needed with --format openai)",
    )
    imp.add_argument(
        "--labeler", metavar="NAME", default="openai", help="labeler name for --format openai rows"
    )
    imp.add_argument(
        "--allow-repeat",
        action="store_true",
        help="import a file this store imported before (its questions are added a second time)",
    )
    vocab = imp.add_mutually_exclusive_group()
    vocab.add_argument(
        "--tokenizer",
        metavar="SPEC",
        default=None,
        help="check token ids against this tokenizer's vocabulary (any model spec)",
    )
    vocab.add_argument("--vocab-size", metavar="N", type=int, default=None, help="check token ids are < N")

    exp = actions.add_parser("export", help="write a store's rows to a file")
    exp.add_argument("--store", metavar="DB", required=True, help="SQLite file of the comparison store")
    exp.add_argument("--out", metavar="FILE", required=True, help="the file to write (replaced whole)")
    exp.add_argument(
        "--format",
        choices=["jsonl", "openai"],
        default="jsonl",
        help="jsonl: every row in the store's schema; openai: labelled best_of_n rows, padded with 50259",
    )
    exp.add_argument("--task", metavar="TASK", default=None, help="only rows of this task")
    exp.add_argument("--labelled-only", action="store_true", help="only labelled rows (jsonl; openai always)")
    exp.add_argument(
        "--query-length",
        metavar="N",
        type=int,
        default=None,
        help="openai: pad queries to N (default: longest)",
    )
    exp.add_argument(
        "--response-length",
        metavar="N",
        type=int,
        default=None,
        help="openai: pad samples to N (default: longest)",
    )
    return {"labels": cmd_labels}


def _fail(message: str) -> int:
    print(f"textenv labels: {message}", file=sys.stderr)
    return 2


def cmd_labels(args: argparse.Namespace) -> int:
    from rewards.comparisons import LabelFileError

    try:
        if args.labels_action == "import":
            return _import(args)
        return _export(args)
    except LabelFileError as e:
        return _fail(str(e))
    except sqlite3.DatabaseError as e:
        return _fail(f"{args.store}: not a comparison store ({e}); --store takes the SQLite file")
    except OSError as e:
        return _fail(f"{e.filename or args.store}: {e.strerror or e}")


def _import(args: argparse.Namespace) -> int:
    from rewards.comparisons import ComparisonStore

    path = Path(args.file)
    if not path.is_file():
        return _fail(f"{path}: no such file" + (" (it is a folder)" if path.is_dir() else ""))
    if args.format == "openai" and not args.task:
        return _fail("--format openai needs --task TASK (the task the labels are for, e.g. BookSentiment-v0)")
    if args.format == "jsonl" and args.task:
        return _fail("--task is for --format openai; JSONL rows name their own task")
    if args.vocab_size is not None and args.vocab_size < 1:
        return _fail(f"--vocab-size {args.vocab_size} must be a positive number of token ids")
    vocab_size = args.vocab_size
    if args.tokenizer:
        from textenv.models import load_tokenizer

        try:
            vocab_size = len(load_tokenizer(args.tokenizer))
        except (OSError, ValueError) as e:
            return _fail(f"--tokenizer {args.tokenizer}: cannot load it ({e})")
    with ComparisonStore(args.store) as store:
        before = store.count()
        if args.format == "openai":
            n = store.import_openai(
                path,
                task=args.task,
                labeler=args.labeler,
                vocab_size=vocab_size,
                allow_repeat=args.allow_repeat,
            )
        else:
            n = store.import_jsonl(path, vocab_size=vocab_size, allow_repeat=args.allow_repeat)
        print(json.dumps({"store": str(args.store), "imported": n, "rows": before + n}))
    return 0


def _export(args: argparse.Namespace) -> int:
    from rewards.comparisons import ComparisonStore

    store_path = Path(args.store)
    if not store_path.is_file():
        return _fail(f"{store_path}: no such store")
    out = Path(args.out)
    if out.is_dir():
        return _fail(f"--out {out} is a folder; give a file name")
    if not out.parent.is_dir():
        return _fail(f"--out {out}: the folder {out.parent} does not exist")
    for flag, value in (("--query-length", args.query_length), ("--response-length", args.response_length)):
        if value is not None and args.format != "openai":
            return _fail(f"{flag} is for --format openai (JSONL rows are not padded)")
        if value is not None and value < 0:
            return _fail(f"{flag} {value} must be a length >= 0")
    with ComparisonStore(store_path) as store:
        if args.format == "openai":
            try:
                n = store.export_openai(
                    out, query_length=args.query_length, response_length=args.response_length, task=args.task
                )
            except ValueError as e:
                return _fail(
                    f"{e} Give a larger --query-length/--response-length, or leave them to the default."
                )
        else:
            n = store.export_jsonl(out, task=args.task, labelled_only=args.labelled_only)
    print(json.dumps({"store": str(store_path), "out": str(out), "format": args.format, "exported": n}))
    return 0
