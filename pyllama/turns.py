"""Turns: one call at a time on a ``Llama``, and what happens to a stream left open.

A stream holds its turn between chunks, because the next chunk continues from the KV memory
the previous one left. Another thread's call waits for the stream to end (calls from several
threads take turns). The thread that holds the stream cannot wait for itself: a new call from
it ends the open stream (reading on from it raises :class:`StreamPreemptedError`) and goes
ahead, so an abandoned generator, in a notebook say, never blocks the next call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import StreamPreemptedError


class Turn:
    def __init__(self, stream: bool) -> None:
        self.thread = threading.get_ident()
        self.stream = stream
        self.preempted = False

    def check(self) -> None:
        """Raise if a later call took over: the stream's state is gone."""
        if self.preempted:
            raise StreamPreemptedError("this stream was ended because a later call on the same Llama, from the "
                                       "same thread, took over; close a stream (or read it to the end) first")


class Turns:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._holder: Turn | None = None

    def acquire(self, stream: bool = False) -> Turn:
        turn = Turn(stream)
        with self._changed:
            while self._holder is not None:
                holder = self._holder
                if holder.thread == turn.thread:
                    if not holder.stream:
                        raise RuntimeError("a Llama method was called from inside another call on it "
                                           "(from a callback?); calls on one Llama cannot nest")
                    holder.preempted = True
                    break
                self._changed.wait()
            self._holder = turn
        return turn

    def release(self, turn: Turn) -> None:
        with self._changed:
            if self._holder is turn:
                self._holder = None
                self._changed.notify_all()

    @contextmanager
    def call(self) -> Iterator[Turn]:
        """The turn for one whole (non-streaming) call."""
        turn = self.acquire()
        try:
            yield turn
        finally:
            self.release(turn)
