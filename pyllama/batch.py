"""Batch: the tokens handed to one ``Context.decode`` call.

The arrays live in Python-owned memory (numpy views over cffi allocations), so a
whole prompt is filled with a few vectorized writes instead of a per-token loop,
and the capacity check happens in Python before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ._binding import ffi


class Batch:
    """Up to ``capacity`` tokens, each with a position, sequence ids and an output flag."""

    def __init__(self, capacity: int, n_seq_max: int = 1) -> None:
        if capacity < 1 or n_seq_max < 1:
            raise ValueError(f"a Batch needs capacity >= 1 and n_seq_max >= 1, got {capacity} and {n_seq_max}")
        self.capacity, self.n_seq_max = capacity, n_seq_max
        self._token = ffi.new("llama_token[]", capacity)
        self._pos = ffi.new("llama_pos[]", capacity)
        self._n_seq_id = ffi.new("int32_t[]", capacity)
        self._seq_storage = ffi.new("llama_seq_id[]", capacity * n_seq_max)
        self._seq_rows = ffi.new("llama_seq_id *[]", [self._seq_storage + i * n_seq_max for i in range(capacity)])
        self._output = ffi.new("int8_t[]", capacity)
        self.tokens = np.frombuffer(ffi.buffer(self._token), dtype=np.int32)
        self.positions = np.frombuffer(ffi.buffer(self._pos), dtype=np.int32)
        self.n_seq_ids = np.frombuffer(ffi.buffer(self._n_seq_id), dtype=np.int32)
        self.seq_ids = np.frombuffer(ffi.buffer(self._seq_storage), dtype=np.int32).reshape(capacity, n_seq_max)
        self.outputs = np.frombuffer(ffi.buffer(self._output), dtype=np.int8)
        self._c = ffi.new("struct llama_batch *")
        self._c.token, self._c.pos, self._c.n_seq_id = self._token, self._pos, self._n_seq_id
        self._c.seq_id, self._c.logits = self._seq_rows, self._output
        self._c.embd = ffi.NULL

    @property
    def n_tokens(self) -> int:
        return self._c.n_tokens

    def __len__(self) -> int:
        return self._c.n_tokens

    @property
    def n_outputs(self) -> int:
        """How many rows of logits/embeddings decoding this batch produces."""
        return int(np.count_nonzero(self.outputs[: self._c.n_tokens]))

    def clear(self) -> None:
        self._c.n_tokens = 0

    def add(self, token: int, pos: int, seq_ids: Iterable[int] = (0,), output: bool = False) -> None:
        """Append one token at position ``pos`` of the given sequences."""
        c = self._c
        i = c.n_tokens
        if i >= self.capacity:
            raise IndexError(f"the batch is full ({self.capacity} tokens)")
        seq_ids = tuple(seq_ids)
        n = len(seq_ids)
        if not 1 <= n <= self.n_seq_max:
            raise ValueError(f"a token needs 1..{self.n_seq_max} sequence ids, got {n}")
        self._token[i], self._pos[i], self._output[i], self._n_seq_id[i] = token, pos, output, n
        start = i * self.n_seq_max
        self._seq_storage[start:start + n] = seq_ids
        c.n_tokens = i + 1

    def add_sequence(self, tokens: Sequence[int] | np.ndarray, start_pos: int = 0, seq_id: int = 0,
                     output: str | bool = "last") -> None:
        """Append many tokens of one sequence at consecutive positions, without a Python loop.

        ``output``: ``"last"`` (logits for the final token only), ``True`` (every token)
        or ``False`` (none).
        """
        array = np.asarray(tokens, dtype=np.int32)
        n, start = array.size, self._c.n_tokens
        if n == 0:
            return
        if start + n > self.capacity:
            raise IndexError(f"{n} tokens do not fit: the batch holds {start} of {self.capacity}")
        end = start + n
        self.tokens[start:end] = array
        self.positions[start:end] = np.arange(start_pos, start_pos + n, dtype=np.int32)
        self.n_seq_ids[start:end] = 1
        self.seq_ids[start:end, 0] = seq_id
        if output == "last":
            self.outputs[start:end - 1] = 0
            self.outputs[end - 1] = 1
        elif isinstance(output, bool):
            self.outputs[start:end] = output
        else:
            raise ValueError(f"output must be 'last', True or False, not {output!r}")
        self._c.n_tokens = end

    @classmethod
    def of(cls, tokens: Sequence[int] | np.ndarray, start_pos: int = 0, seq_id: int = 0,
           output: str | bool = "last") -> Batch:
        """A batch holding exactly ``tokens`` of one sequence."""
        batch = cls(max(1, len(tokens)))
        batch.add_sequence(tokens, start_pos, seq_id, output)
        return batch

    def __repr__(self) -> str:
        return f"<pyllama.Batch {self.n_tokens}/{self.capacity} tokens>"
