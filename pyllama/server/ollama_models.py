"""What Ollama's listing routes (/api/tags, /api/show, /api/ps) say of a model, read from its files.

A model need not be loaded to be described: its GGUF header gives the metadata (``model_info``,
typed as Ollama shows it), the architecture, file type and parameter count (``details``); its
vocabulary alone (milliseconds to load) gives the chat template and FIM tokens a model not loaded
now would have. ``capabilities`` lists only what the model does on this server.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import math
import mmap
import os
import struct
import time
from pathlib import Path
from typing import Any

from ..chat import ChatTemplate, chat_template
from ..chat.plan import THINK_TAGS
from ..enums import FileType
from ..gguf_check import _Reader  # the header walker: bounds-checked reads of a GGUF's key/value section
from ..gguf_check import tensor_table
from ..model import Model
from .errors import RequestError
from .model_pool import PooledModel
from .served_model import ServedModel
from .settings import Settings

NEVER = "2318-01-01T00:00:00Z"  # Ollama's expires_at of a model kept loaded for good (keep_alive -1)


def iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def listed_name(pooled: PooledModel) -> str:
    return pooled.name if ":" in pooled.name else f"{pooled.name}:latest"


def file_stamp(path: str) -> tuple[str, int, int]:
    stat = os.stat(path)
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns


class _TypedReader(_Reader):
    """gguf_check's reader, keeping the values: scalars, strings, and arrays of up to ``limit``
    items (longer ones are skipped and shown empty, as Ollama shows them without ``verbose``)."""

    FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

    def __init__(self, data: Any, path: Path, limit: int | None) -> None:
        super().__init__(data, path)
        self.limit = limit

    def scalar(self, kind: int, key: str) -> Any:
        if kind == 8:
            return self.string(f"value of {key}").decode("utf-8", "replace")
        fmt = self.FORMATS.get(kind)
        if fmt is None:
            raise self.fail(f"key {key} has value type {kind}")
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), f"value of {key}"))[0]

    def value(self, kind: int, key: str) -> Any:
        if kind != 9:
            return self.scalar(kind, key)
        item_kind, count = self.u32(f"array type of {key}"), self.u64(f"array length of {key}")
        if self.limit is not None and count > self.limit:
            self.pos -= 12
            super().value(kind, key)  # skipped, bounds-checked
            return []
        return [self.scalar(item_kind, key) for _ in range(count)]


@functools.lru_cache(maxsize=32)
def metadata(stamp: tuple[str, int, int], verbose: bool) -> dict[str, Any]:
    """A GGUF's key/value metadata, typed, read from its header (``stamp``: path, size, mtime)."""
    path = stamp[0]
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        reader = _TypedReader(data, Path(path), None if verbose else 5)
        if reader.take(4, "magic") != b"GGUF":
            raise RequestError(500, f"{path} is not a GGUF file")
        reader.u32("version")
        reader.u64("tensor count")
        info = {}
        for _ in range(reader.u64("key count")):
            key = reader.string("a key").decode("utf-8", "replace")
            info[key] = reader.value(reader.u32(f"type of {key}"), key)
    return info


def model_info(path: str, verbose: bool = False) -> dict[str, Any]:
    info = dict(metadata(file_stamp(path), verbose))
    for key in ("general.name", "tokenizer.chat_template"):  # shown elsewhere, as Ollama does
        info.pop(key, None)
    return info


@functools.lru_cache(maxsize=32)
def n_params(stamp: tuple[str, int, int]) -> int:
    return sum(math.prod(tensor.dims) for tensor in tensor_table(stamp[0]).values())


def _human(count: int) -> str:
    """Ollama's parameter_size: 8.0B, 270.3M, 12.0K."""
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


