"""llama-cpp-python's tokenizer objects: the protocol, and the one over a GGUF's own vocabulary.

``Llama.tokenizer()`` hands out a :class:`LlamaTokenizer` (outlines reads the vocabulary
through it), and ``Llama.tokenize``/``detokenize`` are its methods under llama-cpp-python's names.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from typing import Protocol

from .model import Model


class BaseLlamaTokenizer(abc.ABC):
    @abc.abstractmethod
    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids of UTF-8 ``text``."""

    @abc.abstractmethod
    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        """Bytes of ``tokens``; with ``prev_tokens``, only the bytes they add after those."""


class HasModel(Protocol):
    model: Model


class LlamaTokenizer(BaseLlamaTokenizer):
    """A GGUF's vocabulary (what ``llm.tokenizer()`` and ``llm.tokenizer_`` are)."""

    def __init__(self, llama: HasModel | Model) -> None:
        # llama-cpp-python passes the Llama; what tokenizes is its model's vocabulary
        self.model = llama if isinstance(llama, Model) else llama.model

    def tokenize(self, text: bytes | str, add_bos: bool = True, special: bool = True) -> list[int]:
        return self.model.tokenize(text, add_special=add_bos, parse_special=special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        vocab = self.model.vocab
        if prev_tokens is None:
            return vocab.detokenize_bytes(tokens, unparse_special=special)
        before = vocab.detokenize_bytes(prev_tokens, unparse_special=special)
        return vocab.detokenize_bytes(list(prev_tokens) + list(tokens), unparse_special=special)[len(before):]

    def encode(self, text: str, add_bos: bool = True, special: bool = True) -> list[int]:
        return self.tokenize(text.encode("utf-8", errors="ignore"), add_bos=add_bos, special=special)

    def decode(self, tokens: Sequence[int]) -> str:
        return self.detokenize(tokens).decode("utf-8", errors="ignore")

    @classmethod
    def from_ggml_file(cls, path: str | os.PathLike[str]) -> LlamaTokenizer:
        return cls(Model(path, vocab_only=True))
