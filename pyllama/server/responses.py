"""OpenAI's Responses API (``/v1/responses``), stateless, on the one chat path.

A request becomes a :class:`ChatRequest` (input items -> messages, flat function tools ->
tools, ``text.format`` -> response_format, ``max_output_tokens`` -> max_tokens), so validation,
sampling, tools, grammars and the engine are the chat route's; the chat result (or its chunks)
becomes a ``response`` object (or the Responses event stream). Nothing is stored: a request that
needs stored state (``previous_response_id``, ``conversation``, item references, stored files or
prompts, ``background``) is a 400 saying so. llama.cpp's sampling fields (``top_k``,
``logit_bias``, ``seed``, ...) pass through as on the chat route.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from .chat_generation import ChunkEvents, complete_chat, stream_chat, translated
from .errors import RequestError
from .schemas.common import GenerationFields
from .schemas.openai import ChatRequest
from .schemas.responses import (FunctionCallItem, FunctionCallOutputItem, FunctionChoice, FunctionTool, HostedTool,
                                InputImage, InputText, ItemReference, MessageItem, OutputText, ReasoningConfig,
                                ReasoningItem, Refusal, ResponsesRequest, TextConfig)
from .served_model import ServedModel
from .model_pool import ModelPool
from .sse import sse, started

logger = logging.getLogger("pyllama.server")

# the chat fields this API spells its own way (or does not have); the other llama.cpp fields pass through
_OWN = {"model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n_predict", "n", "temperature",
        "top_p", "response_format", "user"}
_EXTRAS = frozenset(GenerationFields.model_fields) - _OWN


# --- request -> ChatRequest ------------------------------------------------------------------------
def _stateless(body: ResponsesRequest) -> None:
    stored = next((name for name in ("previous_response_id", "conversation", "prompt") if getattr(body, name)), None)
    if body.background:
        stored = "background"
    if stored is not None:
        raise RequestError(400, f"'{stored}' needs responses stored on the server; this server stores none "
                                "(send the whole conversation in 'input' instead)", stored, "unsupported_parameter")


def _parts(content: str | list[Any], where: str) -> str | list[dict[str, Any]]:
    """Content parts as the chat path's: text, or images by URL."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if isinstance(part, (InputText, OutputText)):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, Refusal):
            parts.append({"type": "text", "text": part.refusal})
        elif isinstance(part, InputImage) and part.image_url is not None:
            image = {"url": part.image_url} | ({"detail": part.detail} if part.detail else {})
            parts.append({"type": "image_url", "image_url": image})
        else:
            why = "an image by file_id needs stored files; send it as image_url" if isinstance(part, InputImage) \
                else "input_file is not supported; send the file's text as input_text"
            raise RequestError(400, f"'{where}[{j}]': {why}", f"{where}[{j}]", "unsupported_value")
    return parts


def _text(content: str | list[Any], where: str) -> str:
    parts = _parts(content, where)
    if isinstance(parts, str):
        return parts
    if any(p["type"] != "text" for p in parts):
        raise RequestError(400, f"'{where}': an assistant message holds text only", where)
    return "".join(p["text"] for p in parts)


def _turn(messages: list[dict[str, Any]], opens: bool = False) -> dict[str, Any]:
    """The assistant message an output item belongs to: the one just before it (a turn's
    reasoning, text and calls come as separate items), unless the item ``opens`` a new step."""
    last = messages[-1] if messages else None
    if last is None or last["role"] != "assistant" or (opens and (last["content"] or last.get("tool_calls"))):
        last = {"role": "assistant", "content": ""}
        messages.append(last)
    return last


