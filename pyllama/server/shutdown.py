"""Stopping the server the way load balancers (Kubernetes, Ray, llama-swap) expect.

The first SIGTERM or Ctrl-C starts a drain: new work and ``/health`` are answered 503 (the
gate), the requests already running go on. When they are done, or after ``--stop-timeout``
seconds (llama-server's stop-timeout for the instances its router stops; default 10), the
engines stop: a reply still running then ends with a final error event (a stream) or a 503
(a whole reply), each carrying the text generated so far. Then uvicorn's own shutdown closes
the sockets and the models, and the process exits 0. A second signal ends the drain at once.

uvicorn re-raises the signal once it has shut down, so a Ctrl-C ended in a KeyboardInterrupt
traceback and a SIGTERM in exit status 143; here each step prints one line instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Generator, Sequence
from types import FrameType

import uvicorn
from uvicorn.server import HANDLED_SIGNALS

from .drain import Drain
from .engine import Engine

FINAL_WRITE_SECONDS = 5.0  # for stopped replies to write their last event before the sockets close
POLL_SECONDS = 0.05


def say(line: str) -> None:
    print(f"pyllama server: {line}", flush=True)


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Drain, engines: Callable[[], Sequence[Engine]],
                 stop_timeout: float) -> None:
        """``engines``: those of the models loaded when the drain ends (server/model_pool.py)."""
        if config.timeout_graceful_shutdown is None:  # a connection still open after the drain waits no longer
            config.timeout_graceful_shutdown = FINAL_WRITE_SECONDS
        super().__init__(config)
        self.drain, self.engines, self.stop_timeout = drain, engines, stop_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_now: asyncio.Event | None = None
        self._draining: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop, self._stop_now = asyncio.get_running_loop(), asyncio.Event()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """uvicorn's, without raising the signal again after the shutdown."""
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """A signal handler: it runs on the event loop's thread between two bytecodes, so the
        loop is only asked (thread-safely) to act."""
        name = signal.Signals(sig).name
        if self._loop is None or self._stop_now is None:  # not serving yet: nothing runs
            self.should_exit = True
            return
        if self.drain.draining:
            say(f"{name} again: ending the running requests now")
            self._loop.call_soon_threadsafe(self._stop_now.set)
            return
        self.drain.draining = True
        say(f"{name}: stopping; {self.drain.running} request(s) running get up to {self.stop_timeout:g} s to "
            f"finish ({name} again to end them now); /health and new requests answer 503")
        self._loop.call_soon_threadsafe(self._start_draining)

    def _start_draining(self) -> None:
        self._draining = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_timeout
        while self.drain.running and loop.time() < deadline and not self._stop_now.is_set():
            await asyncio.sleep(POLL_SECONDS)
        if self.drain.running:
            say(f"ending {self.drain.running} request(s) still running")
        for engine in self.engines():  # what still runs ends with a final event saying why
            await asyncio.to_thread(engine.stop)
        deadline = loop.time() + FINAL_WRITE_SECONDS
        while self.drain.running and loop.time() < deadline:
            await asyncio.sleep(POLL_SECONDS)
        self.should_exit = True
