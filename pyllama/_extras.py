"""Commands that need an optional extra say which one, in one line, before importing it."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

from .errors import MissingExtraError


def _installed(module: str) -> bool:
    if module in sys.modules:  # None there means the import is blocked
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def require(modules: Sequence[str], extra: str) -> None:
    """Raise :class:`MissingExtraError` naming the missing ``modules`` and the extra that brings them;
    checked without importing them (torch takes seconds to import)."""
    missing = [module for module in modules if not _installed(module)]
    if missing:
        raise MissingExtraError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: "
                                f"pip install 'pyllama-cffi[{extra}]'")
