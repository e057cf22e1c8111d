"""``llama_cpp.llama_cache``: prompt-state caches for ``Llama.set_cache`` (pyllama.generation.cache)."""

from ...generation.cache import DiskCache as LlamaDiskCache
from ...generation.cache import RAMCache as LlamaRAMCache

BaseLlamaCache = LlamaRAMCache  # the disk cache is one too
LlamaCache = LlamaRAMCache  # llama-cpp-python's old name

__all__ = ["BaseLlamaCache", "LlamaCache", "LlamaDiskCache", "LlamaRAMCache"]
