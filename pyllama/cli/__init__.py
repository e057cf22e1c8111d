"""The ``pyllama`` command (also ``python -m pyllama``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import bench, chat, complete, convert, fit, info, perplexity, quantize, rpc_server, serve, speculative


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes get one line (and exit status 2), not the whole usage text."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="pyllama", description="llama.cpp from Python")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for module in (chat, complete, quantize, convert, perplexity, bench, speculative, fit, info, rpc_server, serve):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    from ..errors import LlamaError

    try:
        return args.run(args)
    except (FileNotFoundError, LlamaError, ValueError, OSError) as exc:
        print(f"pyllama {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
