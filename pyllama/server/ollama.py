"""Ollama's HTTP API (``/api/*``) on the one chat path, for the clients that speak only Ollama.

``/api/chat`` and ``/api/generate`` become a :class:`ChatRequest` (messages, images as data-URL
parts, tools, ``format`` as a response format, ``options`` as sampling fields, ``think`` as
reasoning) and run through :func:`complete_chat` / :func:`stream_chat`, as the Anthropic and
Responses routes do; ``raw`` and ``suffix`` prompts skip the template and take the completion
route's jobs. Replies are Ollama's: NDJSON lines by default (``stream: false``: one object),
``done``/``done_reason``, token counts and durations in nanoseconds. ``/api/show`` describes a
model from its GGUF header and says only what it can do here. Errors have Ollama's shape,
``{"error": "..."}`` (server/errors.py picks it by path). The routes that manage Ollama's model
store answer that this server serves the GGUF files it was started with.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from .._version import __version__
from ..enums import PoolingType
from ..multimodal import default_marker
from .chat_generation import ChunkEvents, complete_chat, stream_chat, translated
from .completion_jobs import completion_prompts, prepare
from .errors import RequestError, validation_message
from .schemas.common import GenerationFields, JSONPrompt
from .schemas.ollama import (ChatRequest, EmbeddingsRequest, EmbedRequest, Format, GenerateRequest, Message,
                             Options, ShowRequest, keep_alive_seconds)
from .schemas.openai import ChatRequest as OpenAIChat
from .schemas.openai import CompletionRequest
from .model_pool import ModelPool, PooledModel
from .ollama_models import (capabilities, details, expires_at, file_stamp, has_thinking, has_tools, iso, listing,
                            model_info, n_params, profile, size_vram)
from .served_model import ServedModel
from .sse import started

# The Ollama API these routes follow (its docs/api.md as of this version); clients such as VS
# Code's Copilot check /api/version against a minimum before they use a server.
OLLAMA_VERSION = "0.33.0"
STORE = ("pyllama serves the local GGUF files it was started with (--model, --config, --models-dir); it has no "
         "model store to {what}. Start the server with the file instead.")

# options with the chat path's name; the llama.cpp sampling fields that pass through from options
_EXTRAS = frozenset(GenerationFields.model_fields) - {
    "model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n_predict", "n", "response_format",
    "user", "id_slot", "return_progress", "timings_per_token", "verbose", "n_keep"}
_SAME = ("seed", "top_k", "top_p", "min_p", "typical_p", "repeat_last_n", "temperature", "repeat_penalty",
         "presence_penalty", "frequency_penalty", "mirostat", "mirostat_tau", "mirostat_eta", "stop")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _validated(model: type, fields: dict[str, Any]) -> Any:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        message, param = validation_message(exc.errors())
        raise RequestError(400, message, param, "invalid_value") from exc


# --- models: names, what they can do, what their files say ----------------------------------------
def _entry(pool: ModelPool, name: str) -> PooledModel:
    """The declared model a request names; Ollama's ``name:latest`` is the name without a tag."""
    try:
        return pool.entry(name)
    except RequestError as exc:
        if exc.status != 404:
            raise
        if name.endswith(":latest"):
            return _entry(pool, name[: -len(":latest")])
        raise RequestError(404, f"model '{name}' not found") from None


async def _pick(pool: ModelPool, name: str) -> tuple[PooledModel, ServedModel, int]:
    """The model, loaded (held by this request until its reply is sent), and the nanoseconds its
    loading took (0 when it was loaded already)."""
    pooled = _entry(pool, name)
    loaded, start = pooled.status == "loaded", time.perf_counter_ns()
    service = await pool.pick(pooled.name)
    return pooled, service, 0 if loaded else time.perf_counter_ns() - start


