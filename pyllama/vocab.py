"""Vocab: tokens of a Model, and text <-> token conversion."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._binding import ffi, lib
from .enums import TokenAttr, VocabType
from .errors import ClosedError

if TYPE_CHECKING:
    from .model import Model


class Vocab:
    """The vocabulary of a :class:`Model`; valid while the model is open."""

    def __init__(self, model: Model) -> None:
        self._model = weakref.ref(model)  # the model owns its vocab; no reference cycle
        self._piece_buf = ffi.new("char[]", 256)
        self._n_tokens = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model._ptr))  # fixed at load

    @property
    def _ptr(self) -> Any:
        model = self._model()
        if model is None:
            raise ClosedError("the Model of this Vocab is gone")
        return lib.llama_model_get_vocab(model._ptr)

    @property
    def type(self) -> VocabType:
        return VocabType(lib.llama_vocab_type(self._ptr))

    @property
    def n_tokens(self) -> int:
        return self._n_tokens

    def __len__(self) -> int:
        return self.n_tokens

    @property
    def bos(self) -> int:
        return lib.llama_vocab_bos(self._ptr)

    @property
    def eos(self) -> int:
        return lib.llama_vocab_eos(self._ptr)

    @property
    def eot(self) -> int:
        return lib.llama_vocab_eot(self._ptr)

    @property
    def nl(self) -> int:
        return lib.llama_vocab_nl(self._ptr)

    @property
    def pad(self) -> int:
        return lib.llama_vocab_pad(self._ptr)

    @property
    def sep(self) -> int:
        return lib.llama_vocab_sep(self._ptr)

    @property
    def fim_prefix(self) -> int:
        """Fill-in-the-middle prefix token, -1 when the model has none (also fim_suffix, fim_middle)."""
        return lib.llama_vocab_fim_pre(self._ptr)

    @property
    def fim_suffix(self) -> int:
        return lib.llama_vocab_fim_suf(self._ptr)

    @property
    def fim_middle(self) -> int:
        return lib.llama_vocab_fim_mid(self._ptr)

    @property
    def add_bos(self) -> bool:
        return lib.llama_vocab_get_add_bos(self._ptr)

    @property
    def add_eos(self) -> bool:
        return lib.llama_vocab_get_add_eos(self._ptr)

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, EOT, ...)."""
        return lib.llama_vocab_is_eog(self._ptr, token)

    def is_control(self, token: int) -> bool:
        return lib.llama_vocab_is_control(self._ptr, token)

    def text(self, token: int) -> str:
        """The token's entry in the vocabulary (e.g. ``▁the``), not its rendered text."""
        self._check(token)
        return ffi.string(lib.llama_vocab_get_text(self._ptr, token)).decode("utf-8", "replace")

    def score(self, token: int) -> float:
        self._check(token)
        return lib.llama_vocab_get_score(self._ptr, token)

    def attr(self, token: int) -> TokenAttr:
        self._check(token)
        return TokenAttr(lib.llama_vocab_get_attr(self._ptr, token))

    def _check(self, token: int) -> None:
        if not 0 <= token < self.n_tokens:
            raise IndexError(f"token {token} is outside the vocabulary (0..{self.n_tokens - 1})")

    def tokenize(self, text: str | bytes, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_special`` adds BOS/EOS as the model wants them,
        ``parse_special`` turns written special tokens (``<|im_start|>``) into their ids."""
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        pointer = self._ptr
        capacity = len(raw) + 2 * add_special + 1
        tokens = ffi.new("llama_token[]", capacity)
        n = lib.llama_tokenize(pointer, raw, len(raw), tokens, capacity, add_special, parse_special)
        if n < 0:
            if n == -(2**31):
                raise OverflowError("the text has more tokens than fit in an int32")
            capacity = -n
            tokens = ffi.new("llama_token[]", capacity)
            n = lib.llama_tokenize(pointer, raw, len(raw), tokens, capacity, add_special, parse_special)
        return list(ffi.unpack(tokens, n))

    def token_to_piece(self, token: int, special: bool = False, lstrip: int = 0) -> bytes:
        """The bytes a token renders to. May be part of a UTF-8 character: join before decoding."""
        self._check(token)
        pointer, buf = self._ptr, self._piece_buf
        n = lib.llama_token_to_piece(pointer, token, buf, len(buf), lstrip, special)
        if n < 0:
            buf = ffi.new("char[]", -n)
            n = lib.llama_token_to_piece(pointer, token, buf, len(buf), lstrip, special)
        return ffi.buffer(buf, n)[:]

    def detokenize_bytes(self, tokens: Sequence[int], remove_special: bool = False,
                         unparse_special: bool = False) -> bytes:
        array = np.ascontiguousarray(tokens, dtype=np.int32)
        if array.size and (array.min() < 0 or array.max() >= self.n_tokens):
            raise IndexError(f"token ids must be in 0..{self.n_tokens - 1}")
        pointer = self._ptr
        c_tokens = ffi.from_buffer("llama_token[]", array)
        capacity = max(16, 8 * len(array))
        while True:
            buf = ffi.new("char[]", capacity)
            n = lib.llama_detokenize(pointer, c_tokens, len(array), buf, capacity, remove_special, unparse_special)
            if n >= 0:
                return ffi.buffer(buf, n)[:]
            capacity = -n

    def detokenize(self, tokens: Sequence[int], remove_special: bool = False, unparse_special: bool = False) -> str:
        """Text of a token sequence (invalid UTF-8, e.g. a cut-off character, becomes U+FFFD)."""
        return self.detokenize_bytes(tokens, remove_special, unparse_special).decode("utf-8", "replace")
