"""``llama_cpp.llama_cpp``: the low-level functions, as far as pyllama answers them yet.

llama-cpp-python's are ctypes functions on raw pointers (``llm.model``, ``llm.ctx``). Here
they take pyllama's own objects, which is what ``llm.model`` is on a pyllama Llama: enough
for outlines' tokenizer, which reads the vocabulary through these two.
"""

from __future__ import annotations

from typing import Any

from ...model import Model
from ...vocab import Vocab


def llama_model_get_vocab(model: Model) -> Vocab:
    return model.vocab


def llama_token_to_piece(vocab: Vocab, token: int, buf: Any, length: int, lstrip: int, special: bool) -> int:
    """Write the token's bytes into ``buf`` (a ctypes char array, a bytearray); the number of
    bytes, or, as in llama.cpp, minus the number needed when ``length`` is too small."""
    piece = vocab.token_to_piece(token, special=bool(special), lstrip=lstrip)
    if len(piece) > length:
        return -len(piece)
    memoryview(buf).cast("B")[:len(piece)] = piece
    return len(piece)


__all__ = ["llama_model_get_vocab", "llama_token_to_piece"]
