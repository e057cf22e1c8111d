"""Request bodies of OpenAI's API: chat and text completions, embeddings.

The models take OpenAI's fields and llama.cpp's extras (llama-server's names, and
llama-cpp-python's where they differ): llama.cpp's ``/completion`` reads a CompletionRequest
too, and ``/embeddings`` an EmbeddingRequest.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from .common import MAX_CHOICES, MAX_TOP_LOGPROBS, Body, GenerationFields, JSONPrompt, PromptPart, type_of

# text; token ids; token ids and text mixed (llama.cpp); a prompt object; or a list of prompts
Prompt = Union[str, JSONPrompt, Annotated[list[Union[PromptPart, JSONPrompt, Annotated[list[PromptPart],
                                                                                       Field(min_length=1)]]],
                                          Field(min_length=1)]]


class CompletionRequest(GenerationFields):
    """``/v1/completions`` (and llama.cpp's ``/completion``, which also reads ``n_probs``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"prompt": "Q: Name the planets in the solar system? A:", "max_tokens": 32, "stop": ["Q:", "\n"]}]})

    prompt: Prompt = Field(..., description="text, token ids, or a list of either (one choice set each)")
    suffix: str | None = Field(None, description="fill-in-the-middle: the text after the gap")
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    n_probs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    best_of: int | None = Field(None, ge=1, le=MAX_CHOICES)
    return_tokens: bool = Field(False, description="/completion: also return the generated token ids")
    response_fields: list[Annotated[str, Field(max_length=256)]] | None = Field(
        None, max_length=64, description="/completion: only these fields of the result; a/b reaches into a")


class TextPart(Body):
    type: Literal["text"]
    text: str


class ImageURL(Body):
    url: str
    detail: str | None = None


class ImagePart(Body):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(Body):
    data: str
    format: str


class AudioPart(Body):
    type: Literal["input_audio"]
    input_audio: InputAudio


_PART_TAGS = {"text": "TextPart", "image_url": "ImagePart", "input_audio": "AudioPart"}


def _part_tag(part: Any) -> str | None:
    """The class a content part's ``type`` names. Capitalized, so an error's location reads
    messages[0].content[0].text (server/errors.py drops union labels), not ...[0].text.text."""
    kind = type_of(part)
    return _PART_TAGS.get(kind) if isinstance(kind, str) else None


ContentPart = Annotated[Union[Annotated[TextPart, Tag("TextPart")], Annotated[ImagePart, Tag("ImagePart")],
                              Annotated[AudioPart, Tag("AudioPart")]],
                        Discriminator(_part_tag, custom_error_type="invalid_part",
                                      custom_error_message="a content part's type must be text, image_url or "
                                                           "input_audio")]


class FunctionCall(Body):
    name: str
    arguments: Union[str, dict[str, Any]] = ""


class ToolCall(Body):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    # extra fields stay: a model's template may read fields of its own
    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Union[str, list[ContentPart], None] = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCall | None = None
    reasoning_content: str | None = None


class FunctionDefinition(Body):
    name: str = Field(..., min_length=1, max_length=256)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Body):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(Body):
    name: str


class NamedTool(Body):
    type: Literal["function"] = "function"
    function: NamedFunction


class ChatRequest(GenerationFields):
    """``/v1/chat/completions``."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Name the planets of the solar system."}],
         "max_tokens": 64, "stream": True}]})

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    tools: list[Tool] | None = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedTool, None] = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDefinition] | None = None
    function_call: Union[Literal["none", "auto"], NamedFunction, None] = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    reasoning: bool = Field(False, description="move <think> text into reasoning_content")
    add_generation_prompt: bool | None = Field(None, description="end the prompt with the assistant's turn "
                                                                  "(default true)")
    continue_final_message: bool = Field(False, description="continue the final assistant message (vLLM)")
    chat_template_kwargs: dict[str, Any] | None = Field(None, description="more variables for the chat template, "
                                                                          "e.g. enable_thinking")

    @model_validator(mode="after")
    def _one_way_to_end(self) -> ChatRequest:
        if self.continue_final_message and self.add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt cannot both be true")
        return self


class PromptContent(Body):
    content: list[TextPart]


# llama.cpp's input objects: {"prompt_string": ...} or {"content": [text parts]}
InputObject = Union[JSONPrompt, PromptContent]


class EmbeddingRequest(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"input": ["hello world", "the planets"]}]})

    input: Union[str, InputObject, Annotated[list[Union[PromptPart, InputObject, Annotated[list[PromptPart],
                                                                                         Field(min_length=1)]]],
                                             Field(min_length=1)]] = Field(
        ..., description="text, token ids (with text pieces), an input object, or a list of these")
    model: str | None = None
    embd_normalize: float = Field(2, ge=-1, description="-1 none, 0 max-absolute, 1 taxicab, 2 Euclidean, p: p-norm")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None