def _messages(body: ResponsesRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.instructions is not None:
        messages.append({"role": "system", "content": body.instructions})
    if isinstance(body.input, str):
        return messages + [{"role": "user", "content": body.input}]
    for i, item in enumerate(body.input):
        where = f"input[{i}]"
        if isinstance(item, ItemReference):
            raise RequestError(400, f"'{where}': item_reference names a stored item; this server stores none "
                                    "(send the item itself)", where, "unsupported_value")
        if isinstance(item, MessageItem) and item.role != "assistant":
            messages.append({"role": item.role, "content": _parts(item.content, f"{where}.content")})
        elif isinstance(item, MessageItem):
            _turn(messages)["content"] += _text(item.content, f"{where}.content")
        elif isinstance(item, FunctionCallItem):
            function = {"name": item.name, "arguments": item.arguments}
            _turn(messages).setdefault("tool_calls", []).append({"id": item.call_id, "type": "function",
                                                                 "function": function})
        elif isinstance(item, FunctionCallOutputItem):
            messages.append({"role": "tool", "tool_call_id": item.call_id,
                             "content": _parts(item.output, f"{where}.output")})
        elif isinstance(item, ReasoningItem):
            thinking = "".join(part.text for part in (item.content or item.summary))
            if thinking:  # an item with only encrypted_content carries nothing this server can read
                turn = _turn(messages, opens=True)
                turn["reasoning_content"] = turn.get("reasoning_content", "") + thinking
    return messages


def _tools(body: ResponsesRequest) -> list[dict[str, Any]] | None:
    functions = [tool for tool in body.tools or [] if isinstance(tool, FunctionTool)]
    hosted = sorted({tool.type for tool in body.tools or [] if isinstance(tool, HostedTool)})
    if hosted:  # as llama-server does: the model is offered the tools it can call through the client
        logger.warning("/v1/responses: skipped tools this server cannot run: %s", ", ".join(hosted))
    return [{"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}
            for tool in functions] or None


def _response_format(text: TextConfig | None) -> dict[str, Any] | None:
    form = text.format if text is not None else None
    if form is None or form.type == "text":
        return None
    if form.type == "json_object":
        return {"type": "json_object"}
    if form.schema_ is None:
        raise RequestError(400, "'text.format.schema' is required for a json_schema format", "text.format.schema")
    return {"type": "json_schema", "json_schema": {"name": form.name, "schema": form.schema_, "strict": form.strict}}


def chat_request(body: ResponsesRequest) -> ChatRequest:
    _stateless(body)
    fields: dict[str, Any] = {k: v for k, v in (body.model_extra or {}).items() if k in _EXTRAS}
    choice = body.tool_choice
    if isinstance(choice, FunctionChoice):
        choice = {"type": "function", "function": {"name": choice.name}}
    fields.update(
        model=body.model, messages=_messages(body), tools=_tools(body), tool_choice=choice,
        parallel_tool_calls=body.parallel_tool_calls, max_tokens=body.max_output_tokens, temperature=body.temperature,
        top_p=body.top_p, response_format=_response_format(body.text), user=body.user, stream=body.stream,
        stream_options={"include_usage": True} if body.stream else None,
        # <think> text becomes reasoning items, unless the client turned reasoning off
        reasoning=body.reasoning is None or body.reasoning.effort != "none")
    return translated({k: v for k, v in fields.items() if v is not None})


# --- chat result -> response ----------------------------------------------------------------------
def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(text: str | None, status: str, item_id: str | None = None) -> dict[str, Any]:
    return {"id": item_id or _id("msg"), "type": "message", "role": "assistant", "status": status,
            "content": [] if text is None else [_text_part(text)]}


def _reasoning_item(text: str | None, status: str = "completed", item_id: str | None = None) -> dict[str, Any]:
    return {"id": item_id or _id("rs"), "type": "reasoning", "summary": [], "status": status,
            "content": [] if text is None else [{"type": "reasoning_text", "text": text}]}


def _call_item(call: dict[str, Any], status: str = "completed", arguments: str | None = None) -> dict[str, Any]:
    function = call["function"]
    return {"id": _id("fc"), "type": "function_call", "call_id": call["id"], "name": function["name"],
            "arguments": function["arguments"] if arguments is None else arguments, "status": status}


def _status(finish_reason: str | None) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


def _usage(service: ServedModel, prompt: int, generated: int, cached: int, reasoning: str) -> dict[str, Any]:
    # the reasoning's tokens, counted again from its text: the chat path reports one total
    thought = len(service.vocab.tokenize(reasoning, add_special=False, parse_special=True)) if reasoning else 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached}, "output_tokens": generated,
            "output_tokens_details": {"reasoning_tokens": min(thought, generated)}, "total_tokens": prompt + generated}


