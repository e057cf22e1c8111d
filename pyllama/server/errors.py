"""The server's one error path: every failure becomes OpenAI's error shape with a 4xx or 5xx.

``{"error": {"message", "type", "param", "code"}}``: routes raise :class:`RequestError`;
request-model validation failures, FastAPI's own HTTP errors and anything unexpected are
turned into the same shape by the handlers :func:`install` registers. Anthropic's routes
(``/v1/messages``) answer in Anthropic's shape instead, ``{"type": "error", "error": {"type",
"message"}}``, since its clients read that one, and Ollama's routes (``/api/*``) Ollama's,
``{"error": "..."}`` (:func:`body_for` picks by path).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

logger = logging.getLogger("pyllama.server")

_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 413: "invalid_request_error",
          429: "rate_limit_error", 501: "not_supported_error", 503: "unavailable_error"}


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers
        self.extra = extra  # more fields for the error object (llama-server's n_prompt_tokens, n_ctx)

    @classmethod
    def too_long(cls, field: str, message: str, n_prompt_tokens: int, n_ctx: int) -> RequestError:
        """OpenAI's context_length_exceeded, typed and detailed as llama-server does it."""
        return cls(400, message, field, "context_length_exceeded", n_prompt_tokens=n_prompt_tokens, n_ctx=n_ctx)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None,
               **extra: Any) -> dict[str, Any]:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    if code == "context_length_exceeded":
        kind = "exceed_context_size_error"  # llama-server's type; OpenAI clients read the code
    return {"error": {"message": message, "type": kind, "param": param, "code": code, **extra}}


_ANTHROPIC_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                    413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error"}


def anthropic_error_body(status: int, message: str, param: str | None = None,
                         code: str | None = None) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def ollama_error_body(status: int, message: str, param: str | None = None,
                      code: str | None = None) -> dict[str, Any]:
    return {"error": message}


ErrorBody = Callable[[int, str, str | None, str | None], dict[str, Any]]


def body_for(path: str) -> ErrorBody:
    """The error shape the clients of ``path`` read."""
    if path.startswith("/api/"):
        return ollama_error_body
    return anthropic_error_body if path == "/v1/messages" or path.startswith("/v1/messages/") else error_body


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None, path: str = "", **extra: Any) -> JSONResponse:
    shape = body_for(path)
    body = error_body(status, message, param, code, **extra) if shape is error_body else shape(status, message, param,
                                                                                               code)
    return JSONResponse(body, status_code=status, headers=headers)


def _is_type_label(part: Any) -> bool:
    """pydantic puts the union member it tried into an error's location ('str', 'list[int]',
    'TextPart'): those are not fields."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "list", "dict", "none")
                                       or "[" in part or "-" in part or part[:1].isupper())


def field_path(loc: Sequence[Any]) -> str:
    """``messages[0].content`` from pydantic's ``("body", "messages", 0, "content")``."""
    path = ""
    for part in loc:
        if part == "body" and not path or _is_type_label(part):
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def validation_message(errors: Sequence[dict[str, Any]]) -> tuple[str, str | None]:
    """One line naming the field: of a union's failed alternatives, the deepest say what was wrong."""
    located = [(field_path(e["loc"]), e) for e in errors]
    depth = max(len(path) for path, _ in located)
    deepest = [(path, e) for path, e in located if len(path) == depth]
    path = deepest[0][0]
    messages = list(dict.fromkeys(e["msg"] for p, e in deepest if p == path))
    if deepest[0][1]["type"] == "json_invalid":
        return f"the request body is not valid JSON: {deepest[0][1].get('ctx', {}).get('error', '')}", None
    return (f"'{path}': {'; or '.join(messages)}" if path else "; or ".join(messages)), path or None


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers, request.url.path,
                              **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc.errors())
        return error_response(400, message, param, "invalid_value", path=request.url.path)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None),
                              path=request.url.path)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error in a route")
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}", path=request.url.path)
