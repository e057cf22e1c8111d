"""The ``pyllama`` command (also ``python -m pyllama``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import info, rpc_server


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyllama", description="llama.cpp from Python")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (info, rpc_server):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
