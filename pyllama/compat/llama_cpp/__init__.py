"""The ``llama_cpp`` package that frameworks import, over pyllama's own objects.

``import llama_cpp`` gives this module once :func:`pyllama.compat.enable` ran. ``Llama`` is
:class:`pyllama.Llama`; the rest is what LangChain, LlamaIndex, outlines, Haystack and
instructor import from llama-cpp-python (see each module).
"""

from . import llama_cache, llama_chat_format, llama_grammar, llama_speculative, llama_tokenizer, llama_types
from .llama import (
    BaseLlamaTokenizer,
    Llama,
    LlamaGrammar,
    LlamaState,
    LlamaTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    MinTokensLogitsProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
)
from .llama_cache import LlamaCache, LlamaDiskCache, LlamaRAMCache
from .llama_cpp import llama_model_get_vocab, llama_token_to_piece
from .llama_types import *  # noqa: F403  (every response type, as llama-cpp-python exports them)
from ..alias import MIRRORED_VERSION as __version__  # the llama-cpp-python API this mirrors
