"""``pyllama serve``: the OpenAI-compatible server (same flags as ``python -m pyllama.server``)."""

from __future__ import annotations

import argparse

from .._extras import require


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="run the OpenAI-compatible server", add_help=False)
    parser.set_defaults(run=run, passthrough=True)


def run(args: argparse.Namespace) -> int:
    require(("fastapi", "uvicorn", "fastapi_offline"), "server")
    from ..server.__main__ import main

    return main(args.rest, prog="pyllama serve")
