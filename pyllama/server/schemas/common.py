"""What every API's request bodies share: the base model, the bounds, and the generation fields.

The bounds are what the engine accepts. A value out of bounds is a 400 in the API's error shape
naming the field (server/errors.py). Unknown fields are ignored, as OpenAI-compatible servers do;
NaN and Infinity are refused everywhere. Values that need the model to check (token ids,
grammars, templates) are checked by the routes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

INT32_MAX = 2**31 - 1
MAX_TOP_LOGPROBS = 20  # alternatives per token: OpenAI's limit for top_logprobs, also ours for n_probs
MAX_STOPS = 16
MAX_STOP_LENGTH = 1024
MAX_CHOICES = 16  # n, and prompts per request
MAX_DOCUMENTS = 1000  # per rerank request: each is a forward pass (Cohere's limit too)


class Body(BaseModel):
    # strict: "5" is not a number and 1 is not a string; a client that sends them has a bug to hear about
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, populate_by_name=True, strict=True)


def type_of(value: Any, default: str | None = None) -> Any:
    """The ``type`` of a part or item, raw (a dict) or validated, for a union's discriminator."""
    return value.get("type", default) if isinstance(value, dict) else getattr(value, "type", default)


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


PromptPart = Union[TokenId, str]  # prompts may mix token ids and text (llama.cpp)


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
    post_sampling_probs: bool = Field(False, description="with n_probs / logprobs: the probabilities after the "
                                                         "sampler chain (prob, top_probs), not the model's logprobs")
    verbose: bool | None = Field(None, description="add __verbose (the prompt as the model saw it); "
                                                   "default: the server's -v")
    n_keep: int = Field(0, ge=-1, le=INT32_MAX, description="with context shifting: prompt tokens never dropped "
                                                             "(-1: all of them)")
    lora: Annotated[list[LoraScale], Field(max_length=1024)] | None = Field(
        None, description="LoRA adapters for this request, [{id, scale}]; those left out get scale 0")
    user: str | None = None
