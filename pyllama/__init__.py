"""llama.cpp for Python, through cffi."""

from ._version import __version__
from .batch import Batch
from .context import Context, Perf
from .errors import (  # what a caller of the Python API can catch (the CLI's and server's own stay inside)
    ChatTemplateError,
    ClosedError,
    ContextCreationError,
    ContextFullError,
    ContextOverflowError,
    DecodeAbortedError,
    DecodeError,
    GPUUnavailableWarning,
    IgnoredArgumentWarning,
    KVCacheFullError,
    LlamaError,
    MediaError,
    MediaTooLargeError,
    ModelLoadError,
    NoModelError,
    SamplingError,
    SchemaError,
    StaleViewError,
    StreamPreemptedError,
    TemplateLimitError,
)
from .conversation import ChatSession
from .generation import (DiskCache, DraftModel, KVSequence, LlamaState, PromptLookupDecoding, RAMCache,
                         SamplingParams)
from .generation.hooks import LogitsProcessorList, StoppingCriteriaList
from .llama import Llama
from .lora import LoraAdapter
from .model import Model
from .multimodal import Media, MediaPrompt, Projector
from .sampler import Sampler
from .system import Device, SystemInfo, system_info
from .vocab import Vocab

__all__ = [
    "__version__",
    "Batch",
    "ChatSession",
    "Context",
    "Llama",
    "LlamaState",
    "LoraAdapter",
    "Media",
    "MediaError",
    "MediaPrompt",
    "MediaTooLargeError",
    "Model",
    "Perf",
    "Projector",
    "Sampler",
    "SamplingParams",
    "KVSequence",
    "Vocab",
    "ChatTemplateError",
    "ClosedError",
    "ContextFullError",
    "ContextCreationError",
    "ContextOverflowError",
    "DecodeAbortedError",
    "DecodeError",
    "GPUUnavailableWarning",
    "IgnoredArgumentWarning",
    "LogitsProcessorList",
    "StoppingCriteriaList",
    "Device",
    "DiskCache",
    "DraftModel",
    "PromptLookupDecoding",
    "RAMCache",
    "KVCacheFullError",
    "LlamaError",
    "ModelLoadError",
    "NoModelError",
    "SamplingError",
    "SchemaError",
    "StaleViewError",
    "StreamPreemptedError",
    "TemplateLimitError",
    "SystemInfo",
    "system_info",
]