def _keep_alive(pool: ModelPool, pooled: PooledModel, keep_alive: Any) -> None:
    """A request's keep_alive: how long the model stays loaded once its requests are done (0:
    unloaded then; negative: until unloaded for room or on request). A request without one sets
    the model's default back (the server's --sleep-idle-seconds), as Ollama's requests do."""
    seconds = keep_alive_seconds(keep_alive)
    if seconds is None:
        seconds = pooled.settings.sleep_idle_seconds
    pool.keep_alive(pooled, None if seconds < 0 else seconds)


# --- requests -> the chat path ---------------------------------------------------------------
def _sampling(options: Options | None, format: Format) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if options is not None:
        fields.update({k: v for k, v in (options.model_extra or {}).items() if k in _EXTRAS})
        fields.update({name: getattr(options, name) for name in _SAME if getattr(options, name) is not None})
        if options.num_predict is not None:
            fields["n_predict"] = -1 if options.num_predict < 0 else options.num_predict
        if options.num_keep is not None:
            fields["n_keep"] = options.num_keep
    if format == "json":
        fields["response_format"] = {"type": "json_object"}
    elif isinstance(format, dict):
        fields["response_format"] = {"type": "json_schema", "json_schema": {"schema": format}}
    return fields


def _thinking(service: ServedModel, name: str, think: Any) -> dict[str, Any]:
    """``think``: as Ollama, on by default for a model that thinks, and a 400 for one that does not."""
    if not has_thinking(service.template):
        if think is not None and think is not False:
            raise RequestError(400, f'"{name}" does not support thinking', "think")
        return {}
    on = think is not False
    kwargs: dict[str, Any] = {"enable_thinking": on}
    if isinstance(think, str):  # a level: templates that take one read reasoning_effort (gpt-oss)
        kwargs["reasoning_effort"] = "high" if think == "max" else think
    return {"reasoning": on, "chat_template_kwargs": kwargs}


