"""The binding: the compiled cffi module and the plumbing around it.

``library`` imports the compiled ``ffi``/``lib`` (nothing else does); ``log`` routes
llama.cpp's log into Python ``logging``; ``callbacks`` holds the Python functions C calls;
``native`` owns native pointers; ``checks`` turns C results into exceptions; ``gpu_check``
says when a GPU backend cannot run. Importing this package initialises llama.cpp once:
the log callback first, then dynamically built backends, then the backend itself.
"""

from __future__ import annotations

import warnings

from ..errors import GPUUnavailableWarning
from . import log
from .gpu_check import flag_on, unusable_gpu_backends
from .library import BUILD_FLAGS, BUILD_VERSION, LIBRARY_DIR, LLAMA_CPP_COMMIT, ffi, lib

__all__ = ["BUILD_FLAGS", "BUILD_VERSION", "LIBRARY_DIR", "LLAMA_CPP_COMMIT", "ffi", "lib"]


def _initialise() -> None:
    log.install()  # before llama.cpp says anything
    if flag_on(BUILD_FLAGS.get("GGML_BACKEND_DL")):
        lib.ggml_backend_load_all_from_path(str(LIBRARY_DIR).encode())
    lib.llama_backend_init()
    device_counts = {}
    for i in range(lib.ggml_backend_reg_count()):
        reg = lib.ggml_backend_reg_get(i)
        name = ffi.string(lib.ggml_backend_reg_name(reg)).decode("utf-8", "replace")
        device_counts[name] = lib.ggml_backend_reg_dev_count(reg)
    for message in unusable_gpu_backends(BUILD_FLAGS, device_counts, LIBRARY_DIR, log.take_errors()):
        warnings.warn(message, GPUUnavailableWarning, stacklevel=2)


_initialise()
