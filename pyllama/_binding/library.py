"""The one place that imports the compiled cffi module, and what it knows about its build.

On import this checks that the compiled module was built from this version of the package
(a stale build in an editable install otherwise fails in obscure ways), and explains the
usual reason it cannot be found: Python picked up the source tree instead of the installed
package.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .._version import __version__

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _missing_module_message(exc: ImportError) -> str:
    if not any(PACKAGE_DIR.glob("_pyllama_cffi*")) and (PACKAGE_DIR.parent / "pyproject.toml").is_file():
        return (f"you are importing pyllama from its source directory ({PACKAGE_DIR.parent}), which has no compiled "
                "module; run Python from another folder to use the installed package, or build this checkout in "
                "place with: pip install -e .")
    return (f"pyllama's compiled module could not be loaded ({exc}). "
            "Reinstall the package: pip install --force-reinstall --no-cache-dir pyllama-cffi")


try:
    from .._pyllama_cffi import __file__ as _compiled_file, ffi, lib
except ImportError as exc:
    if sys.argv[:1] == ["-m"]:  # `python -m pyllama ...` still importing: a command's one-line error, no traceback
        sys.exit(f"pyllama: error: {_missing_module_message(exc)}")
    raise ImportError(_missing_module_message(exc)) from exc


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

# where the compiled parts live (in an editable install, not next to the package's sources)
LIBRARY_DIR = Path(_compiled_file).resolve().parent
