"""How ``import llama_cpp`` reaches pyllama: an import alias, never a second package on disk.

:func:`enable` puts a finder first in ``sys.meta_path`` that answers ``llama_cpp`` and every
``llama_cpp.<module>`` with the module of the same name under ``pyllama.compat.llama_cpp`` (the
same module object, so ``llama_cpp.Llama is pyllama.Llama`` and nothing is loaded twice). It
also answers ``importlib.metadata`` for the distribution ``llama-cpp-python`` with the version
of the API mirrored, for frameworks that check it (LlamaIndex picks a default model by it).
Both exist only in the process that called enable(): pip, its own process, still sees
llama-cpp-python as not installed, so it never skips installing a real one, nor removes pyllama.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

ALIAS = "llama_cpp"
TARGET = "pyllama.compat.llama_cpp"
DISTRIBUTION = "llama-cpp-python"
MIRRORED_VERSION = "0.3.36"  # the llama-cpp-python release whose API (and llama.cpp pin) pyllama follows


class _SameModule(importlib.abc.Loader):
    """Hands out the already imported target module under the alias name."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._own_spec  # the import system set the alias's spec; keep the module's own


class _MirroredDistribution(importlib.metadata.Distribution):
    """``llama-cpp-python``'s metadata as far as frameworks read it: its name and version."""

    def read_text(self, filename: str) -> str | None:
        if filename == "METADATA":
            return (f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {MIRRORED_VERSION}\n"
                    "Summary: the llama_cpp API, served by pyllama-cffi (pyllama.compat)\n")
        return None

    def locate_file(self, path: str | os.PathLike[str]) -> Path:
        return Path(__file__).resolve().parent / "llama_cpp" / path


class LlamaCppAlias(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        real = TARGET + fullname[len(ALIAS):]
        spec = importlib.util.find_spec(real)
        if spec is None:
            return None  # llama_cpp.<what pyllama does not have>: ModuleNotFoundError, as usual
        return importlib.util.spec_from_loader(fullname, _SameModule(real),
                                               is_package=spec.submodule_search_locations is not None)

    def find_distributions(self, context: importlib.metadata.DistributionFinder.Context | None = None,
                           ) -> Iterator[importlib.metadata.Distribution]:
        context = context or importlib.metadata.DistributionFinder.Context()
        if context.name is None or _normalized(context.name) == _normalized(DISTRIBUTION):
            yield _MirroredDistribution()


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def enabled() -> bool:
    """Whether ``import llama_cpp`` gives pyllama in this process."""
    return any(isinstance(finder, LlamaCppAlias) for finder in sys.meta_path)


def enable() -> bool:
    """Make ``import llama_cpp`` give pyllama's llama-cpp-python surface in this process.

    Returns False, with a warning, when a real llama-cpp-python can be imported: it stays in
    use, unshadowed. Calling it again is harmless."""
    if enabled():
        return True
    if ALIAS in sys.modules or importlib.util.find_spec(ALIAS) is not None:
        warnings.warn(f"{DISTRIBUTION} is installed, so `import {ALIAS}` keeps using it; pyllama.compat.enable() "
                      "changed nothing (pip uninstall llama-cpp-python to run on pyllama)", stacklevel=2)
        return False
    sys.meta_path.insert(0, LlamaCppAlias())
    return True