def _envelope(body: ResponsesRequest, response_id: str, created: int, model: str, status: str,
              output: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``response`` object, echoing the settings it ran with as OpenAI does."""
    choice = body.tool_choice.model_dump() if isinstance(body.tool_choice, FunctionChoice) else body.tool_choice
    form = body.text.format if body.text is not None and body.text.format is not None else None
    done = status in ("completed", "incomplete")
    return {
        "id": response_id, "object": "response", "created_at": created, "status": status, "error": None,
        "completed_at": int(time.time()) if status == "completed" else None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.instructions, "max_output_tokens": body.max_output_tokens, "model": model,
        "output": output, "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": None, "reasoning": (body.reasoning or ReasoningConfig()).model_dump(),
        "store": False, "temperature": body.temperature, "top_p": body.top_p,
        "text": {"format": form.model_dump(by_alias=True, exclude_none=True) if form else {"type": "text"}},
        "tool_choice": choice or "auto",
        "tools": [t.model_dump(exclude_none=True) for t in body.tools or [] if isinstance(t, FunctionTool)],
        "truncation": "disabled", "usage": usage if done else None, "user": body.user, "metadata": body.metadata or {}}


async def create_response(service: ServedModel, body: ResponsesRequest, chat: ChatRequest) -> dict[str, Any]:
    result = await complete_chat(service, chat, details=True)
    choice = result["choices"][0]
    message, status = choice["message"], _status(choice["finish_reason"])
    calls = message.get("tool_calls") or []
    output = [_reasoning_item(message["reasoning_content"])] if message.get("reasoning_content") else []
    if message.get("content") or not calls:
        output.append(_message_item(message.get("content") or "", status))
    output += [_call_item(call) for call in calls]
    usage = result["usage"]
    return _envelope(body, _id("resp"), result["created"], service.name, status, output,
                     _usage(service, usage["prompt_tokens"], usage["completion_tokens"],
                            (result.get("timings") or {}).get("cache_n", 0), message.get("reasoning_content") or ""))


class _Events(ChunkEvents):
    """Chat chunks -> the Responses event stream: one output item (reasoning, then the message)
    is open at a time; a tool call comes whole, so its item opens and closes at once."""

    TEXT = "message"

    def __init__(self, service: ServedModel, body: ResponsesRequest) -> None:
        super().__init__()
        self.service, self.body = service, body
        self.id, self.created, self.sequence = _id("resp"), int(time.time()), 0
        self.items: list[dict[str, Any]] = []  # finished output items, in order
        self.open: dict[str, Any] | None = None
        self.text, self.reasoning = "", ""

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.sequence += 1
        return {"type": kind, "sequence_number": self.sequence - 1, **fields}

    def envelope(self, status: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
        output = self.items if status != "in_progress" else []
        return _envelope(self.body, self.id, self.created, self.service.name, status, output, usage)

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The events of a chunk; llama.cpp's ``timings`` (timings_per_token, and the final ones)
        ride on its text deltas and on the completed response, as llama-server sends them."""
        out = super().feed(chunk)
        if "timings" in chunk:
            for event in out:
                if event["type"].endswith(".delta") or event["type"] in ("response.completed", "response.incomplete"):
                    event["timings"] = chunk["timings"]
        return out

    def progress(self, progress: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.event("response.in_progress", response=self.envelope("in_progress"), prompt_progress=progress)]

    def start(self, prompt_tokens: int) -> list[dict[str, Any]]:
        return [self.event("response.created", response=self.envelope("in_progress")),
                self.event("response.in_progress", response=self.envelope("in_progress"))]

    def begin(self, kind: str) -> list[dict[str, Any]]:
        out = self.close()
        self.open, self.text = (_message_item(None, "in_progress") if kind == "message"
                                else _reasoning_item(None, "in_progress")), ""
        part = _text_part("") if kind == "message" else {"type": "reasoning_text", "text": ""}
        return out + [self.event("response.output_item.added", output_index=len(self.items), item=self.open),
                      self.event("response.content_part.added", item_id=self.open["id"], output_index=len(self.items),
                                 content_index=0, part=part)]

    def write(self, kind: str, text: str) -> list[dict[str, Any]]:
        out = self.begin(kind) if self.open is None or self.open["type"] != kind else []
        self.text += text
        kind_event = "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        extra = {"logprobs": []} if kind == "message" else {}
        return out + [self.event(kind_event, item_id=self.open["id"], output_index=len(self.items), content_index=0,
                                 delta=text, **extra)]

    def close(self) -> list[dict[str, Any]]:
        if self.open is None:
            return []
        item, text, index = self.open, self.text, len(self.items)
        if item["type"] == "message":
            final = _message_item(text, _status(self.finish), item["id"])
            done = self.event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                              text=text, logprobs=[])
        else:
            self.reasoning += text
            final = _reasoning_item(text, item_id=item["id"])
            done = self.event("response.reasoning_text.done", item_id=item["id"], output_index=index, content_index=0,
                              text=text)
        self.open = None
        self.items.append(final)
        return [done, self.event("response.content_part.done", item_id=item["id"], output_index=index,
                                 content_index=0, part=final["content"][0]),
                self.event("response.output_item.done", output_index=index, item=final)]

    def tool_call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        index, item = len(self.items), _call_item(call, "in_progress", "")
        final = {**item, "arguments": call["function"]["arguments"], "status": "completed"}
        self.items.append(final)
        return [self.event("response.output_item.added", output_index=index, item=item),
                self.event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                           delta=final["arguments"]),
                self.event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                           name=final["name"], arguments=final["arguments"]),
                self.event("response.output_item.done", output_index=index, item=final)]

    def end(self, usage: dict[str, int]) -> list[dict[str, Any]]:
        out = self.close()
        if not any(item["type"] in ("message", "function_call") for item in self.items):
            out += self.begin("message") + self.close()  # an empty answer is still a message, as unstreamed
        status = _status(self.finish)
        totals = _usage(self.service, usage["prompt_tokens"], usage["completion_tokens"], self.cached, self.reasoning)
        return out + [self.event(f"response.{status}", response=self.envelope(status, totals))]

    def failed(self, exc: RequestError) -> list[dict[str, Any]]:
        code = exc.code or ("server_error" if exc.status >= 500 else "invalid_request")
        response = {**self.envelope("failed"), "error": {"code": code, "message": exc.message}}
        return [self.event("error", code=code, message=exc.message, param=exc.param),
                self.event("response.failed", response=response)]


