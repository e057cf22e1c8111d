"""Sending a replica's response on from the ingress, and what the ingress sends a replica.

Kept apart from the deployments: Ray pickles a deployment class by value when it is defined, so
what its methods call must already be importable then.
"""

from __future__ import annotations

import json
from typing import Any

from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentResponseGenerator
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..server.errors import body_for
from .asgi_call import Message

REPLICA_GONE = (RayActorError, ActorUnavailableError)  # the replica's actor died or cannot be reached


class Relayed(Response):
    """A replica's response, sent on message by message."""

    def __init__(self, start: Message, stream: DeploymentResponseGenerator, path: str) -> None:
        self.start, self.stream, self.path = start, stream, path
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(self.start)
        try:
            async for message in self.stream:
                await send(message)
        except REPLICA_GONE as exc:
            await send({"type": "http.response.body", "body": self._cut(exc), "more_body": False})
        finally:
            self.stream.cancel()  # the client left: the replica cancels the request's jobs (no-op when done)

    def _cut(self, exc: BaseException) -> bytes:
        """The end of a reply whose replica stopped mid-way: an error event a stream's client reads
        (OpenAI's and Anthropic's SSE, Ollama's NDJSON); other bodies just end short."""
        headers = dict(self.start.get("headers", []))
        kind = headers.get(b"content-type", b"").split(b";")[0]
        message = f"the replica serving this request stopped mid-reply: {first_line(exc)}"
        error = json.dumps(body_for(self.path)(502, message, None, "replica_unavailable"))
        if kind == b"text/event-stream":
            event = "event: error\n" if self.path.startswith("/v1/messages") else ""  # Anthropic names its events
            return f"{event}data: {error}\n\n".encode()
        return f"{error}\n".encode() if kind == b"application/x-ndjson" else b""


def plain_scope(scope: Scope, path: str) -> dict[str, Any]:
    """What a replica's app needs of the HTTP scope, without the ingress's own objects (not picklable)."""
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": scope.get("http_version", "1.1"), "method": scope["method"],
            "scheme": scope.get("scheme", "http"), "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": scope.get("query_string", b""),
            "headers": [(bytes(k), bytes(v)) for k, v in scope["headers"]],
            "client": tuple(scope["client"]) if scope.get("client") else None,
            "server": tuple(scope["server"]) if scope.get("server") else None}


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
