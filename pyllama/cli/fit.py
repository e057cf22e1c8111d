"""``pyllama fit -m MODEL [-c N]``: how many layers fit on each device, from the file's tensor sizes."""

from __future__ import annotations

import argparse
import re

from . import _options


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("fit", help="suggest n_gpu_layers for the free memory of each device")
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("-c", "--ctx-size", dest="n_ctx", type=_options.at_least(1), default=4096)
    parser.add_argument("--reserve-mib", type=int, default=512, help="memory to leave free per device (MiB)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..gguf_check import tensor_sizes
    from ..model import Model
    from ..system import devices

    sizes = tensor_sizes(args.model)
    per_layer: dict[int, int] = {}
    rest = 0
    for name, size in sizes.items():
        match = re.match(r"blk\.(\d+)\.", name)
        if match:
            per_layer[int(match.group(1))] = per_layer.get(int(match.group(1)), 0) + size
        else:
            rest += size
    with Model(args.model, vocab_only=True) as model:
        meta = model.metadata
    arch = meta.get("general.architecture", "")
    n_layer = int(meta.get(f"{arch}.block_count", len(per_layer) or 1))
    n_embd = int(meta.get(f"{arch}.embedding_length", 0))
    n_head = int(meta.get(f"{arch}.attention.head_count", 1) or 1)
    n_head_kv = int(meta.get(f"{arch}.attention.head_count_kv", n_head) or n_head)
    kv_per_layer = 2 * args.n_ctx * (n_embd // n_head) * n_head_kv * 2  # K and V, f16
    layer = max(per_layer.values(), default=0) + kv_per_layer
    mib = 2 ** 20
    print(f"{args.model}: {n_layer} layers, {sum(per_layer.values()) / mib:.1f} MiB in layers "
          f"(~{layer / mib:.1f} MiB each with a {args.n_ctx}-token KV cache), {rest / mib:.1f} MiB outside them")
    gpus = [d for d in devices() if d.type.name in ("GPU", "IGPU")]
    if not gpus:
        print("no GPU found: n_gpu_layers 0 (everything runs on the CPU)")
    for device in gpus:
        free = device.memory_free - args.reserve_mib * mib
        fit = max(0, min(n_layer, int(free // layer))) if layer else n_layer
        everything = fit == n_layer and free - n_layer * layer >= rest
        print(f"{device.name} ({device.description}): {device.memory_free / mib:.0f} MiB free -> "
              f"n_gpu_layers {-1 if everything else fit}")
    return 0
