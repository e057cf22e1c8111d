"""llama.cpp for Python, through cffi."""

from ._version import __version__
from .errors import (
    ClosedError,
    ContextCreationError,
    ContextOverflowError,
    DecodeAbortedError,
    DecodeError,
    KVCacheFullError,
    LlamaError,
    ModelLoadError,
)
from .system import Device, SystemInfo, system_info

__all__ = [
    "__version__",
    "ClosedError",
    "ContextCreationError",
    "ContextOverflowError",
    "DecodeAbortedError",
    "DecodeError",
    "Device",
    "KVCacheFullError",
    "LlamaError",
    "ModelLoadError",
    "SystemInfo",
    "system_info",
]
