"""``pyllama perplexity -m MODEL -f TEXT -c N``: llama.cpp's chunked perplexity with its +/- estimate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import _options, _placement


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("perplexity", help="perplexity of a text file (llama.cpp's method)")
    _options.add_model(parser)
    parser.add_argument("-f", "--file", required=True, help="text file")
    parser.add_argument("--chunks", type=int, default=-1, help="score at most this many chunks")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..model import Model
    from ..perplexity import perplexity

    text = Path(args.file).read_text(encoding="utf-8")
    with Model(args.model, n_gpu_layers=args.n_gpu_layers, **_placement.model_kwargs(args)) as model:
        result = perplexity(model, text, args.n_ctx, n_threads=_options.threads(args.n_threads),
                            n_chunks=args.chunks,
                            progress=lambda i, ppl: print(f"[{i}]{ppl:.4f},", end="", flush=True))
    print()
    print(f"Final estimate: PPL = {result.ppl:.4f} +/- {result.uncertainty:.5f}")
    print(f"({result.chunks} chunks of {args.n_ctx} tokens, {result.scored_tokens} scored)", file=sys.stderr)
    return 0
