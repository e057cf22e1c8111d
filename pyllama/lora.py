"""LoRA adapters: loaded once per Model, applied per Context with a scale."""

from __future__ import annotations

import os

from ._binding import checks
from ._binding import lib
from ._binding.native import NativeObject, owned
from .errors import LlamaError
from .model import Model


class LoraAdapter(NativeObject):
    """A LoRA adapter GGUF for ``model``; apply it with ``Context.set_loras({adapter: scale})``."""

    def __init__(self, model: Model, path: str | os.PathLike[str]) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"LoRA adapter not found: {os.fspath(path)}")
        model_handle = model._ptr
        checks.before_call()
        pointer = checks.check_pointer(lib.llama_adapter_lora_init(model_handle, os.fsencode(path)), LlamaError,
                                       f"{os.fspath(path)}: could not load the LoRA adapter")
        # the model frees its adapters itself; ours is freed first because it holds the model handle
        self._handle = owned(pointer, lib.llama_adapter_lora_free, model_handle)
        self.path = os.fspath(path)

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


# adapters with their scales, as one decode applies them: comparable, so that jobs with the same set can share one
AppliedLoras = tuple[tuple[LoraAdapter, float], ...]