def _image_part(image: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": f"data:;base64,{image}"}}


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Ollama's messages as the chat path's: images as parts before the text (where Ollama puts
    them), tool calls with ids, each tool result answering the earliest open call of its tool."""
    out: list[dict[str, Any]] = []
    open_calls: list[tuple[str, str]] = []  # (id, tool name) of calls not yet answered
    for i, message in enumerate(messages):
        turn: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.images:
            turn["content"] = [_image_part(image) for image in message.images] + \
                ([{"type": "text", "text": message.content}] if message.content else [])
        if message.thinking:
            turn["reasoning_content"] = message.thinking
        if message.tool_calls:
            calls = []
            for j, call in enumerate(message.tool_calls):
                call_id = call.id or f"call_{i}_{j}"
                calls.append({"id": call_id, "type": "function", "function": {
                    "name": call.function.name, "arguments": json.dumps(call.function.arguments, ensure_ascii=False)}})
                open_calls.append((call_id, call.function.name))
            turn["tool_calls"] = calls
        if message.role == "tool":
            answered = next((k for k, (call_id, tool) in enumerate(open_calls)
                             if call_id == message.tool_call_id or tool == message.tool_name),
                            0 if open_calls else None)
            call_id = message.tool_call_id or (open_calls[answered][0] if answered is not None else f"call_{i}")
            if answered is not None:
                open_calls.pop(answered)
            turn["tool_call_id"] = call_id
            if message.tool_name:
                turn["name"] = message.tool_name
        out.append(turn)
    return out


def _chat_request(service: ServedModel, name: str, messages: list[dict[str, Any]], body: Any,
                  tools: list[dict[str, Any]] | None = None) -> OpenAIChat:
    if tools and not has_tools(service.template):
        raise RequestError(400, f"{name} does not support tools", "tools")
    fields = {"model": name, "messages": messages, "tools": tools or None, "stream": body.stream,
              "stream_options": {"include_usage": True} if body.stream else None,
              "logprobs": body.logprobs, "top_logprobs": body.top_logprobs,
              **_sampling(body.options, body.format), **_thinking(service, name, body.think)}
    return translated({k: v for k, v in fields.items() if v is not None})


# --- the chat path's results -> Ollama's --------------------------------------------------------
def _tool_call(call: dict[str, Any], index: int) -> dict[str, Any]:
    arguments = json.loads(call["function"]["arguments"] or "{}")
    return {"id": call["id"], "function": {"index": index, "name": call["function"]["name"],
                                           "arguments": arguments if isinstance(arguments, dict) else {}}}


def _logprobs(openai: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    if not openai or not openai.get("content"):
        return None
    return [{"token": e["token"], "logprob": e["logprob"], "bytes": e["bytes"],
             "top_logprobs": [{"token": t["token"], "logprob": t["logprob"], "bytes": t["bytes"]}
                              for t in e["top_logprobs"]]} for e in openai["content"]]


class _Clock:
    """A request's durations, in Ollama's nanoseconds."""

    def __init__(self, load_ns: int = 0) -> None:
        self.start, self.load_ns = time.perf_counter_ns(), load_ns

    def metrics(self, prompt_tokens: int, generated: int, timings: dict[str, float] | None) -> dict[str, int]:
        timings = timings or {}
        return {"total_duration": time.perf_counter_ns() - self.start, "load_duration": self.load_ns,
                "prompt_eval_count": prompt_tokens, "prompt_eval_duration": int(timings.get("prompt_ms", 0) * 1e6),
                "eval_count": generated, "eval_duration": int(timings.get("predicted_ms", 0) * 1e6)}


def _done_reason(finish: str | None) -> str:
    return "length" if finish == "length" else "stop"  # a tool call ends a turn: Ollama says stop


class _Stream(ChunkEvents):
    """stream_chat's chunks -> Ollama's lines: each piece of text (or thinking) as it comes, a tool
    call whole, then the last line with ``done``, the counts and the durations."""

    def __init__(self, name: str, clock: _Clock, chat: bool) -> None:
        super().__init__()
        self.name, self.clock, self.chat = name, clock, chat
        self.timings: dict[str, float] | None = None
        self.calls = 0
        self.logprobs: list[dict[str, Any]] | None = None

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if "choices" in chunk and not chunk["choices"]:
            self.timings = chunk.get("timings")
        elif chunk.get("choices"):  # held until a line goes out (text held back for a tool call has them too)
            self.logprobs = (self.logprobs or []) + (_logprobs(chunk["choices"][0].get("logprobs")) or []) or None
        return super().feed(chunk)

    def line(self, content: str = "", thinking: str | None = None, **more: Any) -> dict[str, Any]:
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking is not None:
                message["thinking"] = thinking
            message.update(more.pop("message", {}))
            line = {"model": self.name, "created_at": _now(), "message": message, **more}
        else:
            line = {"model": self.name, "created_at": _now(), "response": content, **more}
            if thinking is not None:
                line["thinking"] = thinking
        if self.logprobs and not more.get("done"):
            line["logprobs"], self.logprobs = self.logprobs, None
        return line

    def start(self, prompt_tokens: int) -> list[dict[str, Any]]:
        return []  # Ollama's first line is the first piece of the reply

    def write(self, kind: str, text: str) -> list[dict[str, Any]]:
        return [self.line(text) if kind == self.TEXT else self.line("", text)]

    def tool_call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls += 1
        return [self.line(message={"tool_calls": [_tool_call(call, self.calls - 1)]}, done=False)]

    def close(self) -> list[dict[str, Any]]:
        return []

    def end(self, usage: dict[str, int]) -> list[dict[str, Any]]:
        return [self.line(done=True, done_reason=_done_reason(self.finish),
                          **self.clock.metrics(usage["prompt_tokens"], usage["completion_tokens"], self.timings))]


async def _lines(events: _Stream, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    try:
        async for chunk in chunks:
            for line in events.feed(chunk):
                yield {**line, "done": line.get("done", False)}
    finally:
        await chunks.aclose()


def ndjson(first: Any, rest: AsyncIterator[Any]) -> StreamingResponse:
    """One JSON object a line (``application/x-ndjson``), as Ollama streams. Started only once its
    first line exists, so a request that fails before that is still a plain HTTP error; a failure
    after that ends the stream with an ``{"error": ...}`` line, which Ollama's clients raise."""
    async def body() -> AsyncIterator[str]:
        try:
            if first is not None:
                yield json.dumps(first, ensure_ascii=False) + "\n"
            async for line in rest:
                yield json.dumps(line, ensure_ascii=False) + "\n"
        except RequestError as exc:
            yield json.dumps({"error": exc.message}) + "\n"
        finally:
            await rest.aclose()
    return StreamingResponse(body(), media_type="application/x-ndjson", headers={"Cache-Control": "no-cache"})


async def _chat(service: ServedModel, name: str, chat: OpenAIChat, clock: _Clock, is_chat: bool) -> Response:
    if chat.stream:
        return ndjson(*await started(_lines(_Stream(name, clock, is_chat), stream_chat(service, chat, details=True))))
    result = await complete_chat(service, chat, details=True)
    choice = result["choices"][0]
    message = choice["message"]
    usage = result["usage"]
    out: dict[str, Any] = {"model": name, "created_at": _now()}
    if is_chat:
        reply: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
        if message.get("reasoning_content"):
            reply["thinking"] = message["reasoning_content"]
        if message.get("tool_calls"):
            reply["tool_calls"] = [_tool_call(call, i) for i, call in enumerate(message["tool_calls"])]
        out["message"] = reply
    else:
        out["response"] = message.get("content") or ""
        if message.get("reasoning_content"):
            out["thinking"] = message["reasoning_content"]
    logprobs = _logprobs(choice.get("logprobs"))
    if logprobs:
        out["logprobs"] = logprobs
    out.update(done=True, done_reason=_done_reason(choice["finish_reason"]),
               **clock.metrics(usage["prompt_tokens"], usage["completion_tokens"], result.get("timings")))
    return JSONResponse(out)


async def _raw(service: ServedModel, name: str, body: GenerateRequest, clock: _Clock) -> Response:
    """A prompt without the template (``raw``), or text around a gap (``suffix``): the completion
    route's jobs, on the same engine."""
    prompt: Any = body.prompt
    if body.images:
        prompt = {"prompt_string": default_marker() * len(body.images) + body.prompt,
                  "multimodal_data": body.images}
    fields = {"model": name, "prompt": prompt, "suffix": body.suffix, "stream": body.stream,
              **_sampling(body.options, body.format)}
    completion = _validated(CompletionRequest, {k: v for k, v in fields.items() if v is not None})
    if isinstance(completion.prompt, JSONPrompt) and completion.suffix is not None:
        raise RequestError(400, "'suffix' cannot be used with images", "suffix")
    requests, jobs = await prepare(service, completion, completion_prompts(service, completion), None)
    prompt_tokens = len(requests[0].prompt_tokens)

    async def lines() -> AsyncIterator[dict[str, Any]]:
        async for _, event in service.run(jobs, live=body.stream):
            if event.text:
                yield {"model": name, "created_at": _now(), "response": event.text, "done": False}
            if event.finish_reason is not None:
                yield {"model": name, "created_at": _now(), "response": "", "done": True,
                       "done_reason": _done_reason(event.finish_reason),
                       **clock.metrics(prompt_tokens, (event.usage or {}).get("completion_tokens", 0), event.timings)}

    if body.stream:
        return ndjson(*await started(lines()))
    text, last = [], {}
    async for line in lines():
        text.append(line["response"])
        last = line
    return JSONResponse({**last, "response": "".join(text)})


async def _load_or_unload(pool: ModelPool, name: str, keep_alive: Any, is_chat: bool) -> dict[str, Any]:
    """An empty request loads the model, or with keep_alive 0 unloads it (Ollama's way to ask)."""
    if keep_alive_seconds(keep_alive) == 0:
        pooled = _entry(pool, name)
        if pooled.status in ("loaded", "loading"):
            pool.unload(pooled.name)  # once no request holds it
        reason = "unload"
    else:
        pooled, _, _ = await _pick(pool, name)
        _keep_alive(pool, pooled, keep_alive)
        reason = "load"
    out: dict[str, Any] = {"model": name, "created_at": _now()}
    out.update({"message": {"role": "assistant", "content": ""}} if is_chat else {"response": ""})
    return {**out, "done": True, "done_reason": reason}


# --- routes ------------------------------------------------------------------------------------
def router(pool: ModelPool) -> APIRouter:
    api = APIRouter(tags=["Ollama"])

    @api.get("/api/version", summary="Ollama's API version these routes follow")
    @api.head("/api/version", include_in_schema=False)
    async def version() -> dict[str, str]:
        return {"version": OLLAMA_VERSION, "pyllama": __version__}

    @api.get("/api/tags", summary="the models this server serves, loaded or not")
    @api.head("/api/tags", include_in_schema=False)
    async def tags() -> dict[str, Any]:
        return {"models": await run_in_threadpool(lambda: [listing(p) for p in pool.all])}

    @api.get("/api/ps", summary="the models loaded now")
    async def ps() -> dict[str, Any]:
        def running() -> list[dict[str, Any]]:
            return [{**listing(p), "size": p.served.model.size, "expires_at": expires_at(p),
                     "size_vram": size_vram(p.served), "context_length": p.served.engine.n_ctx}
                    for p in pool.loaded() if p.served is not None]
        return {"models": await run_in_threadpool(running)}

    @api.post("/api/show", summary="a model's details, GGUF metadata, template and capabilities")
    async def show(body: ShowRequest) -> dict[str, Any]:
        name = body.model or body.name
        if not name:
            raise RequestError(400, "model is required", "model")
        pooled = _entry(pool, name)
        settings = pooled.settings

        def shown() -> dict[str, Any]:
            template, _ = profile(pooled)
            n_ctx = pooled.served.engine.n_ctx if pooled.served is not None else settings.n_ctx
            parameters = ([f"num_ctx {n_ctx}"] if n_ctx else []) + \
                [f"stop {json.dumps(stop, ensure_ascii=False)}" for stop in template.stop]
            if settings.temperature is not None:
                parameters.append(f"temperature {settings.temperature}")
            modelfile = ("# Modelfile of a model pyllama serves (its template is jinja, from the GGUF)\n"
                         f"FROM {settings.model}\n" + "".join(f"PARAMETER {p}\n" for p in parameters))
            info = model_info(settings.model, body.verbose)
            info.setdefault("general.parameter_count", n_params(file_stamp(settings.model)))
            out = {"modelfile": modelfile, "parameters": "\n".join(parameters), "template": template.source or "",
                   "details": details(settings), "model_info": info, "capabilities": capabilities(pooled),
                   "modified_at": iso(os.stat(settings.model).st_mtime)}
            if settings.mmproj:
                out["projector_info"] = model_info(settings.mmproj, body.verbose)
            return out

        return await run_in_threadpool(shown)

    @api.post("/api/chat", summary="Ollama chat (NDJSON stream by default)")
    async def chat(body: ChatRequest) -> Response:
        if not body.messages:
            return JSONResponse(await _load_or_unload(pool, body.model, body.keep_alive, True))
        clock = _Clock()
        pooled, service, clock.load_ns = await _pick(pool, body.model)
        _keep_alive(pool, pooled, body.keep_alive)  # applies once this request lets the model go
        chat_body = _chat_request(service, body.model, _messages(body.messages), body, body.tools)
        return await _chat(service, body.model, chat_body, clock, True)

    @api.post("/api/generate", summary="Ollama generate (NDJSON stream by default)")
    async def generate(body: GenerateRequest) -> Response:
        if body.raw and (body.template or body.system or body.context):
            raise RequestError(400, "raw mode does not support template, system, or context")
        if body.template:
            raise RequestError(400, "'template' is a Go template for Ollama's own engine; this server renders the "
                                    "model's jinja chat template: send the prompt you rendered with raw: true",
                               "template")
        if body.context:
            raise RequestError(400, "'context' (deprecated by Ollama) is not supported here: send the conversation "
                                    "to /api/chat as messages", "context")
        if not body.prompt and not body.images and body.suffix is None:
            return JSONResponse(await _load_or_unload(pool, body.model, body.keep_alive, False))
        clock = _Clock()
        pooled, service, clock.load_ns = await _pick(pool, body.model)
        _keep_alive(pool, pooled, body.keep_alive)
        if body.raw or body.suffix is not None:
            if body.think:
                raise RequestError(400, "'think' needs the chat template: it cannot be used with raw or suffix",
                                   "think")
            return await _raw(service, body.model, body, clock)
        system = [Message(role="system", content=body.system)] if body.system else []
        messages = _messages(system + [Message(role="user", content=body.prompt, images=body.images)])
        return await _chat(service, body.model, _chat_request(service, body.model, messages, body), clock, False)

    @api.post("/api/embed", summary="Ollama embeddings (normalized)")
    async def embed(body: EmbedRequest) -> dict[str, Any]:
        start = time.perf_counter_ns()
        pooled, service, load_ns = await _pick(pool, body.model)
        _keep_alive(pool, pooled, body.keep_alive)
        texts = [body.input] if isinstance(body.input, str) else body.input
        vectors, count = await run_in_threadpool(_embed, service, texts, body.truncate, 2)
        if body.dimensions is not None:
            vectors = [_normalized(v[: body.dimensions]) for v in vectors]
        return {"model": body.model, "embeddings": vectors, "total_duration": time.perf_counter_ns() - start,
                "load_duration": load_ns, "prompt_eval_count": count}

    @api.post("/api/embeddings", summary="Ollama's older embeddings route (one prompt, not normalized)")
    async def embeddings(body: EmbeddingsRequest) -> dict[str, Any]:
        pooled, service, _ = await _pick(pool, body.model)
        _keep_alive(pool, pooled, body.keep_alive)
        vectors, _ = await run_in_threadpool(_embed, service, [body.prompt], True, -1)
        return {"embedding": vectors[0]}

    def store(what: str) -> Callable[..., Any]:
        async def refuse(request: Request) -> Response:
            raise RequestError(501, STORE.format(what=what))
        return refuse

    for path, methods, what in (("/api/pull", ["POST"], "pull models from"),
                                ("/api/push", ["POST"], "push models to"),
                                ("/api/create", ["POST"], "create models in"),
                                ("/api/copy", ["POST"], "copy models in"),
                                ("/api/delete", ["DELETE"], "delete models from"),
                                ("/api/blobs/{digest}", ["POST", "HEAD"], "upload blobs to")):
        # not in /docs: a route that only ever refuses is not part of what this server offers
        api.add_api_route(path, store(what), methods=methods, include_in_schema=False)

    return api


def _embed(service: ServedModel, texts: list[str], truncate: bool, norm: float) -> tuple[list, int]:
    if service.embedder is not None and service.embedder.pooling_type == PoolingType.NONE:
        raise RequestError(400, "this server has no pooled embeddings (--pooling none, or a generative model's "
                                "default): start it with --pooling mean (or cls, last)")
    inputs: list[Any] = list(texts)
    if truncate and service.embedder is not None:  # Ollama cuts an input to the context; without truncate, a 400
        n_ctx = service.engine.n_ctx
        tokenized = [service.vocab.tokenize(text, add_special=True, parse_special=True) for text in texts]
        inputs = [tokens[:n_ctx] if len(tokens) > n_ctx else text for tokens, text in zip(tokenized, texts)]
    return service.embed(inputs, norm)


def _normalized(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector
