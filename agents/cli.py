"""The ``textenv`` command: one parser, subcommands from each layer (a plain dict of name -> function)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from textenv import cli as textenv_cli


def build_parser():
    parser, sub = textenv_cli.build_parser(return_subparsers=True)
    commands = dict(textenv_cli.COMMANDS)
    from rewards import cli as rewards_cli

    commands.update(rewards_cli.add_parsers(sub))
    return parser, commands


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
