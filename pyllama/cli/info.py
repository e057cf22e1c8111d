"""``pyllama info``: the build and the devices this machine offers."""

from __future__ import annotations

import argparse
import dataclasses
import json


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("info", help="show the build, backends and devices")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..system import system_info

    info = system_info()
    if args.json:
        print(json.dumps(dataclasses.asdict(info), indent=2, default=str))
    else:
        print(info)
    return 0
