"""One HTTP request through an ASGI app in this process, its response as ASGI messages.

A replica runs pyllama's own app this way: no socket, no second server, the same routes. The
messages come out as the app sends them, so a stream stays a stream. Closing the iterator
early (the caller went away) tells the app the client disconnected, which cancels its jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import ASGIApp

from ..server.gate import replay_body

Message = dict[str, Any]


async def call(app: ASGIApp, scope: dict[str, Any], body: bytes) -> AsyncIterator[Message]:
    sent: asyncio.Queue[Message | None] = asyncio.Queue()
    disconnected = asyncio.Event()

    async def disconnect() -> Message:
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.put_nowait(message)

    task = asyncio.create_task(app(scope, replay_body(body, disconnect), send))
    task.add_done_callback(lambda _: sent.put_nowait(None))
    try:
        while (message := await sent.get()) is not None:
            yield message
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                break
        else:
            task.result()  # the app ended without a whole response: its exception, if it raised one
            raise RuntimeError("the app ended without a response")
        disconnected.set()  # the response is whole: nothing the app still listens for is coming
        with contextlib.suppress(Exception):  # raised after the whole response: the app has logged it
            await task
    finally:
        disconnected.set()
        if not task.done():  # the caller went away mid-response
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
