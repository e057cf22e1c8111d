"""The one place that imports the compiled cffi module.

Everything else does ``from ._ffi import ffi, lib``. On import this checks that the
compiled module was built from this version of the package (a stale build in an
editable install otherwise fails in obscure ways), routes llama.cpp's log into
Python ``logging``, loads dynamically built backends and initialises llama.cpp once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ._version import __version__

try:
    from . import _pyllama_cffi
    from ._pyllama_cffi import ffi, lib
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        f"pyllama's compiled module could not be loaded ({exc}). "
        "Reinstall the package: pip install --force-reinstall --no-cache-dir pyllama-cffi"
    ) from exc


def _text(pointer) -> str:
    return ffi.string(pointer).decode("utf-8", "replace")


BUILD_VERSION = _text(lib.pyllama_build_version())
LLAMA_CPP_COMMIT = _text(lib.pyllama_llama_cpp_commit())
BUILD_FLAGS: dict[str, str] = dict(
    flag.split("=", 1) for flag in _text(lib.pyllama_build_flags()).split() if "=" in flag
)

if BUILD_VERSION != __version__:
    raise ImportError(
        f"pyllama's compiled module is from version {BUILD_VERSION} but the package is "
        f"{__version__}; rebuild it (pip install -e . or pip install --force-reinstall pyllama-cffi)"
    )

# where the compiled parts live (in an editable install, not next to this file)
LIBRARY_DIR = Path(_pyllama_cffi.__file__).resolve().parent


def _initialise() -> None:
    from . import log  # installs the log callback before llama.cpp says anything
    from ._gpu_check import flag_on, unusable_gpu_backends
    from .errors import GPUUnavailableWarning

    log.install()
    if flag_on(BUILD_FLAGS.get("GGML_BACKEND_DL")):
        lib.ggml_backend_load_all_from_path(str(LIBRARY_DIR).encode())
    lib.llama_backend_init()
    device_counts = {}
    for i in range(lib.ggml_backend_reg_count()):
        reg = lib.ggml_backend_reg_get(i)
        device_counts[_text(lib.ggml_backend_reg_name(reg))] = lib.ggml_backend_reg_dev_count(reg)
    for message in unusable_gpu_backends(BUILD_FLAGS, device_counts, LIBRARY_DIR, log.take_errors()):
        warnings.warn(message, GPUUnavailableWarning, stacklevel=2)


_initialise()
