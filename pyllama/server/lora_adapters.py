"""LoRA adapters of a served model (``--lora``, ``--lora-scaled``), for llama-server's
``/lora-adapters`` routes (server/llamacpp.py).

Adapters are loaded once, at start, in the order the flags name them: that order is their id.
``POST /lora-adapters`` sets the scales requests get by default; a request's own ``lora``
(``[{"id": 0, "scale": 0.5}]``) overrides them for that request. In both, an adapter left out
gets scale 0, as llama-server does. Requests with different adapters never share a decode:
the engine batches together only the slots whose adapters and scales are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..lora import AppliedLoras, LoraAdapter
from ..model import Model
from .errors import RequestError
from .schemas.common import LoraScale


class Adapters:
    def __init__(self, model: Model, loras: Sequence[tuple[str, float]], apply: bool = True) -> None:
        """``apply=False`` (``--lora-init-without-apply``): loaded at scale 0."""
        self.paths = [path for path, _ in loras]
        self.loaded = [LoraAdapter(model, path) for path in self.paths]
        self.scales = [scale if apply else 0.0 for _, scale in loras]

    def describe(self) -> list[dict[str, Any]]:
        """GET /lora-adapters: llama-server's fields."""
        return [{"id": i, "path": path, "scale": scale, "task_name": "", "prompt_prefix": ""}
                for i, (path, scale) in enumerate(zip(self.paths, self.scales))]

    def scales_of(self, entries: Sequence[LoraScale], field: str) -> list[float]:
        """A scale per adapter from ``[{"id", "scale"}]``; the ones left out get 0."""
        scales = [0.0] * len(self.loaded)
        for i, entry in enumerate(entries):
            if not 0 <= entry.id < len(self.loaded):
                have = f"ids 0..{len(self.loaded) - 1}" if self.loaded else "none (start it with --lora FILE)"
                raise RequestError(400, f"'{field}[{i}].id' is {entry.id}: there is no such LoRA adapter; this "
                                        f"server's adapters: {have}", field)
            scales[entry.id] = entry.scale
        return scales

    def set_scales(self, entries: Sequence[LoraScale]) -> None:
        """POST /lora-adapters: the scales of requests that do not name their own."""
        self.scales = self.scales_of(entries, "body")

    def active(self, entries: Sequence[LoraScale] | None) -> AppliedLoras:
        """What a request runs with: its own ``lora`` if it gives one, else the server's scales."""
        scales = self.scales_of(entries, "lora") if entries else self.scales
        return tuple((adapter, scale) for adapter, scale in zip(self.loaded, scales) if scale != 0.0)
