"""Request bodies of llama-server's router-mode routes (server/router_mode.py)."""

from __future__ import annotations

from pydantic import ConfigDict

from .common import Body


class ModelName(Body):
    """POST /models/load and /models/unload."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"model": "tiny"}]})

    model: str
