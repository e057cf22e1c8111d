"""llama.cpp's log, delivered to the Python logger ``pyllama``.

llama.cpp writes a line in pieces (a message, then ``CONT`` continuations) and may
log from its worker threads; pieces are joined per thread and emitted once a line
is complete. The logger has a ``NullHandler``, so nothing shows unless the
application configures logging (``logging.basicConfig(level=logging.INFO)``).
"""

from __future__ import annotations

import _thread
import logging
import threading

from .library import ffi, lib

logger = logging.getLogger("pyllama")
logger.addHandler(logging.NullHandler())

_LEVELS = {
    lib.GGML_LOG_LEVEL_NONE: logging.INFO,
    lib.GGML_LOG_LEVEL_DEBUG: logging.DEBUG,
    lib.GGML_LOG_LEVEL_INFO: logging.INFO,
    lib.GGML_LOG_LEVEL_WARN: logging.WARNING,
    lib.GGML_LOG_LEVEL_ERROR: logging.ERROR,
}


class _Line(threading.local):
    level: int = logging.INFO
    parts: list[str]
    errors: list[str]

    def __init__(self) -> None:
        self.parts = []
        self.errors = []  # error lines since the last take_errors(), to explain a failed call


_line = _Line()


def _keep_interrupt(exc_type, exc_value, traceback) -> None:
    # A Ctrl-C that lands while llama.cpp logs cannot cross the C frames. Deliver it again from
    # another thread, so that it reaches the program once C returns instead of vanishing here.
    if exc_type is KeyboardInterrupt:
        _thread.start_new_thread(_thread.interrupt_main, ())  # (threading.Thread.start would wait)


@ffi.def_extern(onerror=_keep_interrupt)
def _pyllama_on_log(level: int, text, user_data) -> None:
    if level != lib.GGML_LOG_LEVEL_CONT:
        _flush()
        _line.level = _LEVELS.get(level, logging.INFO)
    if _line.level < logging.ERROR and not logger.isEnabledFor(_line.level):
        return
    _line.parts.append(ffi.string(text).decode("utf-8", "replace"))
    if _line.parts[-1].endswith("\n"):
        _flush()


def _flush() -> None:
    if _line.parts:
        message = "".join(_line.parts).rstrip("\n")
        _line.parts.clear()
        if not message:
            return
        if _line.level >= logging.ERROR:
            del _line.errors[:-8]
            _line.errors.append(message)
        logger.log(_line.level, "%s", message)


def take_errors() -> list[str]:
    """The error lines llama.cpp logged on this thread since the last call (for exception messages)."""
    _flush()
    errors, _line.errors = _line.errors, []
    return errors


def install() -> None:
    """Route llama.cpp's, ggml's and libmtmd's log through :data:`logger` (done once, at import)."""
    lib.llama_log_set(lib._pyllama_on_log, ffi.NULL)
    lib.mtmd_helper_log_set(lib._pyllama_on_log, ffi.NULL)  # libmtmd and its image encoder log on their own

