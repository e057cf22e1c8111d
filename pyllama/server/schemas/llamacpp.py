"""Request bodies of llama.cpp's own routes: infill, rerank, tokenize, detokenize, slot files.

(llama.cpp's ``/completion`` and ``/embeddings`` take OpenAI's bodies, schemas/openai.py;
``/lora-adapters`` takes a list of schemas/common.py's LoraScale.)
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import ConfigDict, Field, model_validator

from .common import INT32_MAX, MAX_DOCUMENTS, MAX_TOP_LOGPROBS, Body, GenerationFields, TokenId


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


class SlotFile(Body):
    filename: str = Field("", description="a file name in --slot-save-path (save, restore)")


class StreamLookup(Body):
    """POST /v1/streams/lookup: the resumable streams of these conversations (server/stream_sessions.py)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"conversation_ids": ["conv-1"]}]})

    conversation_ids: list[str] = Field(default_factory=list, max_length=MAX_DOCUMENTS)
