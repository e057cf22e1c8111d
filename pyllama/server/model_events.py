"""llama-server's ``GET /models/sse``: what happens to the router's models, as it happens —
loads and unloads (``status_change``), downloads (``download_progress``, ``download_finished``,
``download_failed``), removals (``model_remove``) and re-reads of the model list
(``models_reload``, for the model ``*``).

Each event is one ``data: {"model": ..., "event": ..., "data": {...}}`` line pair, as
llama-server writes them. A subscriber gets the events published after it subscribed: there is no
replay, so a client subscribes before it starts what it waits for.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

MAX_BACKLOG = 1000  # events a slow subscriber may fall behind by; past that it is dropped


class ModelEvents:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[str | None]] = set()

    def publish(self, model: str, event: str, data: dict[str, Any] | None = None) -> None:
        """Send an event to every subscriber (on the event loop)."""
        line = json.dumps({"model": model, "event": event, **({"data": data} if data is not None else {})},
                          separators=(",", ":"))
        for queue in list(self._subscribers):
            if queue.qsize() >= MAX_BACKLOG:  # it stopped reading: end its stream rather than grow without bound
                self._subscribers.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(line)

    def subscribe(self) -> AsyncIterator[bytes]:
        """A subscriber's server-sent events, from now (not from the stream's first read: the
        response's headers may reach the client first) until the client goes away."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._subscribers.add(queue)
        return self._stream(queue)

    async def _stream(self, queue: asyncio.Queue[str | None]) -> AsyncIterator[bytes]:
        try:
            while (line := await queue.get()) is not None:
                yield f"data: {line}\n\n".encode()
        finally:
            self._subscribers.discard(queue)
