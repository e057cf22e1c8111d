"""Vocab: tokens of a Model, and text <-> token conversion.

Safe to share between threads: every call holds the model's native memory for its duration
(a ``Model.close()`` in another thread cannot free it mid-call), and the scratch buffer for
token pieces is per thread (the GIL is released during the C call).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._binding import ffi, lib
from ._binding.native import NativeObject
from .enums import TokenAttr, VocabType
from .errors import ClosedError


class _PieceBuffer(threading.local):
    def __init__(self) -> None:
        self.buf = ffi.new("char[]", 256)


class Vocab:
    """The vocabulary of a Model (its ``owner``); valid while the model is open."""

    def __init__(self, owner: NativeObject) -> None:
        self._owner = weakref.ref(owner)  # the model owns its vocab; no reference cycle
        self._vocab = lib.llama_model_get_vocab(owner._ptr)  # lives as long as the model's memory
        self._pieces = _PieceBuffer()
        self._n_tokens = lib.llama_vocab_n_tokens(self._vocab)  # fixed at load

    def _hold(self) -> Any:
        """The model's native handle: keep it in a local for the whole C call."""
        owner = self._owner()
        if owner is None:
            raise ClosedError("the Model of this Vocab is gone")
        return owner._ptr  # raises ClosedError when closed

    @property
    def _ptr(self) -> Any:
        """The native vocab, for callers that hold the model themselves (sampler stages)."""
        self._hold()
        return self._vocab

    def _special(self, getter: Any) -> int:
        owner = self._hold()  # noqa: F841 - the model's memory stays alive during the call
        return getter(self._vocab)

    @property
    def type(self) -> VocabType:
        return VocabType(self._special(lib.llama_vocab_type))

    @property
    def n_tokens(self) -> int:
        return self._n_tokens

    def __len__(self) -> int:
        return self._n_tokens

    @property
    def bos(self) -> int:
        return self._special(lib.llama_vocab_bos)

    @property
    def eos(self) -> int:
        return self._special(lib.llama_vocab_eos)

    @property
    def eot(self) -> int:
        return self._special(lib.llama_vocab_eot)

    @property
    def nl(self) -> int:
        return self._special(lib.llama_vocab_nl)

    @property
    def pad(self) -> int:
        return self._special(lib.llama_vocab_pad)

    @property
    def sep(self) -> int:
        return self._special(lib.llama_vocab_sep)

    @property
    def fim_prefix(self) -> int:
        """Fill-in-the-middle prefix token, -1 when the model has none (also fim_suffix, fim_middle)."""
        return self._special(lib.llama_vocab_fim_pre)

    @property
    def fim_suffix(self) -> int:
        return self._special(lib.llama_vocab_fim_suf)

    @property
    def fim_middle(self) -> int:
        return self._special(lib.llama_vocab_fim_mid)

    @property
    def fim_repo(self) -> int:
        """Repository-level FIM: the token before a repository name (-1 when none; also fim_separator)."""
        return self._special(lib.llama_vocab_fim_rep)

    @property
    def fim_separator(self) -> int:
        return self._special(lib.llama_vocab_fim_sep)

    @property
    def add_bos(self) -> bool:
        return bool(self._special(lib.llama_vocab_get_add_bos))

    @property
    def add_eos(self) -> bool:
        return bool(self._special(lib.llama_vocab_get_add_eos))

    @property
    def add_sep(self) -> bool:
        """Whether the tokenizer puts SEP between the two texts of a pair (BERT-style rerankers)."""
        return bool(self._special(lib.llama_vocab_get_add_sep))

    def _check(self, token: int) -> None:
        if not 0 <= token < self._n_tokens:
            raise IndexError(f"token {token} is outside the vocabulary (0..{self._n_tokens - 1})")

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, EOT, ...)."""
        if not 0 <= token < self._n_tokens:
            self._check(token)
        owner = self._hold()  # noqa: F841
        return lib.llama_vocab_is_eog(self._vocab, token)

    def is_control(self, token: int) -> bool:
        self._check(token)
        owner = self._hold()  # noqa: F841
        return lib.llama_vocab_is_control(self._vocab, token)

    def text(self, token: int) -> str:
        """The token's entry in the vocabulary (e.g. ``▁the``), not its rendered text."""
        self._check(token)
        owner = self._hold()  # noqa: F841
        return ffi.string(lib.llama_vocab_get_text(self._vocab, token)).decode("utf-8", "replace")

    def score(self, token: int) -> float:
        self._check(token)
        owner = self._hold()  # noqa: F841
        return lib.llama_vocab_get_score(self._vocab, token)

    def attr(self, token: int) -> TokenAttr:
        self._check(token)
        owner = self._hold()  # noqa: F841
        return TokenAttr(lib.llama_vocab_get_attr(self._vocab, token))

    def tokenize(self, text: str | bytes, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_special`` adds BOS/EOS as the model wants them,
        ``parse_special`` turns written special tokens (``<|im_start|>``) into their ids."""
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        owner = self._hold()  # noqa: F841
        capacity = len(raw) + 2 * add_special + 1
        tokens = ffi.new("llama_token[]", capacity)
        n = lib.llama_tokenize(self._vocab, raw, len(raw), tokens, capacity, add_special, parse_special)
        if n < 0:
            if n == -(2**31):
                raise OverflowError("the text has more tokens than fit in an int32")
            capacity = -n
            tokens = ffi.new("llama_token[]", capacity)
            n = lib.llama_tokenize(self._vocab, raw, len(raw), tokens, capacity, add_special, parse_special)
        return ffi.unpack(tokens, n)  # a list already

    def token_to_piece(self, token: int, special: bool = False, lstrip: int = 0) -> bytes:
        """The bytes a token renders to. May be part of a UTF-8 character: join before decoding."""
        if not 0 <= token < self._n_tokens:
            self._check(token)
        owner = self._hold()  # noqa: F841
        buf = self._pieces.buf
        n = lib.llama_token_to_piece(self._vocab, token, buf, 256, lstrip, special)
        if n < 0:
            buf = ffi.new("char[]", -n)
            n = lib.llama_token_to_piece(self._vocab, token, buf, -n, lstrip, special)
        return ffi.buffer(buf, n)[:]

    def detokenize_bytes(self, tokens: Sequence[int], remove_special: bool = False,
                         unparse_special: bool = False) -> bytes:
        array = np.ascontiguousarray(tokens, dtype=np.int32)
        if array.size and (array.min() < 0 or array.max() >= self._n_tokens):
            raise IndexError(f"token ids must be in 0..{self._n_tokens - 1}")
        owner = self._hold()  # noqa: F841
        c_tokens = ffi.from_buffer("llama_token[]", array)
        capacity = max(16, 8 * len(array))
        while True:
            buf = ffi.new("char[]", capacity)
            n = lib.llama_detokenize(self._vocab, c_tokens, len(array), buf, capacity, remove_special, unparse_special)
            if n >= 0:
                return ffi.buffer(buf, n)[:]
            capacity = -n

    def detokenize(self, tokens: Sequence[int], remove_special: bool = False, unparse_special: bool = False) -> str:
        """Text of a token sequence (invalid UTF-8, e.g. a cut-off character, becomes U+FFFD)."""
        return self.detokenize_bytes(tokens, remove_special, unparse_special).decode("utf-8", "replace")
