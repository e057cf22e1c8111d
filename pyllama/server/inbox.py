"""How the engine thread hands one request's events to its coroutine on the event loop."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from ..generation.generator import Event


class Inbox:
    """Events from the engine thread to one request's coroutine. The event loop is woken once
    for whatever has arrived since it last looked, not once per token: on a small machine each
    wakeup takes CPU from the decoding threads. Not ``live``, only a job's last event wakes it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, live: bool) -> None:
        self._loop, self._live = loop, live
        self._events: collections.deque[tuple[int, Event]] = collections.deque()
        self._ready = asyncio.Event()
        self._woken = False

    def emitter(self, index: int) -> Callable[[Event], None]:
        def emit(event: Event) -> None:  # on the engine thread
            self._events.append((index, event))
            if not self._woken and (self._live or event.finish_reason is not None):
                self._woken = True
                self._loop.call_soon_threadsafe(self._ready.set)
        return emit

    async def take(self) -> list[tuple[int, Event]]:
        """What has arrived (possibly nothing, after a wakeup whose events an earlier take got)."""
        await self._ready.wait()
        self._ready.clear()
        self._woken = False  # before draining: an event appended after this wakes the loop again
        taken = []
        while self._events:
            taken.append(self._events.popleft())
        return taken
