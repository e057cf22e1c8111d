"""llama-server's router-mode routes: load and unload a model by name (server/model_pool.py),
download one from Hugging Face and delete a downloaded one (server/model_downloads.py), and the
stream of what happens to the models (server/model_events.py).

Load, unload and download answer at once, as llama-server's do: the work goes on in the
background (``GET /models`` and ``/models/sse`` show it); an unload waits until no request holds
the model, so it never cuts one. A delete answers once the model is gone.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from . import hf_cache
from .errors import RequestError
from .model_pool import ModelPool
from .schemas.router_mode import ModelName
from .sse import SSE_HEADERS


def router(pool: ModelPool) -> APIRouter:
    api = APIRouter()

    @api.post("/models/load", tags=["llama.cpp"])
    async def load(body: ModelName) -> dict[str, Any]:
        pool.load(body.model)
        return {"success": True}

    @api.post("/models/unload", tags=["llama.cpp"])
    async def unload(body: ModelName) -> dict[str, Any]:
        pool.unload(body.model)
        return {"success": True}

    @api.post("/models", tags=["llama.cpp"])
    async def download(body: ModelName) -> dict[str, Any]:
        """Download ``owner/repo[:QUANT]`` from Hugging Face into the model cache."""
        if pool.reread is None:
            raise RequestError(400, "downloading models needs router mode (--models-dir or --models-preset): "
                                    "a downloaded model is listed with theirs", "model")
        try:
            hf_cache.split_model_id(body.model)
        except ValueError as exc:
            raise RequestError(400, str(exc), "model") from None
        if body.model in pool.downloads or any(body.model in p.names for p in pool.all):
            raise RequestError(400, f"model '{body.model}' already exists", "model")
        pool.downloads.start(body.model)
        return {"success": True}

    @api.delete("/models", tags=["llama.cpp"])
    async def delete(model: str = "") -> dict[str, Any]:
        """Cancel a download, or unload a downloaded model and delete its files from the cache."""
        if not model:
            raise RequestError(400, "model must be a non-empty string", "model")
        if model in pool.downloads:
            await pool.downloads.cancel(model)
        else:
            pooled = pool.entry(model)
            if pooled.settings.source != "cache":
                raise RequestError(400, f"the model '{model}' is not removable: only downloaded models are "
                                        f"(it comes from {pooled.settings.source or 'the command line'})", "model")
            if pooled.status in ("loaded", "loading"):
                pool.unload(model)
            await pool.until_unloaded(pooled)
            await run_in_threadpool(hf_cache.remove, pooled.name)
            try:
                await pool.refresh()
            except ValueError as exc:
                raise RequestError(500, f"the model was deleted, but the models could not be read again: {exc}")
        pool.events.publish(model, "model_remove")
        return {"success": True}

    @api.get("/models/sse", tags=["llama.cpp"])
    async def events() -> StreamingResponse:
        return StreamingResponse(pool.events.subscribe(), media_type="text/event-stream", headers=SSE_HEADERS)

    return api
