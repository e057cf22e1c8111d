"""``pyllama serve``: the OpenAI-compatible server (same flags as ``python -m pyllama.server``);
with ``--ray [ADDRESS] --replicas N``, the same server as Ray Serve replicas (pyllama/ray/serve.py)."""

from __future__ import annotations

import argparse

from .._extras import require


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="run the OpenAI-compatible server (--ray: on Ray Serve)",
                                 add_help=False)
    parser.set_defaults(run=run, passthrough=True)


def run(args: argparse.Namespace) -> int:
    require(("fastapi", "uvicorn", "fastapi_offline"), "server")
    if any(arg == "--ray" or arg.startswith("--ray=") for arg in args.rest):
        require(("ray",), "ray")
        from ..ray.serve import main as ray_main

        return ray_main(args.rest)
    from ..server.__main__ import main

    return main(args.rest, prog="pyllama serve")
