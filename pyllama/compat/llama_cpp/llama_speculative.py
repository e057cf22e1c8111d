"""``llama_cpp.llama_speculative``: drafters for ``Llama(draft_model=...)`` (pyllama.generation.speculative)."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from ...generation.speculative import PromptLookupDecoding as LlamaPromptLookupDecoding


class LlamaDraftModel(abc.ABC):
    """Base of drafters written for llama-cpp-python: called with the ids so far, returns guesses."""

    @abc.abstractmethod
    def __call__(self, input_ids: np.ndarray, /, **kwargs: Any) -> np.ndarray:
        ...


__all__ = ["LlamaDraftModel", "LlamaPromptLookupDecoding"]
