"""Caches of prompt states: a later prompt that starts like an earlier one resumes from its
state instead of evaluating the shared part again (llama-cpp-python's LlamaRAMCache and
LlamaDiskCache). Use with ``Llama.set_cache``."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .kv_sequence import common_prefix


@dataclasses.dataclass(frozen=True)
class LlamaState:
    """A saved session: the tokens and llama.cpp's state bytes for them."""

    tokens: tuple[int, ...]
    state: bytes
    seed: int


def _best_key(keys, tokens: tuple[int, ...]) -> tuple[int, ...] | None:
    """The stored token tuple sharing the longest prefix with ``tokens`` (a state holds its
    prompt and the completion after it; the shared part is what a new prompt can reuse)."""
    scored = [(common_prefix(key, tokens), key) for key in keys]
    shared, best = max(scored, key=lambda item: item[0], default=(0, None))
    return best if shared > 0 else None


class RAMCache:
    """Keeps states in memory, least recently used dropped first beyond ``capacity_bytes``."""

    def __init__(self, capacity_bytes: int = 2 << 30) -> None:
        self.capacity_bytes = capacity_bytes
        self._states: OrderedDict[tuple[int, ...], LlamaState] = OrderedDict()

    @property
    def size_bytes(self) -> int:
        return sum(len(s.state) for s in self._states.values())

    def __len__(self) -> int:
        return len(self._states)

    def best_match(self, tokens: tuple[int, ...]) -> LlamaState | None:
        """The stored state that shares the longest prefix with ``tokens``."""
        best = _best_key(self._states, tokens)
        if best is None:
            return None
        self._states.move_to_end(best)
        return self._states[best]

    def put(self, state: LlamaState) -> None:
        self._states[state.tokens] = state
        self._states.move_to_end(state.tokens)
        while len(self._states) > 1 and self.size_bytes > self.capacity_bytes:
            self._states.popitem(last=False)


class DiskCache(RAMCache):
    """Keeps states as files in ``cache_dir`` (survives the process); same lookup as RAMCache."""

    def __init__(self, cache_dir: str | os.PathLike[str], capacity_bytes: int = 10 << 30) -> None:
        super().__init__(capacity_bytes)
        self.directory = Path(cache_dir)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[tuple[int, ...], Path] = {}
        for path in sorted(self.directory.glob("*.state"), key=lambda p: p.stat().st_mtime):
            tokens = self._read_tokens(path)
            if tokens is not None:
                self._files[tokens] = path

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._files.values() if p.exists())

    def __len__(self) -> int:
        return len(self._files)

    @staticmethod
    def _read_tokens(path: Path) -> tuple[int, ...] | None:
        with path.open("rb") as f:
            header = f.read(12)
            if len(header) != 12 or header[:4] != b"PYLS":
                return None
            n, _seed = struct.unpack("<II", header[4:])
            return tuple(np.frombuffer(f.read(4 * n), dtype=np.int32).tolist())

    def best_match(self, tokens: tuple[int, ...]) -> LlamaState | None:
        best = _best_key(self._files, tokens)
        if best is None:
            return None
        data = self._files[best].read_bytes()
        n, seed = struct.unpack("<II", data[4:12])
        os.utime(self._files[best])
        return LlamaState(best, data[12 + 4 * n:], seed)

    def put(self, state: LlamaState) -> None:
        name = hashlib.sha256(np.asarray(state.tokens, dtype=np.int32).tobytes()).hexdigest()[:32]
        path = self.directory / f"{name}.state"
        partial = path.with_suffix(".part")
        header = b"PYLS" + struct.pack("<II", len(state.tokens), state.seed & 0xFFFFFFFF)
        partial.write_bytes(header + np.asarray(state.tokens, dtype=np.int32).tobytes() + state.state)
        partial.replace(path)
        self._files[state.tokens] = path
        while len(self._files) > 1 and self.size_bytes > self.capacity_bytes:
            oldest = min(self._files, key=lambda key: self._files[key].stat().st_mtime)
            self._files.pop(oldest).unlink(missing_ok=True)
