"""llama.cpp for Python, through cffi."""

from ._version import __version__
from .batch import Batch
from .context import Context, Perf, StaleViewError
from .errors import (
    ClosedError,
    ContextCreationError,
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
    SamplingError,
)
from .conversation import ChatSession
from .generation import (ContextFullError, DiskCache, DraftModel, LlamaState, PromptLookupDecoding, RAMCache,
                         SamplingParams, Session)
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
    "Session",
    "ContextFullError",
    "StaleViewError",
    "Vocab",
    "ClosedError",
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
    "SamplingError",
    "SystemInfo",
    "system_info",
]
