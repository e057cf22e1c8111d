"""Anthropic's Messages API (``/v1/messages``, ``/v1/messages/count_tokens``) on the one chat path.

A request becomes a :class:`ChatRequest` (system -> a system message, content blocks -> text
and image parts, tool_use -> tool calls, tool_result -> tool messages, thinking -> the
reasoning of a turn, ``input_schema`` tools -> function tools), so validation, sampling, tools,
grammars and the engine are the chat route's; the chat result (or its chunks) becomes a
``message`` (or Anthropic's event stream). Errors on these routes have Anthropic's shape
(server/errors.py); ``x-api-key`` is accepted as the API key (server/gate.py). llama.cpp's
sampling fields (``min_p``, ``logit_bias``, ``seed``, ...) pass through as on the chat route.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from .chat_generation import ChunkEvents, complete_chat, stream_chat, translated
from .errors import RequestError, anthropic_error_body
from .schemas.anthropic import (CountTokensRequest, CustomTool, DocumentBlock, ImageBlock, MessagesRequest,
                                PlainTextSource, ServerTool, TextBlock, ThinkingBlock, ToolChoice, ToolResultBlock,
                                ToolUseBlock, URLSource)
from .schemas.common import GenerationFields
from .schemas.openai import ChatRequest
from .served_model import ServedModel
from .model_pool import ModelPool
from .sse import sse, started

logger = logging.getLogger("pyllama.server")

# the chat fields this API spells its own way (or does not have); the other llama.cpp fields pass through
_OWN = {"model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n_predict", "n", "stop",
        "temperature", "top_p", "top_k", "response_format", "user"}
_EXTRAS = frozenset(GenerationFields.model_fields) - _OWN


# --- request -> ChatRequest ------------------------------------------------------------------------
# Claude Code opens its system prompt with a billing header whose cch= value changes every request;
# masked, the prompt's cached prefix still matches the next request's
_BILLING = re.compile(r"^(x-anthropic-billing-header:[^\n]*?\bcch=)([0-9A-Za-z]+)")


def _system(system: str | list[TextBlock] | None) -> str | None:
    if system is None:
        return None
    texts = [system] if isinstance(system, str) else [block.text for block in system]
    return "\n\n".join(_BILLING.sub(lambda m: m.group(1) + "0" * len(m.group(2)), text) for text in texts)


def _image(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    url = source.url if isinstance(source, URLSource) else f"data:{source.media_type};base64,{source.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _document(block: DocumentBlock, where: str) -> dict[str, Any]:
    if not isinstance(block.source, PlainTextSource):
        raise RequestError(400, f"'{where}.source': only plain-text documents (source type 'text') can be read here",
                           f"{where}.source", "unsupported_value")
    heading = f"{block.title}\n\n" if block.title else ""
    return {"type": "text", "text": heading + block.source.data}


def _tool_result(block: ToolResultBlock) -> dict[str, Any]:
    content = block.content or ""
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else \
        [{"type": "text", "text": b.text} if isinstance(b, TextBlock) else _image(b) for b in content]
    if block.is_error:  # the chat path's tool messages have no error flag; the model reads it in the text
        parts.insert(0, {"type": "text", "text": "Error: "})
    text_only = all(part["type"] == "text" for part in parts)
    return {"role": "tool", "tool_call_id": block.tool_use_id,
            "content": "".join(part["text"] for part in parts) if text_only else parts}


def _messages(body: CountTokensRequest) -> list[dict[str, Any]]:
    system = _system(body.system)
    messages: list[dict[str, Any]] = [] if system is None else [{"role": "system", "content": system}]
    for i, message in enumerate(body.messages):
        if isinstance(message.content, str):
            messages.append({"role": message.role, "content": message.content})
            continue
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        thinking = ""
        for j, block in enumerate(message.content):
            if isinstance(block, TextBlock):
                parts.append({"type": "text", "text": block.text})
            elif isinstance(block, ImageBlock):
                parts.append(_image(block))
            elif isinstance(block, DocumentBlock):
                parts.append(_document(block, f"messages[{i}].content[{j}]"))
            elif isinstance(block, ToolUseBlock):
                arguments = json.dumps(block.input, ensure_ascii=False)
                calls.append({"id": block.id, "type": "function", "function": {"name": block.name,
                                                                               "arguments": arguments}})
            elif isinstance(block, ToolResultBlock):
                results.append(_tool_result(block))
            elif isinstance(block, ThinkingBlock):
                thinking += block.thinking
            # redacted_thinking is encrypted for Anthropic's own models: nothing here can read it
        messages += results  # tool results answer the calls just before them, ahead of the turn's new text
        if parts or calls or thinking:
            text_only = all(part["type"] == "text" for part in parts)
            turn: dict[str, Any] = {"role": message.role,
                                    "content": "".join(p["text"] for p in parts) if text_only else parts}
            if calls:
                turn["tool_calls"] = calls
            if thinking:
                turn["reasoning_content"] = thinking
            messages.append(turn)
    return messages


def _tools(body: CountTokensRequest) -> list[dict[str, Any]] | None:
    server = sorted({tool.type for tool in body.tools or [] if isinstance(tool, ServerTool)})
    if server:  # as llama-server does: the model is offered the tools it can call through the client
        logger.warning("/v1/messages: skipped tools this server cannot run: %s", ", ".join(server))
    return [{"type": "function", "function": {"name": tool.name, "parameters": tool.input_schema}
             | ({"description": tool.description} if tool.description else {})}
            for tool in body.tools or [] if isinstance(tool, CustomTool)] or None


def _tool_choice(choice: ToolChoice | None) -> Any:
    if choice is None:
        return None
    if choice.type == "tool":
        if not choice.name:
            raise RequestError(400, "'tool_choice.name' is required when tool_choice.type is 'tool'",
                               "tool_choice.name")
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def chat_request(body: CountTokensRequest) -> ChatRequest:
    fields: dict[str, Any] = {k: v for k, v in (body.model_extra or {}).items() if k in _EXTRAS}
    choice = body.tool_choice
    form = body.output_config.format if body.output_config is not None else None
    fields.update(
        model=body.model, messages=_messages(body), tools=_tools(body), tool_choice=_tool_choice(choice),
        parallel_tool_calls=False if choice is not None and choice.disable_parallel_tool_use else None,
        response_format={"type": "json_schema", "json_schema": {"schema": form.schema_}} if form else None,
        # <think> text becomes thinking blocks, unless the client turned thinking off
        reasoning=body.thinking is None or body.thinking.type != "disabled")
    if isinstance(body, MessagesRequest):
        fields.update(max_tokens=body.max_tokens, stop=body.stop_sequences, temperature=body.temperature,
                      top_p=body.top_p, top_k=body.top_k, user=body.metadata.user_id if body.metadata else None,
                      stream=body.stream, stream_options={"include_usage": True} if body.stream else None)
    return translated({k: v for k, v in fields.items() if v is not None})


# --- chat result -> message ---------------------------------------------------------------------
def _id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    arguments = json.loads(call["function"]["arguments"])  # the chat path writes them with json.dumps
    return {"type": "tool_use", "id": "toolu_" + call["id"].removeprefix("call_"), "name": call["function"]["name"],
            "input": arguments if isinstance(arguments, dict) else {}}  # tool input is an object in this API


def _stop(body: MessagesRequest, finish: str | None, stop_word: str | None) -> tuple[str, str | None]:
    """Anthropic's stop_reason and stop_sequence for the chat path's finish_reason."""
    if finish == "tool_calls":
        return "tool_use", None
    if finish == "length":
        return "max_tokens", None
    if stop_word is not None and stop_word in (body.stop_sequences or ()):
        return "stop_sequence", stop_word
    return "end_turn", None  # end of generation, or the template's own end-of-turn string


def _usage(prompt: int, generated: int, cached: int) -> dict[str, int]:
    # Anthropic counts prompt tokens read from a cache apart from input_tokens
    return {"input_tokens": prompt - cached, "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached,
            "output_tokens": generated}


async def create_message(service: ServedModel, body: MessagesRequest, chat: ChatRequest) -> dict[str, Any]:
    result = await complete_chat(service, chat, details=True)
    choice = result["choices"][0]
    message = choice["message"]
    content: list[dict[str, Any]] = []
    if message.get("reasoning_content"):  # local models sign nothing: the signature is empty
        content.append({"type": "thinking", "thinking": message["reasoning_content"], "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    content += [_tool_use(call) for call in message.get("tool_calls") or []]
    stop_reason, stop_sequence = _stop(body, choice["finish_reason"], choice.get("stop_word"))
    usage = result["usage"]
    return {"id": _id(), "type": "message", "role": "assistant", "model": service.name, "content": content,
            "stop_reason": stop_reason, "stop_sequence": stop_sequence,
            "usage": _usage(usage["prompt_tokens"], usage["completion_tokens"],
                            (result.get("timings") or {}).get("cache_n", 0))}


class _Events(ChunkEvents):
    """Chat chunks -> Anthropic's event stream: content blocks (thinking, text, tool_use) opened
    and closed in order, one at a time; a tool call comes whole, so its block does too."""

    REASONING = "thinking"

    def __init__(self, service: ServedModel, body: MessagesRequest) -> None:
        super().__init__()
        self.service, self.body = service, body
        self.blocks, self.open = 0, None  # blocks started so far; the kind of the one open

    def start(self, prompt_tokens: int) -> list[dict[str, Any]]:
        message = {"id": _id(), "type": "message", "role": "assistant", "model": self.service.name,
                   "content": [], "stop_reason": None, "stop_sequence": None, "usage": _usage(prompt_tokens, 0, 0)}
        return [{"type": "message_start", "message": message}]

    def write(self, kind: str, text: str) -> list[dict[str, Any]]:
        out = []
        if self.open != kind:
            out += self.close()
            block = {"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": "",
                                                                          "signature": ""}
            out.append({"type": "content_block_start", "index": self.blocks, "content_block": block})
            self.open, self.blocks = kind, self.blocks + 1
        delta = {"type": "text_delta", "text": text} if kind == "text" else {"type": "thinking_delta", "thinking": text}
        return out + [{"type": "content_block_delta", "index": self.blocks - 1, "delta": delta}]

    def close(self) -> list[dict[str, Any]]:
        if self.open is None:
            return []
        out = []
        if self.open == "thinking":  # clients wait for a signature before a thinking block ends
            out.append({"type": "content_block_delta", "index": self.blocks - 1,
                        "delta": {"type": "signature_delta", "signature": ""}})
        self.open = None
        return out + [{"type": "content_block_stop", "index": self.blocks - 1}]

    def tool_call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        index, block = self.blocks, _tool_use(call)
        self.blocks += 1
        return [{"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}},
                {"type": "content_block_delta", "index": index,
                 "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"], ensure_ascii=False)}},
                {"type": "content_block_stop", "index": index}]

    def end(self, usage: dict[str, int]) -> list[dict[str, Any]]:
        stop_reason, stop_sequence = _stop(self.body, self.finish, self.stop_word)
        return self.close() + [
            {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
             "usage": _usage(usage["prompt_tokens"], usage["completion_tokens"], self.cached)},
            {"type": "message_stop"}]


async def stream_message(service: ServedModel, body: MessagesRequest, chat: ChatRequest) -> AsyncIterator[dict]:
    events = _Events(service, body)
    chunks = stream_chat(service, chat, details=True)
    sent = False
    try:
        async for chunk in chunks:
            for event in events.feed(chunk):
                sent = True
                yield event
    except RequestError as exc:
        if not sent:  # nothing sent yet: still a plain HTTP error
            raise
        yield anthropic_error_body(exc.status, exc.message)
    finally:
        await chunks.aclose()


def router(pool: ModelPool) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/messages", summary="Anthropic Messages", tags=["Anthropic"])
    async def messages(body: MessagesRequest) -> Response:
        service = await pool.pick(body.model)
        chat = chat_request(body)
        if body.stream:
            return sse(*await started(stream_message(service, body, chat)), done_marker=False, named=True)
        return JSONResponse(await create_message(service, body, chat))

    @api.post("/v1/messages/count_tokens", summary="the input tokens an Anthropic request takes", tags=["Anthropic"])
    async def count_tokens(body: CountTokensRequest) -> dict[str, int]:
        plan = await (await pool.pick(body.model)).plan_chat(chat_request(body), check_room=False)
        return {"input_tokens": len(plan.prompt_tokens)}

    return api
