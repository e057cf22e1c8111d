"""Generation: what turns a prompt into tokens, shared by ``Llama``, the server and the CLI.

``generator`` is the per-request generation (sampler chain, stop strings, limits, logprobs,
usage); ``kv_sequence`` keeps one sequence's prefix in a Context across calls; ``params`` holds a
request's sampling settings; ``text_stream`` turns token bytes into safe text;
``speculative`` has the drafters; ``cache`` keeps prompt states between calls.
"""

from .cache import DiskCache, LlamaState, RAMCache
from .params import SamplingParams
from .kv_sequence import KVSequence
from .speculative import DraftModel, PromptLookupDecoding

__all__ = ["DiskCache", "DraftModel", "KVSequence", "LlamaState", "PromptLookupDecoding", "RAMCache",
           "SamplingParams"]
