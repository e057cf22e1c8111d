"""What every request passes before a route: CORS, the API key, the body's size, and a body
that is JSON a route can use (strict UTF-8, no lone surrogates), with an OpenAI-shaped 4xx
otherwise.

CORS as llama-server does it: by default any origin may call the API from a browser (its
Origin is reflected, with credentials), ``--cors-origins localhost`` admits only local pages,
or a list names the origins admitted. A preflight (OPTIONS) is answered here, without an API
key, since browsers send none with it.

A pure ASGI middleware, so streamed responses pass through untouched. A JSON body is read
whole, checked, and handed on with ``Content-Type: application/json`` (``curl -d`` sends
form-encoded headers for JSON bodies; llama-server reads them as JSON, so we do too).

A client may leave at any moment: before its body is read, while its request waits or runs.
The request is then cancelled (its engine jobs give up their queue place or slot), one INFO
line says so, and nothing is raised out of the app. While the server drains for a stop
(server/drain.py), new work and ``/health`` are answered 503, so load balancers send no more.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool

from .drain import Drain
from .errors import body_for

logger = logging.getLogger("pyllama.server")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEALTH_PATHS = ("/health", "/v1/health")
OPEN_PATHS = ("/", *HEALTH_PATHS, "/docs", "/openapi.json", "/favicon.ico", "/docs/oauth2-redirect",
              "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css")  # /docs's own files (server/pages.py)
WORK_METHODS = ("POST", "PUT", "PATCH")  # requests with a body: the ones that make work


class BodyError(ValueError):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param = status, param


def _surrogate_path(value: Any, path: str = "") -> str | None:
    """Where a string with a lone surrogate (an unpaired "\\ud800" escape) is, if anywhere."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return path or "body"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _surrogate_path(key, path) or _surrogate_path(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _surrogate_path(item, f"{path}[{i}]")
            if found:
                return found
    return None


ARRAY_BODIES = {"/lora-adapters"}  # llama-server's routes that take a JSON array, not an object
BINARY_BODIES = "/api/blobs/"  # Ollama's blob uploads: raw bytes, refused by their route, not as bad JSON


