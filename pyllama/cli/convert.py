"""``pyllama convert HF_DIR [--outfile F] [--outtype f16]``: llama.cpp's converter, shipped with pyllama.

Its dependencies (torch, transformers...) come with ``pip install 'pyllama-cffi[convert]'``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .._extras import require


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("convert", help="convert a Hugging Face model folder to GGUF", add_help=False)
    parser.set_defaults(run=run, passthrough=True)


def converter() -> Path:
    from .._binding import LIBRARY_DIR  # the installed parts (in an editable install, the build folder)

    script = LIBRARY_DIR / "convert" / "convert_hf_to_gguf.py"
    if not script.exists():
        raise FileNotFoundError(f"the converter is not installed at {script}; reinstall pyllama-cffi")
    return script


def run(args: argparse.Namespace) -> int:
    require(("torch", "transformers"), "convert")
    return subprocess.run([sys.executable, str(converter()), *args.rest]).returncode
