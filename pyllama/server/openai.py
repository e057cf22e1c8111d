"""OpenAI's API: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``.

Thin routes: a chat request goes down the one chat path (server/chat_generation.py), a
completion request becomes engine jobs (server/completion_jobs.py), and the engine's events
come back as OpenAI's ``chat.completion`` / ``text_completion`` objects (or their chunks).
The bodies are schemas/openai.py's.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..enums import PoolingType
from ..text_completion import logprobs_dict
from .chat_generation import complete_chat, stream_chat
from .completion_jobs import Choices, completion_prompts, completion_usage, prepare, prompts_of
from .errors import RequestError
from .schemas.openai import ChatRequest, CompletionRequest, EmbeddingRequest
from .model_pool import ModelPool
from .sse import prepend, sse, started


def router(pool: ModelPool) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/chat/completions", summary="OpenAI chat completion", tags=["OpenAI"])
    @api.post("/chat/completions", include_in_schema=False)
    async def chat_completions(body: ChatRequest) -> Response:
        service = await pool.pick(body.model)
        if body.stream:
            return sse(*await started(stream_chat(service, body)))
        return JSONResponse(await complete_chat(service, body))

    @api.post("/v1/completions", summary="OpenAI text completion", tags=["OpenAI"])
    async def completions(body: CompletionRequest) -> Response:
        service = await pool.pick(body.model)
        requests, jobs = await prepare(service, body, completion_prompts(service, body), body.logprobs)
        header = {"id": f"cmpl-{uuid.uuid4()}", "object": "text_completion", "created": int(time.time()),
                  "model": service.name}
        echo = [r if body.echo and isinstance(r, str) else "" for r in prompts_of(body.prompt)]
        count = len(requests) * body.n
        if body.stream:
            async def chunks() -> AsyncIterator[dict[str, Any]]:
                offsets, choices = [0] * count, Choices(count)
                events = service.run(jobs)
                first = await events.__anext__()  # submitted: a full queue is still an HTTP error
                for index in range(count):
                    if echo[index // body.n]:
                        yield {**header, "choices": [{"index": index, "text": echo[index // body.n],
                                                      "logprobs": None, "finish_reason": None}]}
                async for index, event in prepend(first, events):
                    choices.add(index, event)
                    logprobs = logprobs_dict(event.tokens, offsets[index]) if body.logprobs is not None else None
                    offsets[index] += sum(len(t.text) for t in event.tokens)
                    if event.text or event.tokens or event.finish_reason:
                        yield {**header, "choices": [{"index": index, "text": event.text, "logprobs": logprobs,
                                                      "finish_reason": event.finish_reason}]}
                if body.stream_options is not None and body.stream_options.include_usage:
                    yield {**header, "choices": [], "usage": completion_usage(requests, choices.generated)}
            return sse(*await started(chunks()))
        choices = Choices(count)
        async for index, event in service.run(jobs, live=False):
            choices.add(index, event)
        return JSONResponse({**header, "choices": [
            {"index": i, "text": echo[i // body.n] + choices.text(i), "finish_reason": choices.last[i].finish_reason,
             "logprobs": logprobs_dict(choices.tokens[i]) if body.logprobs is not None else None}
            for i in range(count)], "usage": completion_usage(requests, choices.generated)})

    @api.post("/v1/embeddings", tags=["OpenAI"])
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        """OpenAI's embeddings: one pooled vector per input."""
        service = await pool.pick(body.model)
        if service.embedder is not None and service.embedder.pooling_type == PoolingType.NONE:
            chosen = "this server has --pooling none" if service.settings.pooling else \
                "this model's default pooling is none (a generative model's)"
            raise RequestError(400, f"/v1/embeddings needs pooled embeddings, and {chosen}: start the server with "
                                    "--pooling mean (or cls, last), or use /embeddings for a vector per token",
                               code="pooling_none")
        vectors, count = await run_in_threadpool(service.embed, body.input, body.embd_normalize)
        data = []
        for i, vector in enumerate(vectors):
            if body.dimensions is not None:
                vector = vector[: body.dimensions]
            if body.encoding_format == "base64":
                vector = base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode()
            data.append({"object": "embedding", "embedding": vector, "index": i})
        return {"object": "list", "model": service.name, "data": data,
                "usage": {"prompt_tokens": count, "total_tokens": count}}

    @api.get("/v1/models", tags=["OpenAI"])
    @api.get("/models", include_in_schema=False)
    async def models(reload: bool = False) -> dict[str, Any]:
        """Every model the server serves, loaded or not, with llama-server's router ``status``;
        ``?reload=1`` reads --models-dir and --models-preset again first."""
        if reload:
            try:
                await pool.refresh()
            except ValueError as exc:  # the files as they are now are wrong: nothing changes
                raise RequestError(500, f"the models could not be read again: {exc}") from None
        data = []
        for p in pool.all:
            if p.settings.hidden:
                continue
            shown = {"id": p.name, "object": "model", "owned_by": "pyllama", "created": p.settings.started,
                     "aliases": [p.name, *p.settings.aliases], "tags": list(p.settings.tags),
                     "path": p.settings.model, "status": pool.status(p)}
            if p.settings.source:  # router mode: where it was found; a cached one can be deleted
                shown.update(source=p.settings.source, can_remove=p.settings.source == "cache")
            if p.meta is not None:  # known once it has been loaded
                shown["meta"] = p.meta
            data.append(shown)
        data += [{"id": model_id, "object": "model", "owned_by": "pyllama", "aliases": [model_id], "tags": [],
                  "status": {"value": "downloading"}, "source": "cache", "can_remove": True}
                 for model_id in pool.downloads]
        return {"object": "list", "data": data}

    return api
