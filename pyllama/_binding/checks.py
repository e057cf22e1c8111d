"""The one place C results become exceptions.

llama.cpp says why a call failed in its log (error lines, collected per thread by ``log``)
or, for the calls wrapped in csrc/guarded_calls.cpp, in the message of the assertion or C++
exception the wrapper caught. Call :func:`before_call` before a call whose failure you will
explain, then turn its failure value into an exception with :func:`failure` (or the
``check_*`` helpers), which names that reason.
"""

from __future__ import annotations

from typing import Any, TypeVar

from ..errors import DecodeAbortedError, DecodeError, KVCacheFullError
from . import log
from .library import ffi, lib

E = TypeVar("E", bound=Exception)


def before_call() -> None:
    """Forget error lines logged earlier on this thread, so a failure is explained by its own."""
    log.take_errors()


def reason(guarded: bool = False, default: str = "llama.cpp gave no reason") -> str:
    """Why the last llama.cpp call on this thread failed: the error lines it logged, plus, for a
    guarded call, the assertion or exception the wrapper caught."""
    reasons = log.take_errors()
    if guarded:
        caught = ffi.string(lib.pyllama_last_failure()).decode("utf-8", "replace")
        if caught and not any(caught in line for line in reasons):
            reasons.append(caught)
    return "; ".join(reasons) or default


def failure(kind: type[E], message: str, *, guarded: bool = False, default: str = "llama.cpp gave no reason") -> E:
    """``kind("<message>: <reason>")``, to raise."""
    return kind(f"{message}: {reason(guarded, default)}")


def check_pointer(pointer: Any, kind: type[Exception], message: str, *, guarded: bool = False) -> Any:
    """``pointer``, unless it is NULL: then the exception that explains why."""
    if pointer == ffi.NULL:
        raise failure(kind, message, guarded=guarded)
    return pointer


def check_decode(code: int, what: str = "llama_decode") -> None:
    """Raise the exception that matches a ``llama_decode``/``llama_encode`` return code:
    1 = no KV slot (recoverable), 2 = aborted, other non-zero = failed."""
    if code == 0:
        return
    if code == 1:
        raise KVCacheFullError(f"{what}: no KV cache slot for the batch (the context is full)", code)
    if code == 2:
        raise DecodeAbortedError(f"{what}: aborted", code)
    raise DecodeError(f"{what} failed with code {code}: {reason(default='no reason logged')}", code)
