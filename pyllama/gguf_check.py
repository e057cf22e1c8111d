"""Structural check of a GGUF file before llama.cpp sees it.

llama.cpp trusts some header fields enough to abort the process on bad values
(tensor types, dimensions, offsets past the end of a truncated file). This walks
the header, the key/value section and the tensor table with bounds checks and
raises :class:`~pyllama.errors.ModelLoadError` naming the file and the problem.
It never reads tensor data, so it costs a few milliseconds.
"""

from __future__ import annotations

import dataclasses
import mmap
import struct
from pathlib import Path

from ._binding import lib
from .errors import ModelLoadError

MAGIC = b"GGUF"
MAX_DIMS = 4
DEFAULT_ALIGNMENT = 32

# GGUF value types: 0..12 as in gguf.h; fixed sizes for scalars.
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY, _UINT32 = 8, 9, 4


def _shown(raw: bytes, limit: int = 60) -> str:
    """A name from the file as it can be shown in a one-line message (corrupt names are binary)."""
    text = raw[:limit].decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text + ("..." if len(raw) > limit else "")


class _Reader:
    def __init__(self, data, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> ModelLoadError:
        return ModelLoadError(f"{self.path}: not a valid GGUF file: {what} (at byte {self.pos})")

    def take(self, n: int, what: str):
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"{what} runs past the end of the file ({len(self.data)} bytes); is it truncated?")
        start, self.pos = self.pos, self.pos + n
        return self.data[start:self.pos]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return struct.unpack("<Q", self.take(8, what))[0]

    def string(self, what: str) -> bytes:
        return self.take(self.u64(f"length of {what}"), what)

    def value(self, kind: int, key: str):
        if kind in _SCALAR_SIZES:
            raw = self.take(_SCALAR_SIZES[kind], f"value of {key}")
            return struct.unpack("<I", raw)[0] if kind == _UINT32 else None
        if kind == _STRING:
            self.string(f"value of {key}")
            return None
        if kind == _ARRAY:
            item_kind = self.u32(f"array type of {key}")
            count = self.u64(f"array length of {key}")
            if item_kind in _SCALAR_SIZES:
                self.take(count * _SCALAR_SIZES[item_kind], f"array {key}")
            elif item_kind == _STRING:
                if count > len(self.data) - self.pos:
                    raise self.fail(f"array {key} claims {count} strings, more than the file can hold")
                for _ in range(count):
                    self.string(f"an element of {key}")
            else:
                raise self.fail(f"array {key} has element type {item_kind}, expected a GGUF value type")
            return None
        raise self.fail(f"key {key} has value type {kind}, expected 0..12")


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    type: int  # ggml_type
    dims: tuple[int, ...]  # ggml order: dims[0] varies fastest
    offset: int  # from the start of the file
    nbytes: int


def check_gguf(path: str | Path) -> None:
    """Raise ModelLoadError if ``path`` is not a structurally sound GGUF file."""
    tensor_table(path)


def tensor_sizes(path: str | Path) -> dict[str, int]:
    """Bytes of each tensor, read from the header of a checked GGUF file."""
    return {name: info.nbytes for name, info in tensor_table(path).items()}


def tensor_table(path: str | Path) -> dict[str, TensorInfo]:
    """Where each tensor of a checked GGUF file lies, and its type and shape."""
    path = Path(path)
    with path.open("rb") as f:
        size = path.stat().st_size
        if size < 24:
            raise ModelLoadError(f"{path}: not a GGUF file: only {size} bytes")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _check(_Reader(data, path), size)


def _check(r: _Reader, size: int) -> dict[str, TensorInfo]:
    if r.take(4, "magic") != MAGIC:
        raise ModelLoadError(f"{r.path}: not a GGUF file (the first bytes are not 'GGUF')")
    version = r.u32("version")
    if version not in (2, 3):
        raise r.fail(f"GGUF version {version}, expected 2 or 3")
    n_tensors, n_kv = r.u64("tensor count"), r.u64("key count")
    if n_tensors > size // 24 or n_kv > size // 12:
        raise r.fail(f"header claims {n_tensors} tensors and {n_kv} keys, more than fit in {size} bytes")

    alignment = DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = _shown(r.string("a key"))
        value = r.value(r.u32(f"type of {key}"), key)
        if key == "general.alignment":
            if value is None or value == 0 or value & (value - 1):
                raise r.fail(f"general.alignment must be a power of two uint32, got {value}")
            alignment = value

    tensors = []
    for _ in range(n_tensors):
        name = _shown(r.string("a tensor name"))
        n_dims = r.u32(f"dimension count of {name}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise r.fail(f"tensor {name} has {n_dims} dimensions, expected 1..{MAX_DIMS}")
        dims = [r.u64(f"dimensions of {name}") for _ in range(n_dims)]
        kind = r.u32(f"type of {name}")
        offset = r.u64(f"offset of {name}")
        tensors.append((name, dims, kind, offset))

    data_start = -(-r.pos // alignment) * alignment
    table = {}
    for name, dims, kind, offset in tensors:
        nbytes = _tensor_bytes(r, name, dims, kind)
        table[name] = TensorInfo(kind, tuple(dims), data_start + offset, nbytes)
        if offset % alignment:
            raise r.fail(f"tensor {name} starts at offset {offset}, not a multiple of the alignment {alignment}")
        if data_start + offset + nbytes > size:
            raise r.fail(f"tensor {name} ends at byte {data_start + offset + nbytes}, past the end of the "
                         f"file ({size} bytes); is it truncated?")
    return table


def _tensor_bytes(r: _Reader, name: str, dims: list[int], kind: int) -> int:
    if kind >= lib.GGML_TYPE_COUNT or lib.ggml_type_size(kind) == 0:
        raise r.fail(f"tensor {name} has type {kind}, which this llama.cpp does not know")
    block = lib.ggml_blck_size(kind)
    if any(d <= 0 or d >= 1 << 40 for d in dims):
        raise r.fail(f"tensor {name} has dimensions {dims}")
    if dims[0] % block:
        raise r.fail(f"tensor {name}: first dimension {dims[0]} is not a multiple of the block size {block}")
    elements = 1
    for d in dims:
        elements *= d
    return elements // block * lib.ggml_type_size(kind)
