"""Typed request bodies: every route's input is validated here, once, before the route runs.

The models take OpenAI's fields and llama.cpp's extras (llama-server's names, and
llama-cpp-python's where they differ), each bounded to what the engine accepts. A value out of
bounds is a 400 in OpenAI's error shape naming the field (server/errors.py). Unknown fields are
ignored, as OpenAI-compatible servers do; NaN and Infinity are refused everywhere. Values that
need the model to check (token ids, grammars, templates) are checked by the routes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

INT32_MAX = 2**31 - 1
MAX_TOP_LOGPROBS = 20  # alternatives per token: OpenAI's limit for top_logprobs, also ours for n_probs
MAX_STOPS = 16
MAX_STOP_LENGTH = 1024
MAX_CHOICES = 16  # n, and prompts per request
MAX_DOCUMENTS = 1000  # per rerank request: each is a forward pass (Cohere's limit too)


class Body(BaseModel):
    # strict: "5" is not a number and 1 is not a string; a client that sends them has a bug to hear about
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, populate_by_name=True, strict=True)


def _uint32(seed: int) -> int:
    return seed & 0xFFFFFFFF  # llama.cpp's seeds are uint32; -1 becomes its "random seed"


Seed = Annotated[int, AfterValidator(_uint32)]
Int32 = Annotated[int, Field(ge=-(2**31), le=INT32_MAX)]
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
Window = Annotated[int, Field(ge=-1, le=INT32_MAX, description="-1: the whole context, 0: off")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
TokenId = Annotated[int, Field(ge=0, le=INT32_MAX)]
StopString = Annotated[str, Field(max_length=MAX_STOP_LENGTH)]
Stop = Union[StopString, Annotated[list[StopString], Field(max_length=MAX_STOPS)]]
# OpenAI's {"token id": bias}; llama.cpp's also [[token id or text, bias]] and text keys; false bans a token
Bias = Union[float, Literal[False]]
BiasPair = Annotated[list[Union[TokenId, str, float, bool]], Field(min_length=2, max_length=2)]
LogitBias = Union[dict[str, Bias], list[BiasPair]]
class LoraScale(Body):
    """One LoRA adapter's scale, by its id in GET /lora-adapters (llama-server's ``lora`` items)."""

    id: int = Field(..., ge=0, le=INT32_MAX)
    scale: Annotated[float, Field(strict=False)]  # 1 as well as 1.0


class JSONPrompt(Body):
    """llama.cpp's prompt object: text, with its images/audio (base64) where the text has
    llama.cpp's media marker."""

    prompt_string: str
    multimodal_data: list[str] | None = None


# text; token ids; token ids and text mixed (llama.cpp); a prompt object; or a list of prompts
PromptPart = Union[TokenId, str]
Prompt = Union[str, JSONPrompt, Annotated[list[Union[PromptPart, JSONPrompt, Annotated[list[PromptPart],
                                                                                       Field(min_length=1)]]],
                                          Field(min_length=1)]]


class StreamOptions(Body):
    include_usage: bool = False


class JSONSchemaFormat(Body):
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")  # llama-server's shorthand


