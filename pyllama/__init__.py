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
    KVCacheFullError,
    LlamaError,
    ModelLoadError,
)
from .llama import Llama, LlamaState
from .lora import LoraAdapter
from .model import Model
from .sampler import Sampler
from .sampling import SamplingParams
from .session import ContextFullError, Session
from .speculative import DraftModel, PromptLookupDecoding
from .system import Device, SystemInfo, system_info
from .vocab import Vocab

__all__ = [
    "__version__",
    "Batch",
    "Context",
    "Llama",
    "LlamaState",
    "LoraAdapter",
    "Model",
    "Perf",
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
    "Device",
    "DraftModel",
    "PromptLookupDecoding",
    "KVCacheFullError",
    "LlamaError",
    "ModelLoadError",
    "SystemInfo",
    "system_info",
]
