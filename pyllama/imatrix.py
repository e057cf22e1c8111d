"""Importance matrices (llama-imatrix's GGUF output) for quantization.

Each weight has ``<name>.in_sum2`` (sums of squared activations, one row per expert) and
``<name>.counts``; the importance quantize uses is sum / count per expert, as llama.cpp's
quantize computes it.
"""

from __future__ import annotations

import os

import numpy as np

from .enums import GGMLType
from .errors import LlamaError
from .gguf_check import tensor_table


def load_imatrix(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """weight name -> float32 importance values."""
    table = tensor_table(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")

    def floats(name: str) -> np.ndarray:
        info = table[name]
        if info.type != GGMLType.F32:
            raise LlamaError(f"{os.fspath(path)}: {name} is not F32")
        return np.frombuffer(data[info.offset:info.offset + info.nbytes], dtype=np.float32)

    result = {}
    for name in table:
        if not name.endswith(".in_sum2"):
            continue
        weight = name[: -len(".in_sum2")]
        if f"{weight}.counts" not in table:
            raise LlamaError(f"{os.fspath(path)}: {weight} has sums but no counts")
        sums, counts = floats(name), floats(f"{weight}.counts")
        per_expert = sums.reshape(len(counts), -1)
        values = np.where(counts[:, None] > 0, per_expert / np.maximum(counts[:, None], 1e-30), 1.0)
        result[weight] = np.ascontiguousarray(values.ravel(), dtype=np.float32)
    if not result:
        raise LlamaError(f"{os.fspath(path)}: no importance data (.in_sum2 tensors); is it an imatrix GGUF?")
    return result
