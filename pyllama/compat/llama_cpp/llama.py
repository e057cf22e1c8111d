"""``llama_cpp.llama``: the high-level API, which is pyllama's own."""

from __future__ import annotations

import numpy as np

from ...generation.cache import LlamaState
from ...generation.hooks import LogitsProcessor, LogitsProcessorList, StoppingCriteriaList
from ...generation.hooks import StoppingCriterion as StoppingCriteria
from ...llama import Llama
from .llama_grammar import LlamaGrammar
from .llama_tokenizer import BaseLlamaTokenizer, LlamaTokenizer
from .llama_types import *  # noqa: F403  (llama-cpp-python's llama module carries the types too)


class MinTokensLogitsProcessor:
    """Keeps ``token_eos`` from being drawn until ``min_tokens`` tokens were generated."""

    def __init__(self, min_tokens: int, token_eos: int) -> None:
        self.min_tokens = min_tokens
        self.token_eos = token_eos
        self.prompt_tokens: int | None = None

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.prompt_tokens is None:
            self.prompt_tokens = len(input_ids)
        if len(input_ids) - self.prompt_tokens < self.min_tokens:
            scores[self.token_eos] = -np.inf
        return scores
