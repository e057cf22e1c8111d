"""llama-cpp-python's tokenizer objects: the protocol, and the one over a Llama's own vocabulary."""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..llama import Llama


class BaseLlamaTokenizer(abc.ABC):
    @abc.abstractmethod
    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids of UTF-8 ``text``."""

    @abc.abstractmethod
    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        """Bytes of ``tokens``; with ``prev_tokens``, only the bytes they add after those."""


class LlamaTokenizer(BaseLlamaTokenizer):
    """A Llama's GGUF vocabulary (what ``llm.tokenizer()`` and ``llm.tokenizer_`` are)."""

    def __init__(self, llama: Llama) -> None:
        self._llama = llama

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        return self._llama.tokenize(text, add_bos=add_bos, special=special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        return self._llama.detokenize(tokens, prev_tokens=prev_tokens, special=special)

    def encode(self, text: str, add_bos: bool = True, special: bool = True) -> list[int]:
        return self.tokenize(text.encode("utf-8", errors="ignore"), add_bos=add_bos, special=special)

    def decode(self, tokens: Sequence[int]) -> str:
        return self.detokenize(tokens).decode("utf-8", errors="ignore")

    @classmethod
    def from_ggml_file(cls, path: str | os.PathLike[str]) -> LlamaTokenizer:
        from ..llama import Llama

        return cls(Llama(model_path=path, vocab_only=True))


class LlamaHFTokenizer(BaseLlamaTokenizer):
    """A Hugging Face tokenizer behind the same protocol (``pip install transformers``)."""

    def __init__(self, hf_tokenizer: Any) -> None:
        self.hf_tokenizer = hf_tokenizer

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        return self.hf_tokenizer.encode(text.decode("utf-8", errors="ignore"), add_special_tokens=special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        decode = self.hf_tokenizer.decode
        if prev_tokens is None:
            return decode(list(tokens), skip_special_tokens=not special).encode("utf-8", errors="ignore")
        before = decode(list(prev_tokens), skip_special_tokens=not special).encode("utf-8", errors="ignore")
        whole = decode(list(prev_tokens) + list(tokens), skip_special_tokens=not special)
        return whole.encode("utf-8", errors="ignore")[len(before):]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str) -> LlamaHFTokenizer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(pretrained_model_name_or_path))
