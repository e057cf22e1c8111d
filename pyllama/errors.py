"""Exceptions raised by pyllama (pyllama._binding.checks turns C results into them)."""

from __future__ import annotations


class LlamaError(Exception):
    """Base class of every error pyllama raises on purpose."""


class ClosedError(LlamaError, ValueError):
    """An object was used after ``close()``: its native memory is gone."""


class ModelLoadError(LlamaError):
    """A model file could not be loaded: not GGUF, truncated, corrupt or unsupported."""


class ContextCreationError(LlamaError):
    """llama.cpp could not create a context (out of memory, bad parameters)."""


class ContextOverflowError(LlamaError, ValueError):
    """Tokens do not fit in the context window."""


class ContextFullError(ContextOverflowError):
    """Generation reached the end of the context and shifting is off."""


class StaleViewError(LlamaError):
    """A decode would move the output buffer while numpy views of it are still referenced."""


class StreamPreemptedError(LlamaError, RuntimeError):
    """A stream was read after a later call from the same thread took over its Llama."""


class DecodeError(LlamaError):
    """``llama_decode``/``llama_encode`` failed."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class KVCacheFullError(DecodeError):
    """No KV cache slot for the batch (code 1): free sequences or use a smaller batch."""


class DecodeAbortedError(DecodeError):
    """The abort callback stopped the decode (code 2)."""


class SamplingError(LlamaError):
    """A sampler stage failed (a grammar left with no way to go on): the sampler is unusable."""


class MediaError(LlamaError, ValueError):
    """An image or audio input cannot be used: unreadable, too large, or not what the projector takes."""


class MediaTooLargeError(MediaError):
    """An image or audio input is larger than a limit (bytes, or pixels); the message names it."""


class ChatTemplateError(ValueError):
    """The chat template does not parse, or failed for these messages."""


class TemplateLimitError(ChatTemplateError):
    """A chat template went past a limit on what it may make or take (the size of a text, the time
    it renders); the message names the limit. Templates come inside model files, from anyone."""


class SchemaError(ValueError):
    """A JSON schema that is invalid or uses something the converter cannot enforce."""


class RegexError(ValueError):
    """A JSON schema ``pattern`` that the regex-to-GBNF converter cannot read or does not support."""


class NoModelError(FileNotFoundError):
    """No model was given and the demo model is not installed; the message says how to get one."""


class MissingExtraError(ImportError):
    """A command's optional dependencies are not installed."""


class QueueFullError(LlamaError):
    """The server's engine has too many requests waiting; try again later."""


class EngineStoppedError(LlamaError):
    """The server's engine thread is not running (it failed, or the server is shutting down)."""


class DownloadError(LlamaError):
    """A model could not be downloaded from Hugging Face (server/hf_download.py); the message names
    the URL, the status or what is missing. ``status`` is the HTTP status when a server answered
    with one; ``transient`` says whether another try may cure it (the network, a 5xx or 429, a
    cut-short body)."""

    def __init__(self, message: str, status: int | None = None, *, transient: bool = False) -> None:
        super().__init__(message)
        self.status, self.transient = status, transient


class GPUUnavailableWarning(RuntimeWarning):
    """The build has a GPU backend that cannot run on this machine, so pyllama uses the CPU."""


class IgnoredArgumentWarning(UserWarning):
    """A llama-cpp-python argument was given that has no effect in pyllama; the message names it."""
