"""``python -m pyllama.compat program.py [args]`` or ``python -m pyllama.compat -m module [args]``:
run a program that imports llama_cpp, unchanged, on pyllama."""

from __future__ import annotations

import os
import runpy
import sys

from .alias import enable

USAGE = "usage: python -m pyllama.compat program.py [args...] | -m module [args...]"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv == ["-m"]:
        print(USAGE, file=sys.stderr if not argv or argv == ["-m"] else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    enable()
    if argv[0] == "-m":
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))  # as `python program.py` sets it
        runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
