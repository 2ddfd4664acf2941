"""The ``textenv`` command: one parser, subcommands from each layer (a plain dict of name -> function)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from textenv import cli as textenv_cli

# the commands that train or sample: glibc keeps their freed memory (agents.allocator); not the servers
COMPUTE = frozenset({"train-policy", "train-reward", "train-sft", "evaluate", "sample", "demo"})


def build_parser():
    parser, sub = textenv_cli.build_parser(return_subparsers=True, with_demo=False)
    parser.add_argument(
        "--version", action="version", version=f"textenv {_version()}", help="print the version and exit"
    )
    commands = {k: v for k, v in textenv_cli.COMMANDS.items() if k != "demo"}
    from rewards import cli as rewards_cli

    commands.update(rewards_cli.add_parsers(sub))
    from rewards import labels_cli

    commands.update(labels_cli.add_parsers(sub))
    from agents import train as train_mod

    commands.update(train_mod.add_parser(sub))
    from agents import evaluate as evaluate_mod

    commands.update(evaluate_mod.add_parser(sub))
    from agents import sft as sft_mod

    commands.update(sft_mod.add_parser(sub))
    from agents import demo as demo_mod

    commands.update(demo_mod.add_parser(sub))
    return parser, commands


def _version() -> str:
    """The installed distribution's version (pyproject.toml's ``version``, through importlib.metadata)."""
    import textenv

    return textenv.__version__


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--version"]:  # without building the parser, which imports every layer (torch)
        print(f"textenv {_version()}")
        return 0
    parser, commands = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train-policy":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.command in COMPUTE:
        from agents.allocator import keep_freed_memory
        from textenv.models import cpu_linear

        try:
            keep_freed_memory()
            cpu_linear.wanted()
        except (ValueError, RuntimeError) as exc:  # a bad TEXTENV_MALLOC or TEXTENV_CPU_MATMUL
            parser.error(str(exc))
    if args.command == "train-policy":
        return commands[args.command](args, extra)
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
