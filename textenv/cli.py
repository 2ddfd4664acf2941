"""``textenv`` subcommands of the environment layer: setup, info, demo (composed in :mod:`agents.cli`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence


def finite_float(text: str) -> float:
    """An argparse ``type`` for a float option: NaN and inf are refused with the value named."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; give a finite value")
    return value


def cmd_setup(args: argparse.Namespace) -> int:
    from textenv import assets

    t0 = time.perf_counter()
    try:
        status = assets.setup(only=args.only or None, force=args.force)
    except RuntimeError as e:
        print(f"textenv setup: {e}", file=sys.stderr)
        return 1
    for name, state in status.items():
        print(f"  {name:14s} {state}")
    print(f"textenv setup: assets ready in {assets.cache_dir()} ({time.perf_counter() - t0:.1f}s)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from textenv import assets

    manifest = assets.read_manifest()
    print(f"cache: {assets.cache_dir()}")
    for name, asset in assets.ASSETS.items():
        entry = manifest.get(name)
        ready = assets.asset_ready(name)
        if ready:
            state = "ready"
        elif asset.optional:
            state = f"optional, not fetched (`textenv setup --only {name}`)"
        else:
            state = "missing (run `textenv setup`)"
        licence = entry["licence"] if entry else asset.licence
        print(f"  {name:14s} {state:32s} {licence}  -- {asset.description}")
        if asset.licence_file:
            where = assets.asset_dir(name) / asset.licence_file
            note = "" if ready else " once fetched"
            print(f"  {'':14s} licence text: {where}{note}")
    if args.json:
        print(json.dumps(manifest, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from textenv.demo import run_demo

    return run_demo(model=args.model, episodes=args.episodes, seed=args.seed)


def build_parser(return_subparsers: bool = False, with_demo: bool = True):
    """The environment layer's parser; ``with_demo=False`` leaves ``demo`` to :mod:`agents.demo`."""
    parser = argparse.ArgumentParser(prog="textenv", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("setup", help="fetch the offline assets into the cache (idempotent)")
    p.add_argument(
        "--only",
        nargs="*",
        help="asset names (default: every non-optional asset; optional ones, e.g. gemma3-270m, only by name)",
    )
    p.add_argument("--force", action="store_true", help="fetch again even when cached")

    p = sub.add_parser("info", help="show the cache folder and which assets are ready")
    p.add_argument("--json", action="store_true", help="also print the manifest")

    if with_demo:
        p = sub.add_parser("demo", help="sample and score a few episodes on the embedded offline default")
        p.add_argument(
            "--model", default="smollm2-135m", help="model spec (default: the embedded SmolLM2-135M)"
        )
        p.add_argument("--episodes", type=int, default=4, help="number of episodes to sample and score")
        p.add_argument("--seed", type=int, default=0)
    return (parser, sub) if return_subparsers else parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "setup": cmd_setup,
    "info": cmd_info,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
