"""``llama_cpp.llama_tokenizer``: the GGUF's own tokenizer (pyllama.llama_tokenizer), or a Hugging Face one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...llama_tokenizer import BaseLlamaTokenizer, LlamaTokenizer


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


__all__ = ["BaseLlamaTokenizer", "LlamaHFTokenizer", "LlamaTokenizer"]
