"""The OpenAI-compatible HTTP server: routes, validation, auth, SSE streaming, metrics.

Generation runs on the continuous-batching Engine; this module only turns HTTP requests
into engine jobs and engine events back into OpenAI-shaped JSON. Every bad request gets an
OpenAI-style error body with a 4xx status; nothing here reads files named by a request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections.abc import AsyncIterator, Mapping
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..generation.core import _logprobs_dict
from ..chat.completion import ChatChunker, ChatPlan, chat_header, chat_response, plan_chat
from ..errors import LlamaError
from ..llama import Llama
from ..model import Model
from ..generation.params import SamplingParams
from .engine import Engine, Event, Job, QueueFull
from .settings import Settings

SAMPLING_FIELDS = {"temperature", "top_p", "top_k", "min_p", "typical_p", "repeat_penalty", "frequency_penalty",
                   "presence_penalty", "mirostat_mode", "mirostat_tau", "mirostat_eta", "seed", "logit_bias"}


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    kind = {401: "authentication_error", 404: "invalid_request_error", 503: "server_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


@dataclasses.dataclass
class State:
    settings: Settings
    llm: Llama  # vocabulary and chat template (vocab_only)
    engine: Engine
    embedder: Llama | None
    embed_lock: threading.Lock


def _number(body: Mapping[str, Any], name: str, kind: type, default: Any) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RequestError(400, f"'{name}' must be a{'n integer' if kind is int else ' number'}", name)
    return value


def sampling_params(body: Mapping[str, Any], n_vocab: int) -> SamplingParams:
    unknown_type = [k for k in SAMPLING_FIELDS - {"logit_bias", "seed"} if k in body and body[k] is not None and
                    (isinstance(body[k], bool) or not isinstance(body[k], (int, float)))]
    if unknown_type:
        raise RequestError(400, f"'{unknown_type[0]}' must be a number", unknown_type[0])
    bias = body.get("logit_bias") or None
    if bias is not None:
        try:
            bias = {int(k): float(v) for k, v in dict(bias).items()}
        except (TypeError, ValueError):
            raise RequestError(400, "logit_bias maps token ids to numbers", "logit_bias") from None
        if any(not 0 <= k < n_vocab for k in bias):
            raise RequestError(400, f"logit_bias token ids must be in 0..{n_vocab - 1}", "logit_bias")
    fields = {k: body[k] for k in SAMPLING_FIELDS - {"logit_bias"} if body.get(k) is not None}
    if "top_k" in fields:
        fields["top_k"] = int(fields["top_k"])
    if "mirostat_mode" in fields:
        fields["mirostat_mode"] = int(fields["mirostat_mode"])
    if "seed" in fields and not isinstance(fields["seed"], int):
        raise RequestError(400, "'seed' must be an integer", "seed")
    try:
        return SamplingParams(logit_bias=bias, **fields)
    except ValueError as exc:
        raise RequestError(400, str(exc)) from exc


def create_app(settings: Settings | list[Settings]) -> FastAPI:
    """The app serving one model, or several (``--config``; requests pick one by ``model``)."""
    every = settings if isinstance(settings, list) else [settings]
    settings = every[0]  # server-wide options (keys, ports) come from the first entry
    app = FastAPI(title="pyllama", version="1", description="OpenAI-compatible API over llama.cpp")
    states: dict[str, State] = {}
    for entry in every:
        states[entry.model_alias] = states[entry.model_id] = _load(entry)
    default = states[settings.model_alias]
    app.state.pyllama = states

    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        if settings.api_keys and request.url.path not in ("/", "/health", "/docs", "/openapi.json", "/favicon.ico"):
            header = request.headers.get("authorization", "")
            key = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
            if key not in settings.api_keys:
                return error_response(401, "a valid API key is required (Authorization: Bearer <key>)",
                                      code="invalid_api_key")
        return await call_next(request)

    @app.on_event("shutdown")
    async def shutdown() -> None:
        for state in {id(s): s for s in states.values()}.values():
            state.engine.close()

    async def body_of(request: Request) -> tuple[dict[str, Any], State]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RequestError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model not in states:
            names = ", ".join(f"'{e.model_alias}'" for e in every)
            raise RequestError(404, f"the model '{model}' does not exist; this server has {names}", "model",
                               "model_not_found")
        return body, states[model] if model is not None else default

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page() -> HTMLResponse:
        return HTMLResponse(resources.files("pyllama.server").joinpath("static/index.html").read_text("utf-8"))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": e.model_alias, "object": "model", "owned_by": "pyllama",
                                            "created": e.started} for e in every]}

    @app.get("/props")
    async def props() -> dict[str, Any]:
        state = default
        return {"model": settings.model_alias, "n_ctx": state.engine.n_ctx, "n_parallel": len(state.engine.slots),
                "chat_template": state.llm.model.chat_template() or "", "embedding": state.embedder is not None}

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        body, state = await body_of(request)
        content = body.get("content")
        if not isinstance(content, str):
            raise RequestError(400, "'content' must be a string", "content")
        return {"tokens": state.llm.tokenize(content, add_bos=bool(body.get("add_special", False)), special=True)}

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict[str, Any]:
        body, state = await body_of(request)
        tokens = body.get("tokens")
        n_vocab = state.llm.n_vocab()
        if not isinstance(tokens, list) or not all(isinstance(t, int) and 0 <= t < n_vocab for t in tokens):
            raise RequestError(400, f"'tokens' must be a list of token ids in 0..{n_vocab - 1}", "tokens")
        return {"content": state.llm.detokenize(tokens).decode("utf-8", "replace")}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        series = [("pyllama_requests_total", "counter", "Generation requests accepted", lambda s: s.stats.requests),
                  ("pyllama_prompt_tokens_total", "counter", "Prompt tokens evaluated", lambda s: s.stats.prompt_tokens),
                  ("pyllama_tokens_generated_total", "counter", "Tokens generated", lambda s: s.stats.generated_tokens),
                  ("pyllama_tokens_per_second", "gauge", "Generated tokens per busy second",
                   lambda s: s.stats.generated_tokens / s.stats.busy_seconds if s.stats.busy_seconds else 0.0),
                  ("pyllama_queue_depth", "gauge", "Requests waiting for a slot", lambda s: s.queue_depth),
                  ("pyllama_slots_busy", "gauge", "Slots generating", lambda s: s.busy_slots),
                  ("pyllama_slots_total", "gauge", "Slots", lambda s: len(s.slots))]
        lines = []
        for name, kind, help_text, value in series:
            lines.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            for entry in every:
                engine = states[entry.model_alias].engine
                label = f'{{model="{entry.model_alias}"}}' if len(every) > 1 else ""
                lines.append(f"{name}{label} {value(engine)}\n")
        return "".join(lines)

    def job_for(state: State, body: dict[str, Any], prompt_tokens: list[int], stops: list[str], grammar: str | None = None,
                triggers: tuple[str, ...] = (), logprobs: int | None = None, max_tokens_field: str = "max_tokens"):
        max_tokens = body.get(max_tokens_field, body.get("max_completion_tokens"))
        room = state.engine.n_ctx - len(prompt_tokens)
        if room <= 0:
            raise RequestError(400, f"the prompt has {len(prompt_tokens)} tokens but the context holds "
                               f"{state.engine.n_ctx}", "messages" if max_tokens_field == "max_tokens" else "prompt",
                               "context_length_exceeded")
        if max_tokens is None or max_tokens == -1:
            max_tokens = room
        elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError(400, f"'{max_tokens_field}' must be a positive integer", max_tokens_field)
        elif max_tokens > room:
            raise RequestError(400, f"'{max_tokens_field}' is {max_tokens} but only {room} tokens are left after the "
                               f"{len(prompt_tokens)}-token prompt in a {state.engine.n_ctx}-token context",
                               max_tokens_field, "context_length_exceeded")
        if body.get("n", 1) != 1:
            raise RequestError(400, "only n=1 is supported", "n")
        params = dataclasses.replace(sampling_params(body, state.llm.n_vocab()), grammar=grammar,
                                     grammar_triggers=triggers)
        if grammar:
            try:  # a grammar llama.cpp rejects must be a 400, not a failure inside the engine
                params.sampler(state.llm.model, 0).close()
            except ValueError as exc:
                raise RequestError(400, f"invalid grammar: {exc}", "grammar") from exc
        return lambda emit: Job(prompt_tokens, params, max_tokens, stops, emit, logprobs,
                                seed=params.seed if params.seed is not None else time.time_ns() & 0xFFFFFFFF)

    async def run(state: State, make_job) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        job = make_job(lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
        try:
            state.engine.submit(job)
        except QueueFull as exc:
            raise RequestError(503, f"the server is busy ({exc}); retry shortly", headers={"Retry-After": "1"}) from exc
        except ValueError as exc:
            raise RequestError(400, str(exc)) from exc
        try:
            while True:
                event = await events.get()
                if event.error:
                    raise RequestError(500, f"generation failed: {event.error}")
                yield event
                if event.finish_reason is not None:
                    return
        finally:
            job.cancelled.set()  # a client that went away frees its slot at the next step

    async def collected(state: State, make_job) -> tuple[str, str, dict[str, int], list]:
        texts, infos = [], []
        async for event in run(state, make_job):
            texts.append(event.text)
            infos += event.tokens
            if event.finish_reason is not None:
                return "".join(texts), event.finish_reason, event.usage or {}, infos
        raise RequestError(500, "generation ended without a result")

    def sse(chunks: AsyncIterator[Any], first: Any = None) -> StreamingResponse:
        async def body() -> AsyncIterator[str]:
            try:
                if first is not None:
                    yield f"data: {json.dumps(first, ensure_ascii=False)}\n\n"
                async for chunk in chunks:
                    yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
            except RequestError as exc:
                yield f"data: {json.dumps({'error': {'message': exc.message, 'type': 'server_error'}})}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def started(stream: AsyncIterator[Any]) -> tuple[Any, AsyncIterator[Any]]:
        """Take the first item before the response starts, so request errors stay HTTP errors."""
        try:
            return await stream.__anext__(), stream
        except StopAsyncIteration:
            return None, stream

    def prompt_tokens_of(state: State, prompt: Any) -> list[int]:
        if isinstance(prompt, str):
            return state.llm.tokenize(prompt, add_bos=True, special=True)
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            return state.llm.tokenize(prompt[0], add_bos=True, special=True)
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            if not all(0 <= t < state.llm.n_vocab() for t in prompt):
                raise RequestError(400, f"prompt token ids must be in 0..{state.llm.n_vocab() - 1}", "prompt")
            return list(prompt)
        raise RequestError(400, "'prompt' must be a string or a list of token ids", "prompt")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body, state = await body_of(request)
        tokens = prompt_tokens_of(state, body.get("prompt"))
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if not all(isinstance(s, str) for s in stops):
            raise RequestError(400, "'stop' must be a string or a list of strings", "stop")
        logprobs = body.get("logprobs")
        make_job = job_for(state, body, tokens, stops, logprobs=logprobs if isinstance(logprobs, int) else None)
        header = {"id": f"cmpl-{time.time_ns()}", "object": "text_completion", "created": int(time.time()),
                  "model": state.settings.model_alias}
        echo = bool(body.get("echo")) and isinstance(body.get("prompt"), str)
        if body.get("stream"):
            async def chunks() -> AsyncIterator[dict[str, Any]]:
                offset = 0
                if echo:
                    yield {**header, "choices": [{"index": 0, "text": body["prompt"], "logprobs": None,
                                                  "finish_reason": None}]}
                async for event in run(state, make_job):
                    lp = _logprobs_dict(event.tokens, offset) if logprobs is not None else None
                    offset += sum(len(t.text) for t in event.tokens)
                    yield {**header, "choices": [{"index": 0, "text": event.text, "logprobs": lp,
                                                  "finish_reason": event.finish_reason}]}
            first, rest = await started(chunks())
            return sse(rest, first)
        text, finish, usage, infos = await collected(state, make_job)
        return JSONResponse({**header, "choices": [{"index": 0, "text": (body["prompt"] if echo else "") + text,
                                                    "logprobs": _logprobs_dict(infos) if logprobs is not None else None,
                                                    "finish_reason": finish}], "usage": usage})

    @app.post("/completion")
    async def llama_completion(request: Request) -> Response:
        """llama.cpp's native route: prompt, n_predict, stream."""
        body, state = await body_of(request)
        tokens = prompt_tokens_of(state, body.get("prompt"))
        stop = body.get("stop")
        make_job = job_for(state, {**body, "max_tokens": body.get("n_predict", -1)}, tokens,
                           [stop] if isinstance(stop, str) else list(stop or []))
        if body.get("stream"):
            async def chunks() -> AsyncIterator[dict[str, Any]]:
                async for event in run(state, make_job):
                    yield {"content": event.text, "stop": event.finish_reason is not None,
                           **({"tokens_predicted": event.usage["completion_tokens"],
                               "tokens_evaluated": event.usage["prompt_tokens"]} if event.usage else {})}
            first, rest = await started(chunks())
            return sse(rest, first)
        text, finish, usage, _ = await collected(state, make_job)
        return JSONResponse({"content": text, "stop": True, "stop_type": "eos" if finish == "stop" else "limit",
                             "tokens_predicted": usage["completion_tokens"], "tokens_evaluated": usage["prompt_tokens"],
                             "model": state.settings.model_alias})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body, state = await body_of(request)
        try:
            plan: ChatPlan = await run_in_threadpool(
                plan_chat, state.llm, body.get("messages"), tools=body.get("tools"),
                tool_choice=body.get("tool_choice"), functions=body.get("functions"),
                function_call=body.get("function_call"), response_format=body.get("response_format"),
                stop=body.get("stop"), grammar=body.get("grammar"), reasoning=bool(body.get("reasoning")))
        except (ValueError, TypeError, LlamaError) as exc:
            raise RequestError(400, str(exc)) from exc
        top = body.get("top_logprobs") if body.get("logprobs") else None
        make_job = job_for(state, body, plan.prompt_tokens, plan.stops, plan.grammar, plan.grammar_triggers,
                           logprobs=(top or 0) if body.get("logprobs") else None)
        header = chat_header(state.settings.model_alias)

        async def completion_chunks() -> AsyncIterator[dict[str, Any]]:
            offset = 0
            async for event in run(state, make_job):
                lp = _logprobs_dict(event.tokens, offset) if body.get("logprobs") else None
                offset += sum(len(t.text) for t in event.tokens)
                yield {"choices": [{"text": event.text, "logprobs": lp, "finish_reason": event.finish_reason}],
                       "usage": event.usage}

        if body.get("stream"):
            async def chunks() -> AsyncIterator[dict[str, Any]]:
                chunker, parts = ChatChunker(header, plan), completion_chunks()
                first_part = await parts.__anext__()  # submitted: a busy or bad request is still an HTTP error
                yield chunker.start()
                for out in chunker.feed(first_part):
                    yield out
                async for part in parts:
                    for out in chunker.feed(part):
                        yield out
            first, rest = await started(chunks())
            return sse(rest, first)
        text, finish, usage, infos = await collected(state, make_job)
        completion = {"choices": [{"text": text, "finish_reason": finish,
                                   "logprobs": _logprobs_dict(infos) if body.get("logprobs") else None}],
                      "usage": usage}
        return JSONResponse(chat_response(plan, header, completion))

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        body, state = await body_of(request)
        if state.embedder is None:
            raise RequestError(400, "this server was started without --embedding", code="embeddings_disabled")
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise RequestError(400, "'input' must be a string or a non-empty list of strings", "input")

        def embed() -> dict[str, Any]:
            with state.embed_lock:
                return state.embedder.create_embedding(texts, model=state.settings.model_alias)

        try:
            return JSONResponse(await run_in_threadpool(embed))
        except LlamaError as exc:
            raise RequestError(400, str(exc), "input") from exc

    return app


def _load(settings: Settings) -> State:
    llm = Llama(settings.model, vocab_only=True, chat_format=settings.chat_format)
    model = Model(settings.model, n_gpu_layers=settings.n_gpu_layers, use_mlock=settings.use_mlock,
                  use_mmap=settings.use_mmap)
    engine = Engine(model, n_ctx=settings.n_ctx, n_parallel=settings.n_parallel, n_batch=settings.n_batch,
                    n_threads=settings.n_threads, n_threads_batch=settings.n_threads_batch,
                    max_queue=settings.max_queue, flash_attn=settings.flash_attn)
    embedder = None
    if settings.embedding:
        embedder = Llama(settings.model, embedding=True, n_ctx=settings.n_ctx, n_batch=settings.n_ctx,
                         n_ubatch=settings.n_ctx, n_gpu_layers=settings.n_gpu_layers, n_threads=settings.n_threads)
    return State(settings, llm, engine, embedder, threading.Lock())
