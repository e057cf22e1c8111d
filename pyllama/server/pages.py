"""What a browser opens: the chat page at ``/``, the API docs at ``/docs`` with Swagger UI's
files served from the installed ``fastapi-offline`` package (so both work on a machine
without internet, where a CDN would leave a blank page), the icon, and ``GET /v1``, which
says where the API's routes are instead of a 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response

# where Swagger UI's files are served; the gate lets them through without an API key, as /docs
DOCS_ASSETS = {"/docs/swagger-ui-bundle.js": "application/javascript", "/docs/swagger-ui.css": "text/css"}
ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" '
        'fill="#2563eb"/><text x="16" y="23" font-family="sans-serif" font-size="20" font-weight="700" '
        'fill="#fff" text-anchor="middle">p</text></svg>')


def _static(name: str) -> bytes:
    return resources.files("pyllama.server").joinpath("static", name).read_bytes()


def _swagger_asset(name: str) -> bytes:
    return resources.files("fastapi_offline").joinpath("static", name).read_bytes()


def _asset(body: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def asset() -> Response:
        return Response(body, media_type=media_type, headers={"Cache-Control": "max-age=86400"})

    return asset


def router(app: FastAPI, webui: bool) -> APIRouter:
    pages = APIRouter(include_in_schema=False)

    if webui:
        @pages.get("/", response_class=HTMLResponse)
        async def chat_page() -> HTMLResponse:
            return HTMLResponse(_static("index.html").decode("utf-8"))

    @pages.get("/docs", response_class=HTMLResponse)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
                                   swagger_js_url="/docs/swagger-ui-bundle.js", swagger_css_url="/docs/swagger-ui.css",
                                   swagger_favicon_url="/favicon.ico", oauth2_redirect_url="/docs/oauth2-redirect")

    @pages.get("/docs/oauth2-redirect", response_class=HTMLResponse)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    for path, media_type in DOCS_ASSETS.items():
        pages.add_api_route(path, _asset(_swagger_asset(path.rsplit("/", 1)[1]), media_type), methods=["GET"])

    @pages.get("/favicon.ico")
    async def icon() -> Response:
        return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    @pages.get("/v1")
    async def api_index() -> dict[str, Any]:
        """Where a client that opens the base URL itself can look."""
        routes = sorted(path for path in app.openapi()["paths"] if path.startswith("/v1/"))
        return {"object": "api", "message": "pyllama's OpenAI-compatible API; /docs describes every route",
                "docs": "/docs", "routes": routes}

    return pages
