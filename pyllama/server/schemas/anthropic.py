"""Request bodies of Anthropic's Messages API (``/v1/messages``, ``/v1/messages/count_tokens``).

llama.cpp's sampling fields (``min_p``, ``logit_bias``, ``seed``, ...) are kept as extra
fields; server/anthropic.py passes them on to the chat path.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from .common import MAX_STOPS, Body, Count, Fraction, Int32, StopString, type_of


# --- the request -------------------------------------------------------------------------------
class TextBlock(Body):
    type: Literal["text"]
    text: str


class Base64Source(Body):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(Body):
    type: Literal["url"]
    url: str


class PlainTextSource(Body):
    type: Literal["text"]
    data: str
    media_type: str = "text/plain"


class ImageBlock(Body):
    type: Literal["image"]
    source: Annotated[Union[Base64Source, URLSource], Field(discriminator="type")]


class DocumentBlock(Body):
    type: Literal["document"]
    source: Annotated[Union[PlainTextSource, Base64Source, URLSource], Field(discriminator="type")]
    title: str | None = None


class ToolUseBlock(Body):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(Body):
    type: Literal["tool_result"]
    tool_use_id: str
    content: Union[str, list[Annotated[Union[TextBlock, ImageBlock], Field(discriminator="type")]], None] = None
    is_error: bool = False


class ThinkingBlock(Body):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(Body):
    type: Literal["redacted_thinking"]
    data: str


Block = Annotated[Union[TextBlock, ImageBlock, DocumentBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock,
                        RedactedThinkingBlock], Field(discriminator="type")]


class Message(Body):
    role: Literal["user", "assistant"]
    content: Union[str, list[Block]]


class CustomTool(Body):
    type: Literal["custom"] | None = None
    name: str = Field(..., min_length=1, max_length=256)
    description: str | None = None
    input_schema: dict[str, Any]


class ServerTool(BaseModel):
    """bash_20250124, web_search_20250305, ...: tools Anthropic's servers run; none run here."""

    model_config = ConfigDict(extra="allow")
    type: str


ToolSpec = Annotated[Union[Annotated[CustomTool, Tag("custom")], Annotated[ServerTool, Tag("server")]],
                     Discriminator(lambda v: "custom" if type_of(v) in (None, "custom") else "server")]


class ToolChoice(Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(Body):
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: Count | None = None


class OutputFormat(Body):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(..., alias="schema")


class OutputConfig(Body):
    format: OutputFormat | None = None
    effort: str | None = None


class Metadata(Body):
    user_id: str | None = None


class CountTokensRequest(Body):
    """``/v1/messages/count_tokens``: what shapes the prompt."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: Annotated[list[Message], Field(min_length=1)]
    system: Union[str, list[TextBlock], None] = None
    tools: list[ToolSpec] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None


class MessagesRequest(CountTokensRequest):
    """``/v1/messages``; unknown fields are ignored, llama.cpp's sampling fields are used."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"max_tokens": 64, "system": "Be brief.", "messages": [{"role": "user", "content": "Name the planets."}]}]})

    max_tokens: Int32 = Field(..., ge=1)
    stop_sequences: Annotated[list[StopString], Field(max_length=MAX_STOPS)] | None = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: Fraction | None = None
    top_k: Count | None = None
    metadata: Metadata | None = None
