"""llama-server's resumable streams: a chat stream sent with an ``X-Conversation-Id`` header goes
on when its client goes away (a page reload, a phone put to sleep), and the client reattaches
with ``GET /v1/stream?conv_id=ID&from=N``: the bytes from offset N, then the live ones.

Each session keeps the last ``MAX_BYTES`` of its stream (older bytes drop first; asking for one
of them is a 400). Only ``DELETE /v1/stream?conv_id=ID`` stops the generation: the request then
sees its client disconnect, as it would without the header. Finished sessions are dropped
``TTL_SECONDS`` after their end. ``POST /v1/streams/lookup`` answers only for the ids a client
names (an id also matches ``ID::model``, llama-server's router suffix), so nobody can list
another's conversations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import APIRouter, Query
from starlette.responses import Response, StreamingResponse

from .errors import RequestError, error_response
from .schemas.llamacpp import StreamLookup
from .sse import SSE_HEADERS

MAX_BYTES = 4 << 20
TTL_SECONDS = 300.0
HEADER = b"x-conversation-id"
GENERATING = frozenset({"/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions", "/completion"})

Message = MutableMapping[str, Any]


class OffsetLost(ValueError):
    """The bytes asked for were dropped to keep the session within MAX_BYTES."""


class StreamSession:
    def __init__(self, conversation_id: str, cancelled: asyncio.Event) -> None:
        """``cancelled``: set by DELETE; the generating request then sees its client disconnect."""
        self.conversation_id = conversation_id
        self.started_at, self.completed_at = int(time.time()), 0
        self.cancelled = cancelled
        self._buffer = bytearray()
        self._dropped = 0  # bytes dropped from the front
        self._done = False
        self._changed = asyncio.Event()
        self.started = False  # its response has begun: before that (a model loading, say) a reader is told to wait

    @property
    def done(self) -> bool:
        return self._done

    @property
    def total_bytes(self) -> int:
        return self._dropped + len(self._buffer)

    def append(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > MAX_BYTES:
            cut = len(self._buffer) - MAX_BYTES
            del self._buffer[:cut]
            self._dropped += cut
        self._wake()

    def finish(self) -> None:
        if not self._done:
            self._done, self.completed_at = True, int(time.time())
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def check(self, offset: int) -> None:
        if offset < self._dropped:
            raise OffsetLost(f"stream offset {offset} was dropped (the session keeps its last {MAX_BYTES} bytes, "
                             f"from {self._dropped}); restart the stream")

    async def read(self, offset: int) -> AsyncIterator[bytes]:
        """The bytes from ``offset`` on, as they come, until the session ends."""
        while True:
            self.check(offset)
            changed = self._changed
            if offset < self.total_bytes:
                chunk = bytes(self._buffer[offset - self._dropped:])
                offset += len(chunk)
                yield chunk
            elif self._done:
                return
            else:
                await changed.wait()


class StreamSessions:
    def __init__(self) -> None:
        self._sessions: dict[str, StreamSession] = {}

    def start(self, conversation_id: str, cancelled: asyncio.Event) -> StreamSession:
        """A new session for the id; one it had is stopped and replaced (one live stream per conversation)."""
        self._collect()
        self.stop(conversation_id)
        session = self._sessions[conversation_id] = StreamSession(conversation_id, cancelled)
        return session

    def get(self, conversation_id: str) -> StreamSession | None:
        self._collect()
        return self._sessions.get(conversation_id)

    def stop(self, conversation_id: str) -> None:
        session = self._sessions.pop(conversation_id, None)
        if session is not None:
            session.cancelled.set()
            session.finish()

    def forget(self, session: StreamSession) -> None:
        """Drop a session that will have no stream, unless another one replaced it."""
        if self._sessions.get(session.conversation_id) is session:
            del self._sessions[session.conversation_id]
        session.finish()

    def lookup(self, ids: list[str]) -> list[dict[str, Any]]:
        self._collect()
        found = [s for s in self._sessions.values()
                 if any(s.conversation_id == i or s.conversation_id.startswith(f"{i}::") for i in ids if i)]
        return [{"conversation_id": s.conversation_id, "is_done": s.done, "total_bytes": s.total_bytes,
                 "started_at": s.started_at, "completed_at": s.completed_at} for s in found]

    def _collect(self) -> None:
        now = time.time()
        for conversation_id, session in list(self._sessions.items()):
            if session.done and now - session.completed_at > TTL_SECONDS:
                del self._sessions[conversation_id]


ASGIApp = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class ResumableStreams:
    """ASGI middleware, outside the gate: a generating POST with ``X-Conversation-Id`` whose answer is an
    event stream is copied into a session, and the client's going away is hidden from it (only
    a DELETE of the session shows the request a disconnect)."""

    def __init__(self, app: ASGIApp, sessions: StreamSessions) -> None:
        self.app, self.sessions = app, sessions

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        conversation_id = dict(scope.get("headers", [])).get(HEADER, b"").decode("latin-1").strip() \
            if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in GENERATING else ""
        if not conversation_id:
            return await self.app(scope, receive, send)
        stopped = asyncio.Event()  # set by DELETE
        session: StreamSession | None = self.sessions.start(conversation_id, stopped)  # DELETE finds it at once
        started = ended = False

        async def receiving() -> Message:
            """The client's messages, but its leaving: the request sees a disconnect on DELETE only."""
            client = asyncio.ensure_future(receive())
            stop = asyncio.ensure_future(stopped.wait())
            try:
                await asyncio.wait({client, stop}, return_when=asyncio.FIRST_COMPLETED)
                if client.done() and client.result()["type"] != "http.disconnect":
                    return client.result()
                await stop  # the client left: go on until DELETE
                return {"type": "http.disconnect"}
            finally:
                client.cancel()
                stop.cancel()

        async def sending(message: Message) -> None:
            nonlocal session, started, ended
            if message["type"] == "http.response.start":
                started = True
                headers = dict(message.get("headers", []))
                if message["status"] != 200 or not headers.get(b"content-type", b"").startswith(b"text/event-stream"):
                    self.sessions.forget(session)  # an error or a whole answer: nothing to resume
                    session = None
                else:
                    session.started = True
            elif message["type"] == "http.response.body":
                ended = not message.get("more_body", False)
                if session is not None:
                    session.append(message.get("body", b""))
            await send(message)  # once the client is gone the server drops it

        try:
            await self.app(scope, receiving, sending)
        finally:
            if session is not None:
                session.finish()
        if stopped.is_set() and not started:  # stopped before it answered (waiting for its model, say)
            await error_response(400, f"the stream '{conversation_id}' was cancelled (DELETE /v1/stream)",
                                 code="cancelled", path=scope["path"])(scope, receive, send)
        elif stopped.is_set() and not ended:  # stopped mid-stream: a client still reading sees it end, not break
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def router(sessions: StreamSessions) -> APIRouter:
    api = APIRouter()

    @api.get("/v1/stream", tags=["llama.cpp"])
    async def reattach(conv_id: str = "", offset: str = Query("0", alias="from")) -> StreamingResponse:
        """The stream's bytes from ``from`` on, then the live ones, until it ends."""
        session = sessions.get(_required(conv_id))
        if session is None:
            raise RequestError(404, f"no stream '{conv_id}': it never was, or it ended more than {TTL_SECONDS:g} s "
                                    "ago", "conv_id", "not_found_error")
        if not offset.isdigit():
            raise RequestError(400, f"'from' must be a byte offset, got {offset!r}", "from")
        if not session.started and not session.done:
            raise RequestError(503, f"the stream '{conv_id}' has not started yet (its model may be loading); "
                                    "retry shortly", "conv_id", headers={"Retry-After": "1"})
        try:
            session.check(int(offset))
        except OffsetLost as exc:
            raise RequestError(400, str(exc), "from") from None
        return StreamingResponse(session.read(int(offset)), media_type="text/event-stream", headers=SSE_HEADERS)

    @api.delete("/v1/stream", tags=["llama.cpp"], status_code=204)
    async def stop(conv_id: str = "") -> Response:
        """Stop the generation and drop its session (204 whether or not there was one)."""
        sessions.stop(_required(conv_id))
        return Response(status_code=204)

    @api.post("/v1/streams/lookup", tags=["llama.cpp"])
    async def lookup(body: StreamLookup) -> list[dict[str, Any]]:
        return sessions.lookup(body.conversation_ids)

    return api


def _required(conv_id: str) -> str:
    if not conv_id:
        raise RequestError(400, "conv_id is missing from the query", "conv_id")
    return conv_id
