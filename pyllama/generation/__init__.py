"""Generation: what turns a prompt into tokens, shared by ``Llama``, the server and the CLI.

``core`` is the per-request generation (sampler chain, stop strings, limits, logprobs,
usage); ``session`` keeps one sequence's prefix in a Context across calls; ``params`` holds a
request's sampling settings; ``text_stream`` turns token bytes into safe text;
``speculative`` has the drafters; ``cache`` keeps prompt states between calls.
"""

from .cache import DiskCache, LlamaState, RAMCache
from .params import SamplingParams
from .session import ContextFullError, Session
from .speculative import DraftModel, PromptLookupDecoding

__all__ = ["ContextFullError", "DiskCache", "DraftModel", "LlamaState", "PromptLookupDecoding", "RAMCache",
           "SamplingParams", "Session"]
