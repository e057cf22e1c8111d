"""Ownership of one native llama.cpp object.

The free function is attached at allocation (``ffi.gc``), so the garbage collector
releases what nobody closed. ``close()`` and ``with`` release it on demand. A child
(a Context of a Model) keeps its parent's native handle referenced from its own
destructor, so a parent is freed only after its last child, whatever order Python
collects them in: closing a Model while a Context lives is safe, and the Model's
memory goes when the Context closes. Using a closed object raises ClosedError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .library import ffi
from ..errors import ClosedError


def owned(pointer: Any, free: Callable[[Any], None], *parents: Any) -> Any:
    """Attach ``free`` to ``pointer``; ``parents`` (native handles) outlive it."""

    def destroy(p: Any, _parents: tuple = parents) -> None:
        free(p)

    return ffi.gc(pointer, destroy)


class NativeObject:
    """Base of the classes that own a native pointer in ``self._handle``."""

    _handle: Any = None

    @property
    def _ptr(self) -> Any:
        handle = self._handle
        if handle is None:
            raise ClosedError(f"this {type(self).__name__} is closed")
        return handle

    @property
    def closed(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        """Release the native memory now (after any child that still uses it). Idempotent."""
        self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
