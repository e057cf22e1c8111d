"""Server-sent events: a stream of JSON chunks, started only once its first chunk exists, so a
request that fails before generating anything (a bad value, a full queue) is still a plain HTTP
error; a failure after that ends the stream with an error chunk."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from .errors import RequestError, error_body

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy holds the events back


async def started(stream: AsyncIterator[Any]) -> tuple[Any, AsyncIterator[Any]]:
    """The first chunk (errors raised here are still HTTP errors) and the stream."""
    try:
        return await stream.__anext__(), stream
    except StopAsyncIteration:
        return None, stream


def sse(first: Any, rest: AsyncIterator[Any], done_marker: bool = True, named: bool = False) -> StreamingResponse:
    """``data: {...}`` per chunk, then ``data: [DONE]`` as OpenAI ends a stream (llama.cpp's
    own routes do not send it). ``named``: each chunk also gets an ``event:`` line with its
    ``type``, as the Responses and Anthropic streams have (Anthropic's client skips events
    without one)."""
    def event(chunk: Any) -> str:
        name = f"event: {chunk['type']}\n" if named else ""
        return f"{name}data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    async def body() -> AsyncIterator[str]:
        try:
            if first is not None:
                yield event(first)
            async for chunk in rest:
                yield event(chunk)
        except RequestError as exc:
            extra = {k: v for k, v in exc.extra.items() if k != "generated_text"}  # the stream has delivered it
            yield f"data: {json.dumps(error_body(exc.status, exc.message, exc.param, exc.code, **extra))}\n\n"
        finally:
            await rest.aclose()
        if done_marker:
            yield "data: [DONE]\n\n"
    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


async def prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``first``, then the items of ``rest`` (closed with this iterator)."""
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()