class GenerationFields(Body):
    """Fields every generating route shares: limits, stop strings, constraints, sampling."""

    model: str | None = Field(None, description="any name on a one-model server")
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Int32 | None = Field(None, ge=-1, description="-1 or null: until the context is full")
    max_completion_tokens: Int32 | None = Field(None, ge=-1)
    n_predict: Int32 | None = Field(None, ge=-1, description="llama.cpp's name for max_tokens")
    stop: Stop | None = None
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="choices to generate")
    seed: Seed | None = None
    temperature: float | None = Field(None, ge=0.0)
    top_k: Count | None = Field(None, description="0: off; more than the vocabulary keeps all of it")
    top_p: Fraction | None = None
    min_p: Fraction | None = None
    typical_p: float | None = Field(None, gt=0.0, le=1.0)
    repeat_penalty: float | None = Field(None, gt=0.0)
    repeat_last_n: Window | None = None
    penalty_last_n: Window | None = Field(None, description="llama-cpp-python's name for repeat_last_n")
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    mirostat: Literal[0, 1, 2] | None = None
    mirostat_mode: Literal[0, 1, 2] | None = Field(None, description="llama-cpp-python's name for mirostat")
    mirostat_tau: float | None = Field(None, ge=0.0)
    mirostat_eta: float | None = Field(None, ge=0.0)
    dynatemp_range: float | None = Field(None, ge=0.0)
    dynatemp_exponent: float | None = Field(None, ge=0.0)
    top_n_sigma: float | None = None
    xtc_probability: Fraction | None = None
    xtc_threshold: Fraction | None = None
    dry_multiplier: float | None = Field(None, ge=0.0)
    dry_base: float | None = Field(None, ge=1.0)
    dry_allowed_length: Count | None = None
    dry_penalty_last_n: Window | None = None
    dry_sequence_breakers: Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]],
                                     Field(min_length=1, max_length=64)] | None = None
    min_keep: Count | None = None
    ignore_eos: bool = False
    logit_bias: LogitBias | None = None
    grammar: Annotated[str, Field(max_length=1 << 20)] | None = Field(None, description="GBNF")
    json_schema: dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    cache_prompt: bool = True
    id_slot: int = Field(-1, ge=-1, le=INT32_MAX, description="run in this slot (waiting for it); -1: any")
    return_progress: bool = Field(False, description="stream prompt_progress while the prompt is evaluated")
    timings_per_token: bool = Field(False, description="every streamed chunk carries the timings so far")
    verbose: bool | None = Field(None, description="add __verbose (the prompt as the model saw it); "
                                                   "default: the server's -v")
    n_keep: int = Field(0, ge=-1, le=INT32_MAX, description="with context shifting: prompt tokens never dropped "
                                                             "(-1: all of them)")
    lora: Annotated[list[LoraScale], Field(max_length=1024)] | None = Field(
        None, description="LoRA adapters for this request, [{id, scale}]; those left out get scale 0")
    user: str | None = None


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


class InfillFile(Body):
    filename: str = "tmp"
    text: str


class InfillRequest(GenerationFields):
    """llama.cpp's ``/infill``: code completion between a prefix and a suffix."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"input_prefix": "def add(a, b):\n    ", "input_suffix": "\n\nprint(add(1, 2))\n", "n_predict": 32}]})

    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[InfillFile] = Field(default_factory=list, description="other files, for context")
    prompt: str = Field("", description="the start of the middle, already written")
    n_probs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    return_tokens: bool = False
    response_fields: list[Annotated[str, Field(max_length=256)]] | None = Field(None, max_length=64)


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
    kind = part.get("type") if isinstance(part, dict) else getattr(part, "type", None)
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


class PromptString(Body):
    prompt_string: str
    multimodal_data: list[str] | None = None


class PromptContent(Body):
    content: list[TextPart]


# llama.cpp's input objects: {"prompt_string": ...} or {"content": [text parts]}
InputObject = Union[PromptString, PromptContent]
EmbeddingPrompt = Union[str, InputObject, Annotated[list[PromptPart], Field(min_length=1)]]


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


class RerankDocument(Body):
    text: str


class RerankRequest(Body):
    """``/rerank``: Jina/Cohere's ``documents``, or Hugging Face TEI's ``texts`` (one of them)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"query": "what do llamas eat?", "documents": ["Llamas eat grass.", "Paris is in France."], "top_n": 1}]})

    query: str = Field(min_length=1)
    documents: Annotated[list[Union[str, RerankDocument]], Field(min_length=1, max_length=MAX_DOCUMENTS)] | None = None
    texts: Annotated[list[str], Field(min_length=1, max_length=MAX_DOCUMENTS)] | None = None
    model: str | None = None
    top_n: int | None = Field(None, ge=1, le=INT32_MAX, description="how many results (default: all)")
    return_documents: bool = Field(False, description="each result's document as {\"text\"} (Jina/Cohere)")
    return_text: bool = Field(False, description="each result's text (TEI)")

    @model_validator(mode="after")
    def _one_list(self) -> RerankRequest:
        if (self.documents is None) == (self.texts is None):
            raise ValueError("give the documents to rank as 'documents' (or TEI's 'texts'), not both")
        return self


class TokenizeRequest(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"content": "hello world"}]})

    content: str
    model: str | None = None
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"tokens": [1, 22172, 3186]}]})

    tokens: list[TokenId]
    model: str | None = None
