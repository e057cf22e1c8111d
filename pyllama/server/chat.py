"""OpenAI's ``/v1/chat/completions``: a :class:`ChatRequest` planned into a prompt and
constraints (pyllama.chat), one engine job per choice, and the text split back into content,
reasoning and tool calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..chat import ChatChunker, chat_header, chat_response
from ..generation.core import Event, Request, TokenInfo
from ..results import logprobs_dict
from .errors import RequestError
from .schemas import ChatRequest
from .services import Services
from .sse import prepend, sse, started


def _part(event: Event, logprobs: bool, offset: int = 0) -> dict[str, Any]:
    """An engine event as the ``text_completion`` chunk the chat shapers read."""
    return {"choices": [{"text": event.text, "finish_reason": event.finish_reason,
                         "logprobs": logprobs_dict(event.tokens, offset) if logprobs else None}],
            "usage": event.usage}


def router(services: Services) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/chat/completions", summary="OpenAI chat completion", tags=["OpenAI"])
    @api.post("/chat/completions", include_in_schema=False)
    async def chat_completions(body: ChatRequest) -> Response:
        service = services.pick(body.model)
        plan = await service.plan_chat(body)
        top = (body.top_logprobs or 0) if body.logprobs else None

        def build() -> Request:
            service.check_grammar(plan.grammar, plan.grammar_triggers)
            params = service.sampling(body, plan.grammar, plan.grammar_triggers)
            return Request(plan.prompt_tokens, params, None, plan.stops, top, body.ignore_eos)

        request = await run_in_threadpool(build)
        events = service.run(lambda emit: [service.job(request, body, lambda event, j=j: emit(j, event), index=j)
                                           for j in range(body.n)])
        header = chat_header(service.name)
        if body.stream:
            async def chunks() -> AsyncIterator[dict[str, Any]]:
                chunkers = [ChatChunker(header, plan, j) for j in range(body.n)]
                offsets, usage = [0] * body.n, {"prompt_tokens": len(request.prompt_tokens), "completion_tokens": 0}
                first = await events.__anext__()  # submitted: a full queue is still an HTTP error
                for chunker in chunkers:
                    yield chunker.start()
                async for index, event in prepend(first, events):
                    out = chunkers[index].feed(_part(event, body.logprobs, offsets[index]))
                    offsets[index] += sum(len(t.text) for t in event.tokens)
                    if event.finish_reason is not None:
                        usage["completion_tokens"] += (event.usage or {}).get("completion_tokens", 0)
                        if out:
                            out[-1]["timings"] = event.timings
                    for chunk in out:
                        yield chunk
                if body.stream_options is not None and body.stream_options.include_usage:
                    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                    yield {**header, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            return sse(*await started(chunks()))
        texts: list[list[str]] = [[] for _ in range(body.n)]
        tokens: list[list[TokenInfo]] = [[] for _ in range(body.n)]
        last: list[Event | None] = [None] * body.n
        async for index, event in events:
            texts[index].append(event.text)
            tokens[index] += event.tokens
            if event.finish_reason is not None:
                last[index] = event
        choices, generated, timings = [], 0, None
        for j in range(body.n):
            if last[j] is None:
                raise RequestError(500, "generation ended without a result")
            completion = {"choices": [{"text": "".join(texts[j]), "finish_reason": last[j].finish_reason,
                                       "logprobs": logprobs_dict(tokens[j]) if body.logprobs else None}],
                          "usage": last[j].usage}
            choices.append({**chat_response(plan, header, completion)["choices"][0], "index": j})
            generated += (last[j].usage or {}).get("completion_tokens", 0)
            timings = timings or last[j].timings
        prompt = len(request.prompt_tokens)
        return JSONResponse({**header, "object": "chat.completion", "choices": choices, "timings": timings,
                             "usage": {"prompt_tokens": prompt, "completion_tokens": generated,
                                       "total_tokens": prompt + generated}})

    return api