def details(settings: Settings) -> dict[str, Any]:
    """Ollama's ``details`` of a model, from its file (loaded or not)."""
    stamp = file_stamp(settings.model)
    meta = metadata(stamp, False)
    family = meta.get("general.architecture", "unknown")
    families = [family] + (["clip"] if settings.mmproj else [])
    try:
        quantization = FileType(meta.get("general.file_type", -1)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        quantization = "unknown"
    return {"parent_model": "", "format": "gguf", "family": family, "families": families,
            "parameter_size": _human(n_params(stamp)), "quantization_level": quantization}


def _digest(path: str) -> str:
    """Identifies the file (its path, size and modification time) without reading gigabytes: like
    Ollama's digest (its manifest's hash), it changes when the model does."""
    return hashlib.sha256("\0".join(map(str, file_stamp(path))).encode()).hexdigest()


def listing(pooled: PooledModel) -> dict[str, Any]:
    path = pooled.settings.model
    name = listed_name(pooled)
    return {"name": name, "model": name, "modified_at": iso(os.stat(path).st_mtime),
            "size": os.path.getsize(path), "digest": _digest(path), "details": details(pooled.settings)}


def has_tools(template: ChatTemplate) -> bool:
    """The template renders tools itself (pyllama.chat then plans a request's tools with the
    template's own format rather than its generic instructions); functionary is pyllama's
    named tool format."""
    return template.format == "functionary" or "tools" in (template.source or "")


def has_thinking(template: ChatTemplate) -> bool:
    source = template.source or ""
    return any(opening in source and closing in source for opening, closing in THINK_TAGS)


@functools.lru_cache(maxsize=32)
def _vocab_profile(stamp: tuple[str, int, int], chat_format: str | None) -> tuple[ChatTemplate, bool]:
    """The template and whether the vocabulary has FIM tokens, of a model not loaded now: its
    vocabulary alone is loaded for it (milliseconds), not its weights."""
    with Model(stamp[0], vocab_only=True) as model:
        vocab = model.vocab
        return chat_template(model, chat_format), min(vocab.fim_prefix, vocab.fim_suffix, vocab.fim_middle) >= 0


def profile(pooled: PooledModel) -> tuple[ChatTemplate, bool]:
    served = pooled.served
    if served is not None:
        vocab = served.vocab
        return served.template, min(vocab.fim_prefix, vocab.fim_suffix, vocab.fim_middle) >= 0
    return _vocab_profile(file_stamp(pooled.settings.model), pooled.settings.chat_format)


def capabilities(pooled: PooledModel) -> list[str]:
    """What this model does on this server: generation unless it is an embedding model (a pooling
    type in its GGUF, as Ollama decides), tools and thinking as its template has them, fill in
    the middle with its vocabulary's FIM tokens, vision and audio with a projector that has those
    encoders, embeddings when this server serves them."""
    settings = pooled.settings
    meta = metadata(file_stamp(settings.model), False)
    template, fim = profile(pooled)
    projector = metadata(file_stamp(settings.mmproj), False) if settings.mmproj else {}
    found = []
    if f"{meta.get('general.architecture', '')}.pooling_type" not in meta:
        found.append("completion")
    if has_tools(template):
        found.append("tools")
    if fim:
        found.append("insert")
    if projector.get("clip.has_vision_encoder"):
        found.append("vision")
    if projector.get("clip.has_audio_encoder"):
        found.append("audio")
    if settings.embedding:
        found.append("embedding")
    if has_thinking(template):
        found.append("thinking")
    return found


def size_vram(service: ServedModel) -> int:
    """Bytes of weights on a GPU: the share of layers offloaded (the output layer counts as one)."""
    model = service.model
    layers = service.settings.n_gpu_layers
    if layers == 0 or not model.uses_gpu:
        return 0
    total = model.n_layer + 1
    return model.size * min(total if layers < 0 else layers, total) // total


def expires_at(pooled: PooledModel) -> str:
    if pooled.idle_seconds is None:
        return NEVER
    return iso(time.time() + pooled.idle_seconds - (time.monotonic() - pooled.last_used if not pooled.holders else 0))
