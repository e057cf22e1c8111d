"""Request bodies of OpenAI's Responses API (``/v1/responses``, ``/v1/responses/input_tokens``).

The fields that need stored state (``previous_response_id``, ``conversation``, ``prompt``,
``background``) are read so that server/responses.py can refuse them by name; llama.cpp's
sampling fields are kept as extra fields and passed on to the chat path.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from .common import Body, Fraction, Int32, type_of


# --- the request -------------------------------------------------------------------------------
class InputText(Body):
    type: Literal["input_text"]
    text: str


class InputImage(Body):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class InputFile(Body):
    type: Literal["input_file"]


class OutputText(Body):
    type: Literal["output_text"]
    text: str


class Refusal(Body):
    type: Literal["refusal"]
    refusal: str


Part = Annotated[Union[InputText, InputImage, InputFile, OutputText, Refusal], Field(discriminator="type")]


class MessageItem(Body):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Union[str, list[Part]]


class FunctionCallItem(Body):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class FunctionCallOutputItem(Body):
    type: Literal["function_call_output"]
    call_id: str
    output: Union[str, list[Part]]


class ReasoningText(Body):
    type: Literal["summary_text", "reasoning_text"]
    text: str


class ReasoningItem(Body):
    type: Literal["reasoning"]
    summary: list[ReasoningText] = []
    content: list[ReasoningText] | None = None


class ItemReference(Body):
    type: Literal["item_reference"]
    id: str


InputItem = Annotated[
    Union[Annotated[MessageItem, Tag("message")], Annotated[FunctionCallItem, Tag("function_call")],
          Annotated[FunctionCallOutputItem, Tag("function_call_output")], Annotated[ReasoningItem, Tag("reasoning")],
          Annotated[ItemReference, Tag("item_reference")]],
    Discriminator(lambda v: type_of(v, "message"), custom_error_type="invalid_item",
                  custom_error_message="an input item is a message, function_call, function_call_output, "
                                       "reasoning or item_reference")]


class FunctionTool(Body):
    type: Literal["function"]
    name: str = Field(..., min_length=1, max_length=256)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class HostedTool(BaseModel):
    """web_search, file_search, ...: tools OpenAI's servers run; there is nothing here to run them."""

    model_config = ConfigDict(extra="allow")
    type: str


ToolSpec = Annotated[Union[Annotated[FunctionTool, Tag("function")], Annotated[HostedTool, Tag("hosted")]],
                     Discriminator(lambda v: "function" if type_of(v) == "function" else "hosted")]


class FunctionChoice(Body):
    type: Literal["function"]
    name: str


class TextFormat(Body):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(Body):
    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningConfig(Body):
    effort: str | None = None
    summary: str | None = None


class ResponsesRequest(Body):
    """``/v1/responses``; unknown fields are ignored, llama.cpp's sampling fields are used."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"instructions": "Be brief.", "input": "Name the planets of the solar system.", "max_output_tokens": 64}]})

    model: str | None = None
    input: Union[str, Annotated[list[InputItem], Field(min_length=1)]]
    instructions: str | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: Union[Literal["none", "auto", "required"], FunctionChoice, None] = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: Int32 | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0)
    top_p: Fraction | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    stream: bool = False
    store: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    # stored state, which a stateless server does not have: refused by name
    previous_response_id: str | None = None
    conversation: Union[str, dict[str, Any], None] = None
    prompt: dict[str, Any] | None = None
    background: bool | None = None
