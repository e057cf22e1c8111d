"""Python callables that llama.cpp calls back (load progress, decode abort).

C gets ``slot.handle``; the trampolines below find the slot from it. An exception
raised by the callable cannot cross the C frames, so it is kept and re-raised by
the Python code that made the C call, once that call has returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .library import ffi


class CallbackSlot:
    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.handle = ffi.new_handle(self)
        self.error: BaseException | None = None
        self.cancelled = False

    def reraise(self) -> None:
        error, self.error = self.error, None
        if error is not None:
            raise error


@ffi.def_extern()
def _pyllama_on_progress(progress: float, user_data: Any) -> bool:
    slot: CallbackSlot = ffi.from_handle(user_data)
    try:
        keep_going = slot.function(progress) is not False
    except BaseException as exc:  # noqa: BLE001 - re-raised after the C call returns
        slot.error = exc
        keep_going = False
    slot.cancelled = not keep_going
    return keep_going


@ffi.def_extern()
def _pyllama_on_abort(user_data: Any) -> bool:
    slot: CallbackSlot = ffi.from_handle(user_data)
    if slot.error is not None:
        return True
    try:
        return bool(slot.function())
    except BaseException as exc:  # noqa: BLE001 - re-raised after the C call returns
        slot.error = exc
        return True
