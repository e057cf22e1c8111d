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
    from ..errors import LlamaError, MissingExtraError

    try:
        return args.run(args)
    except (FileNotFoundError, LlamaError, ValueError, OSError, MissingExtraError) as exc:
        print(f"pyllama {args.command}: error: {describe(exc)}", file=sys.stderr)
        return 1


def describe(exc: Exception) -> str:
    """The error's text; an OSError of the system names its file as coreutils do ("chat.txt: No
    such file or directory") rather than Python's "[Errno 2] ... 'chat.txt'"."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