async def stream_response(service: ServedModel, body: ResponsesRequest, chat: ChatRequest) -> AsyncIterator[dict]:
    events = _Events(service, body)
    chunks = stream_chat(service, chat, details=True)
    try:
        async for chunk in chunks:
            for event in events.feed(chunk):
                yield event
    except RequestError as exc:
        if not events.sequence:  # nothing sent yet: still a plain HTTP error
            raise
        for event in events.failed(exc):
            yield event
    finally:
        await chunks.aclose()


def router(pool: ModelPool) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/responses", summary="OpenAI Responses (stateless)", tags=["OpenAI"])
    @api.post("/responses", include_in_schema=False)
    async def responses(body: ResponsesRequest) -> Response:
        service = await pool.pick(body.model)
        chat = chat_request(body)
        if body.stream:
            return sse(*await started(stream_response(service, body, chat)), done_marker=False, named=True)
        return JSONResponse(await create_response(service, body, chat))

    @api.post("/v1/responses/input_tokens", summary="the input tokens a Responses request takes", tags=["OpenAI"])
    @api.post("/responses/input_tokens", include_in_schema=False)
    async def input_tokens(body: ResponsesRequest) -> dict[str, Any]:
        service = await pool.pick(body.model)
        plan = await service.plan_chat(chat_request(body), check_room=False)
        return {"object": "response.input_tokens", "input_tokens": len(plan.prompt_tokens)}

    return api
