"""The ``pyllama`` command (also ``python -m pyllama``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import complete, info, perplexity, quantize, rpc_server, serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyllama", description="llama.cpp from Python")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (complete, quantize, perplexity, info, rpc_server, serve):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
