"""The OpenAI-compatible HTTP server: the app, its gate, its routes and the chat page.

A request passes the gate (API key, body size, JSON that is text), is validated by its typed
request model (server/schemas.py), and its route turns it into engine jobs (server/service.py)
and the engine's events back into OpenAI- or llama.cpp-shaped JSON. Every failure is an
OpenAI-shaped error (server/errors.py); nothing here reads files a request names.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import chat, completions, errors, info, lora_adapters, messages, pages, responses, slots
from .drain import Drain
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

    app = FastAPI(title="pyllama", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,  # pages.py: offline
                  description="OpenAI-compatible API over llama.cpp, plus llama.cpp's own routes")
    app.state.services = services
    app.state.drain = Drain()  # set by a stop signal (server/shutdown.py); the gate answers by it
    errors.install(app)
    for module in (completions, chat, responses, messages, info, slots, lora_adapters):
        app.include_router(module.router(services))

    app.include_router(pages.router(app, every[0].webui))

    # server-wide options come from the first entry
    app.add_middleware(Gate, api_keys=every[0].api_keys, cors_origins=every[0].cors_origins, drain=app.state.drain)
    return app
