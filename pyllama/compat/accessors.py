"""The parts of llama-cpp-python's ``Llama`` that only frameworks need, over pyllama's objects.

:class:`pyllama.Llama` takes them in as a base class, so ``llama_cpp.Llama`` (see
pyllama.compat) and ``pyllama.Llama`` are one class.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .tokenizer import LlamaTokenizer

if TYPE_CHECKING:
    from ..llama import Llama


@dataclasses.dataclass(frozen=True)
class ContextParams:
    """The settings the context was made with, as llama-cpp-python's ``llm.context_params`` has them."""

    n_ctx: int
    n_batch: int
    n_ubatch: int
    n_seq_max: int
    n_threads: int
    n_threads_batch: int
    embeddings: bool


class LlamaCppAccessors:
    @property
    def context_params(self: Llama) -> ContextParams:
        context = self._context()
        n_threads, n_threads_batch = context.n_threads
        return ContextParams(context.n_ctx, context.n_batch, context.n_ubatch, context.n_seq_max, n_threads,
                             n_threads_batch, context._embeddings)

    @functools.cached_property
    def metadata(self: Llama) -> dict[str, str]:
        """The GGUF's key/value metadata, values as text."""
        return self.model.metadata

    @functools.cached_property
    def tokenizer_(self: Llama) -> LlamaTokenizer:
        return LlamaTokenizer(self)

    def tokenizer(self: Llama) -> LlamaTokenizer:
        return self.tokenizer_

    def token_nl(self: Llama) -> int:
        return self.model.vocab.nl

    def create_chat_completion_openai_v1(self: Llama, *args: Any, **kwargs: Any) -> Any:
        """create_chat_completion as the ``openai`` package's types (``pip install openai``):
        a ChatCompletion, or with ``stream=True`` an iterator of ChatCompletionChunk."""
        from openai.types.chat import ChatCompletion, ChatCompletionChunk

        result = self.create_chat_completion(*args, **kwargs)
        if kwargs.get("stream", False):
            return _chunks(result, ChatCompletionChunk)
        return ChatCompletion(**result)


def _chunks(stream: Iterator[dict[str, Any]], chunk_type: Any) -> Iterator[Any]:
    for chunk in stream:
        yield chunk_type(**chunk)
