"""llama-server's router-mode routes: load and unload a model by name (server/model_pool.py).

Both answer at once, as llama-server's do: a load goes on in the background (``GET /models``
shows ``loading``, then ``loaded``, or ``unloaded`` with ``failed``); an unload waits until no
request holds the model, so it never cuts one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from .model_pool import ModelPool
from .schemas.router_mode import ModelName


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

    return api
