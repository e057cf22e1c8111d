"""Ollama's request bodies (``/api/*``), as its docs/api.md spells them.

Ollama's clients send what Ollama accepts: ``options`` with Modelfile parameter names,
``format`` as ``"json"`` or a JSON schema, ``keep_alive`` as a duration (``"5m"``, seconds, -1),
``think`` as a bool or a level, images as base64 strings. Unknown fields and unknown options
are ignored, as Ollama does; a known one with a wrong type or out of bounds is a 400 in
Ollama's error shape (server/errors.py). The options that size a model when Ollama loads it
(``num_gpu``, ``num_thread``, ``use_mmap``...) are accepted and have no effect: a model here is
loaded with the server's settings.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .common import MAX_STOPS, MAX_TOP_LOGPROBS, Body, Count, Fraction, Int32, Seed, StopString, Window

_DURATION = re.compile(r"(?P<number>-?\d+(?:\.\d+)?)(?P<unit>ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: float | str | None) -> float | None:
    """Seconds a ``keep_alive`` asks for: a number of seconds or a Go duration ("5m", "1h30m");
    negative: forever. None when the request does not say."""
    if value is None or isinstance(value, (int, float)):
        return value
    text = value.strip()
    if re.fullmatch(r"-?\d+(?:\.\d+)?", text):
        return float(text)
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    parts = list(_DURATION.finditer(body))
    if not body or "".join(m.group(0) for m in parts) != body:
        raise ValueError(f"keep_alive {value!r} is not a duration (e.g. \"5m\", \"30s\", \"1h\", 0 or -1)")
    return sign * sum(float(m["number"]) * _UNITS[m["unit"]] for m in parts)


class Options(Body):
    """Modelfile parameters (a number where a float is expected may be written 1 or 1.0). Other
    keys are kept: llama.cpp's sampling fields (``grammar``, ``logit_bias``, ``dry_multiplier``...)
    pass through to the chat path, as on its other routes; the rest are ignored, as Ollama does."""

    model_config = ConfigDict(extra="allow")

    # sampling and limits: mapped onto the chat path's fields
    seed: Seed | None = None
    num_predict: Int32 | None = Field(None, ge=-2)  # -1: until the context is full; -2: fill the context
    num_keep: Int32 | None = Field(None, ge=-1)
    top_k: Count | None = None
    top_p: Fraction | None = None
    min_p: Fraction | None = None
    typical_p: float | None = Field(None, gt=0.0, le=1.0)
    repeat_last_n: Window | None = None
    temperature: float | None = Field(None, ge=0.0)
    repeat_penalty: float | None = Field(None, gt=0.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    mirostat: Literal[0, 1, 2] | None = None
    mirostat_tau: float | None = Field(None, ge=0.0)
    mirostat_eta: float | None = Field(None, ge=0.0)
    stop: Annotated[list[StopString], Field(max_length=MAX_STOPS)] | None = None
    # what Ollama uses when it loads a model (here the server's settings decide); accepted, no effect
    num_ctx: int | None = Field(None, ge=0)
    num_batch: int | None = None
    num_gpu: int | None = None
    main_gpu: int | None = None
    num_thread: int | None = None
    numa: bool | None = None
    use_mmap: bool | None = None
    use_mlock: bool | None = None
    low_vram: bool | None = None
    f16_kv: bool | None = None
    vocab_only: bool | None = None
    penalize_newline: bool | None = None  # deprecated in Ollama too: no effect there either
    tfs_z: float | None = None  # removed from llama.cpp's samplers

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # Ollama takes one string as well


KeepAlive = Union[float, str, None]
Think = Union[bool, Literal["low", "medium", "high", "max"], None]
# "" and "json", or a JSON schema (an object)
Format = Union[Literal["", "json"], dict[str, Any], None]
Image = Annotated[str, Field(max_length=1 << 30)]


class _Generating(Body):
    model: str = Field(..., min_length=1)
    stream: bool = True
    format: Format = None
    options: Options | None = None
    keep_alive: KeepAlive = None
    think: Think = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    truncate: bool | None = None
    shift: bool | None = None

    @field_validator("keep_alive")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        keep_alive_seconds(value)  # a ValueError names the bad value
        return value


class ToolFunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    index: int | None = None


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | None = None
    function: ToolFunctionCall


class Message(Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    images: list[Image] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class ChatRequest(_Generating):
    """``/api/chat``. No messages: load the model (with ``keep_alive`` 0: unload it)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model": "tiny", "messages": [{"role": "user", "content": "Why is the sky blue?"}], "stream": False}]})

    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class GenerateRequest(_Generating):
    """``/api/generate``. No prompt: load the model (with ``keep_alive`` 0: unload it)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model": "tiny", "prompt": "Why is the sky blue?", "stream": False}]})

    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[Annotated[int, Field(ge=0)]] | None = None
    raw: bool = False
    images: list[Image] | None = None


class EmbedRequest(Body):
    """``/api/embed``: one text or several."""

    model: str = Field(..., min_length=1)
    input: Union[str, list[str]]
    truncate: bool = True
    options: Options | None = None
    keep_alive: KeepAlive = None
    dimensions: int | None = Field(None, ge=1)


class EmbeddingsRequest(Body):
    """``/api/embeddings`` (superseded by /api/embed): one text."""

    model: str = Field(..., min_length=1)
    prompt: str
    options: Options | None = None
    keep_alive: KeepAlive = None


class ShowRequest(Body):
    model: str | None = None
    name: str | None = None  # the older spelling
    verbose: bool = False
