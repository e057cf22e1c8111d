"""The OpenAI-compatible HTTP server: the app, its gate, its routes and the chat page.

A request passes the gate (API key, body size, JSON that is text), is validated by its typed
request model (server/schemas/<api>.py), picks its model from the pool (server/model_pool.py:
loaded on demand, held until the response is sent), and its route (server/<api>.py: openai,
llamacpp, anthropic, responses, ...) translates it onto the served model's engine jobs
(server/served_model.py) and the engine's events back into that API's JSON. Every failure is an
error in that API's shape (server/errors.py); nothing here reads files a request names.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import anthropic, errors, llamacpp, ollama, openai, pages, responses, router_mode, stream_sessions
from .drain import Drain
from .gate import Gate
from .model_pool import HoldModels, ModelPool
from .settings import Settings


def create_app(settings: Settings | list[Settings]) -> FastAPI:
    """The app serving one model, or several (``--config``, ``--models-dir``, ``--models-preset``;
    requests pick one by ``model``). The models marked to load at start are loaded here."""
    every = settings if isinstance(settings, list) else [settings]
    pool = ModelPool(every)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        pool.start()
        yield
        pool.close()

    app = FastAPI(title="pyllama", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,  # pages.py: offline
                  description="OpenAI-compatible API over llama.cpp, plus llama.cpp's own routes")
    app.state.pool = pool
    app.state.drain = Drain()  # set by a stop signal (server/shutdown.py); the gate answers by it
    errors.install(app)
    for module in (openai, llamacpp, responses, anthropic, router_mode, ollama):
        app.include_router(module.router(pool))

    app.state.streams = stream_sessions.StreamSessions()
    app.include_router(stream_sessions.router(app.state.streams))
    app.include_router(pages.router(app, every[0].webui))

    app.add_middleware(HoldModels, pool=pool)  # inside the gate: a request it refuses picks nothing
    # server-wide options come from the first entry
    app.add_middleware(Gate, api_keys=every[0].api_keys, cors_origins=every[0].cors_origins, drain=app.state.drain)
    # outside the gate: a stream with X-Conversation-Id outlives its client, so the gate must not see it go
    app.add_middleware(stream_sessions.ResumableStreams, sessions=app.state.streams)
    return app