def check_json(raw: bytes, array: bool = False) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(400, f"the request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BodyError(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:  # [[[[...]]]] a thousand deep: Python's parser gives up; the client sent too much
        raise BodyError(400, "the request body nests arrays or objects too deeply") from None
    if not isinstance(value, list if array else dict):
        raise BodyError(400, f"the request body must be a JSON {'array' if array else 'object'}")
    where = _surrogate_path(value)
    if where is not None:
        raise BodyError(400, f"'{where}' holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text", where)
    return value


def _is_local(origin: str) -> bool:
    try:
        return urlsplit(origin).hostname in ("localhost", "127.0.0.1", "::1")
    except ValueError:
        return False


class Gate:
    def __init__(self, app: ASGIApp, *, api_keys: Collection[str] = (), cors_origins: Collection[str] = ("*",),
                 max_body_bytes: int = 64 << 20, drain: Drain | None = None) -> None:
        self.app = app
        self.drain = drain or Drain()
        self.api_keys = frozenset(api_keys)
        self.cors_origins = frozenset(cors_origins or ("*",))
        self.max_body_bytes = max_body_bytes

    def _allowed_origin(self, origin: str) -> str | None:
        if not origin:
            return None
        if "*" in self.cors_origins or origin in self.cors_origins:
            return origin
        if "localhost" in self.cors_origins and _is_local(origin):
            return origin
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        allowed = self._allowed_origin(headers.get("origin", ""))
        # capitalized as llama-server sends them: some clients read headers case-sensitively
        cors = [(b"Access-Control-Allow-Origin", allowed.encode("latin-1"))] if allowed else []
        if scope["method"] == "OPTIONS":
            return await _respond(send, 200, b"", cors + [
                (b"Access-Control-Allow-Credentials", b"true"),
                (b"Access-Control-Allow-Methods", b"GET, POST, DELETE, OPTIONS"),
                (b"Access-Control-Allow-Headers", b"*"), (b"content-type", b"text/plain")])
        if cors:
            send = _with_headers(send, cors)
        if self.drain.draining and (scope["method"] in WORK_METHODS or scope["path"] in HEALTH_PATHS):
            return await _answer(send, 503, "the server is shutting down", code="unavailable", path=scope["path"])
        if self.api_keys and scope["path"] not in OPEN_PATHS:
            bearer = headers.get("authorization", "")
            key = bearer[7:] if bearer.lower().startswith("bearer ") else headers.get("x-api-key", "")
            if key not in self.api_keys:
                return await _answer(send, 401, "a valid API key is required (Authorization: Bearer <key>)",
                                     code="invalid_api_key", path=scope["path"])
        if scope["method"] not in WORK_METHODS:
            return await self.app(scope, receive, send)
        self.drain.running += 1
        try:
            await self._work(scope, headers, receive, send)
        finally:
            self.drain.running -= 1

    async def _work(self, scope: Scope, headers: dict[str, str], receive: Receive, send: Send) -> None:
        """A request with a body: read and check it, then run the app until the client leaves."""
        try:
            raw = await self._read(headers, receive)
            if raw is None:
                logger.info("%s %s: the client left before sending its whole body", scope["method"], scope["path"])
                return
            if raw and not scope["path"].startswith(BINARY_BODIES):
                array = scope["path"] in ARRAY_BODIES
                if len(raw) > 1 << 20:  # parsing megabytes would stall every other request on the event loop
                    await run_in_threadpool(check_json, raw, array)
                else:
                    check_json(raw, array)
        except BodyError as exc:
            return await _answer(send, exc.status, str(exc), exc.param, path=scope["path"])
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
        scope["headers"].append((b"content-type", b"application/json"))
        await _until_disconnect(self.app(scope, replay_body(raw, receive), _noticing_loss(send)), receive,
                                f"{scope['method']} {scope['path']}")

    async def _read(self, headers: dict[str, str], receive: Receive) -> bytes | None:
        """The whole body, or None if the client left before sending it."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise BodyError(413, f"the request body has {declared} bytes; the limit is {self.max_body_bytes}")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyError(413, f"the request body is larger than the limit of {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


async def _until_disconnect(handling: Awaitable[None], receive: Receive, request: str) -> None:
    """Run a request's handler, and cancel it if the client goes away first: a generation no one
    waits for must free its slot and queue place (a streamed reply notices by itself, a plain one
    would not). A client that left is no error of the server's: one INFO line, nothing raised."""
    handler = asyncio.ensure_future(handling)
    watcher = asyncio.ensure_future(_client_left(receive))
    try:
        await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not handler.done():
            handler.cancel()
        # a cancelled task is only cancelling: it is done (and has a result to read) once its
        # finally blocks, which take its jobs back from the engine, have run
        await asyncio.wait({handler, watcher})
    left = not watcher.cancelled() and watcher.exception() is None
    if handler.cancelled():
        logger.info("%s: the client left; its request was cancelled", request)
        return
    error = handler.exception()
    if error is None:
        return
    if left:  # e.g. the reply could not be written: the client had gone
        logger.info("%s: the client left (%s: %s)", request, type(error).__name__, error)
        return
    raise error


async def _client_left(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def replay_body(raw: bytes, receive: Receive) -> Receive:
    """A receive that gives the body once, then waits for the client's disconnect as usual."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay


def _noticing_loss(send: Send) -> Send:
    """A send that gives the event loop a turn after each chunk of a body: a connection the
    client reset is then marked lost before the next chunk is written to it (asyncio logs a
    warning for every write past the fifth to a lost connection)."""
    async def sending(message: Message) -> None:
        await send(message)
        if message.get("more_body"):
            await asyncio.sleep(0)

    return sending


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _answer(send: Send, status: int, message: str, param: str | None = None, code: str | None = None,
                  path: str = "") -> None:
    body = json.dumps(body_for(path)(status, message, param, code)).encode()
    await _respond(send, status, body, [(b"content-type", b"application/json")])
