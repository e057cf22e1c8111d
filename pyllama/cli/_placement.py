"""llama-server's flags for where a model's weights go (pyllama.placement), for the commands
that load one: ``-ot``, ``--cpu-moe``, ``--n-cpu-moe``, and ``-dev``, ``-ts``, ``-mg``, ``-sm``.

Values are read when the command runs, so a bad one is the command's one-line error naming
the choices (``pyllama complete: error: unknown buffer type 'GPU'; this machine has: CPU``).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """The flags that pin tensors to a buffer type (``pyllama fit`` reads only these)."""
    parser.add_argument("-ot", "--override-tensor", dest="tensor_overrides", action="append", default=[],
                        metavar="PATTERN=BUFTYPE,...", help="keep tensors whose names match PATTERN in BUFTYPE "
                                                           "(e.g. exps=CPU; the first match wins)")
    parser.add_argument("-cmoe", "--cpu-moe", action="store_true",
                        help="keep the Mixture-of-Experts weights of every layer on the CPU")
    parser.add_argument("-ncmoe", "--n-cpu-moe", type=int, default=0, metavar="N",
                        help="keep the Mixture-of-Experts weights of the first N layers on the CPU")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_overrides(parser)
    parser.add_argument("-dev", "--device", dest="devices", default=None, metavar="DEV,...",
                        help="devices to offload to, or none (pyllama info lists them)")
    parser.add_argument("-ts", "--tensor-split", default=None, metavar="N0,N1,...",
                        help="share of the model for each GPU, e.g. 3,1")
    parser.add_argument("-mg", "--main-gpu", type=int, default=0,
                        help="the GPU for the whole model with --split-mode none (default 0)")
    parser.add_argument("-sm", "--split-mode", default="layer",
                        help="how to spread the model over GPUs: none, layer (default), row or tensor")


def tensor_overrides(args: argparse.Namespace) -> list[tuple[str, str]]:
    from ..placement import parse_overrides

    return [pair for text in args.tensor_overrides for pair in parse_overrides(text)]


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Model's (and Llama's) placement arguments from the flags of :func:`add_arguments`."""
    from ..placement import parse_devices, parse_split, parse_split_mode

    return {"tensor_overrides": tensor_overrides(args), "cpu_moe": args.cpu_moe, "n_cpu_moe": args.n_cpu_moe,
            "devices": None if args.devices is None else parse_devices(args.devices),
            "tensor_split": None if args.tensor_split is None else parse_split(args.tensor_split),
            "main_gpu": args.main_gpu, "split_mode": parse_split_mode(args.split_mode)}
