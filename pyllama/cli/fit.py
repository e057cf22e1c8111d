"""``pyllama fit -m MODEL [-c N] [-ot PATTERN=BUFTYPE] [--cpu-moe] [--n-cpu-moe N]``: how many
layers fit on each device, from the file's tensor sizes.

Tensors that an override pins (``--cpu-moe`` keeps the experts on the CPU) take no room in the
layers a GPU holds; those pinned to a device's own buffer type take that room first. llama.cpp
offloads the last layers first, so layers are counted from the last one.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Mapping, Sequence

from . import _options, _placement

MIB = 2**20


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("fit", help="suggest n_gpu_layers for the free memory of each device")
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("-c", "--ctx-size", dest="n_ctx", type=_options.at_least(1), default=4096)
    parser.add_argument("--reserve-mib", type=int, default=512, help="memory to leave free per device (MiB)")
    _placement.add_overrides(parser)
    parser.set_defaults(run=run)


@dataclasses.dataclass
class Weights:
    """A model's tensor bytes, by where n_gpu_layers and the overrides put them."""

    layers: list[int]  # per layer, what follows n_gpu_layers
    outside: int  # outside the layers (embeddings, output), offloaded with the last layer
    pinned: dict[str, int]  # what an override pins to each buffer type

    @classmethod
    def of(cls, sizes: Mapping[str, int], n_layer: int, overrides: Sequence[tuple[str, str]] = ()) -> Weights:
        weights = cls([0] * n_layer, 0, {})
        for name, size in sizes.items():
            pinned = next((kind for pattern, kind in overrides if re.search(pattern, name)), None)  # first match
            layer = re.match(r"blk\.(\d+)\.", name)
            if pinned is not None:
                weights.pinned[pinned] = weights.pinned.get(pinned, 0) + size
            elif layer and int(layer.group(1)) < n_layer:
                weights.layers[int(layer.group(1))] += size
            else:
                weights.outside += size
        return weights

    def layers_that_fit(self, free: int, kv_per_layer: int, buffer_type: str) -> int:
        """n_gpu_layers for a device with ``free`` bytes whose own buffer type is ``buffer_type``:
        -1 when every layer and what lies outside them fit."""
        free -= self.pinned.get(buffer_type, 0)
        fit = 0
        for size in reversed(self.layers):
            if free < size + kv_per_layer:
                break
            free -= size + kv_per_layer
            fit += 1
        return -1 if fit == len(self.layers) and free >= self.outside else fit


def run(args: argparse.Namespace) -> int:
    from ..gguf_check import tensor_sizes
    from ..model import Model
    from ..placement import buffer_type_of, check_overrides, moe_overrides
    from ..system import devices

    overrides = check_overrides(_placement.tensor_overrides(args)) + moe_overrides(args.cpu_moe, args.n_cpu_moe)
    sizes = tensor_sizes(args.model)
    with Model(args.model, vocab_only=True) as model:
        meta = model.metadata
    arch = meta.get("general.architecture", "")
    n_layer = int(meta.get(f"{arch}.block_count", 1)) or 1
    n_embd = int(meta.get(f"{arch}.embedding_length", 0))
    n_head = int(meta.get(f"{arch}.attention.head_count", 1) or 1)
    n_head_kv = int(meta.get(f"{arch}.attention.head_count_kv", n_head) or n_head)
    kv_per_layer = 2 * args.n_ctx * (n_embd // n_head) * n_head_kv * 2  # K and V, f16
    weights = Weights.of(sizes, n_layer, overrides)
    in_layers = sum(weights.layers)
    print(f"{args.model}: {n_layer} layers, {in_layers / MIB:.1f} MiB in layers (~{in_layers / n_layer / MIB:.1f} MiB "
          f"each, plus {kv_per_layer / MIB:.1f} MiB of {args.n_ctx}-token KV cache), "
          f"{weights.outside / MIB:.1f} MiB outside them")
    for kind, size in weights.pinned.items():
        print(f"pinned by tensor overrides: {size / MIB:.1f} MiB to {kind}")
    gpus = [d for d in devices() if d.type.name in ("GPU", "IGPU")]
    if not gpus:
        print("no GPU found: n_gpu_layers 0 (everything runs on the CPU)")
    for device in gpus:
        free = device.memory_free - args.reserve_mib * MIB
        fit = weights.layers_that_fit(free, kv_per_layer, buffer_type_of(device.name))
        print(f"{device.name} ({device.description}): {device.memory_free / MIB:.0f} MiB free -> n_gpu_layers {fit}")
    return 0
