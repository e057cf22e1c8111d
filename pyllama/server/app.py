"""The OpenAI-compatible HTTP server: the app, its gate, its routes and the chat page.

A request passes the gate (API key, body size, JSON that is text), is validated by its typed
request model (server/schemas.py), and its route turns it into engine jobs (server/service.py)
and the engine's events back into OpenAI- or llama.cpp-shaped JSON. Every failure is an
OpenAI-shaped error (server/errors.py); nothing here reads files a request names.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from . import chat, completions, errors, info, messages, responses, slots
from .gate import Gate
from .services import Services
from .settings import Settings


def create_app(settings: Settings | list[Settings]) -> FastAPI:
    """The app serving one model, or several (``--config``; requests pick one by ``model``)."""
    every = settings if isinstance(settings, list) else [settings]
    services = Services(every)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        services.close()

    app = FastAPI(title="pyllama", version="1", lifespan=lifespan,
                  description="OpenAI-compatible API over llama.cpp, plus llama.cpp's own routes")
    app.state.services = services
    errors.install(app)
    for module in (completions, chat, responses, messages, info, slots):
        app.include_router(module.router(services))

    if every[0].webui:
        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def chat_page() -> HTMLResponse:
            return HTMLResponse(resources.files("pyllama.server").joinpath("static/index.html").read_text("utf-8"))

    # server-wide options come from the first entry
    app.add_middleware(Gate, api_keys=every[0].api_keys, cors_origins=every[0].cors_origins)
    return app
