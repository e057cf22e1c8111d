"""Text completions: OpenAI's ``/v1/completions`` and llama.cpp's ``/completion``.

Both take a :class:`CompletionRequest`; a request makes one engine job per prompt and choice
(``n``), and the events come back as OpenAI ``text_completion`` (chunks) or as llama.cpp's
``content`` / ``completion_probabilities`` objects.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..generation.core import Event, Request, TokenInfo, infill_prompt
from ..results import completion_probabilities, logprobs_dict
from .errors import RequestError
from .schemas import MAX_CHOICES, CompletionRequest
from .service import ModelService
from .services import Services
from .sse import prepend, sse, started

def prompts_of(prompt: str | list[Any]) -> list[str | list[int | str]]:
    """A request's prompts: text, token ids, ids mixed with text (llama.cpp), or a list of those."""
    if isinstance(prompt, str):
        return [prompt]
    if all(isinstance(part, (int, str)) for part in prompt):
        if any(isinstance(part, int) for part in prompt):
            return [prompt]  # one prompt of token ids (with text pieces, as llama.cpp allows)
        return list(prompt)  # several text prompts
    return list(prompt)  # several prompts, each text or token ids


async def prepare(service: ModelService, body: CompletionRequest, logprobs: int | None) -> list[Request]:
    """One generation Request per prompt, tokenized and constrained off the event loop."""
    prompts = prompts_of(body.prompt)
    if len(prompts) * body.n > MAX_CHOICES:
        raise RequestError(400, f"{len(prompts)} prompts x n={body.n} choices is more than {MAX_CHOICES}", "n")
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    grammar = service.constraint(body)

    def build() -> list[Request]:
        service.check_grammar(grammar)
        params = service.sampling(body, grammar)
        requests = []
        for i, prompt in enumerate(prompts):
            field = "prompt" if len(prompts) == 1 else f"prompt[{i}]"
            if body.suffix is not None:
                if not isinstance(prompt, str):
                    raise RequestError(400, "'suffix' needs a text prompt", "suffix")
                try:
                    tokens = infill_prompt(service.vocab, prompt, body.suffix)
                except ValueError as exc:
                    raise RequestError(400, str(exc), "suffix") from exc
            else:
                tokens = service.tokenize_prompt(prompt, field)
            requests.append(Request(tokens, params, None, stops, logprobs, body.ignore_eos))
        return requests

    return await run_in_threadpool(build)


def events_of(service: ModelService, body: CompletionRequest, requests: Sequence[Request]):
    """``(choice index, event)`` of every job; choice = prompt index * n + j (OpenAI's order)."""
    return service.run(lambda emit: [
        service.job(request, body, lambda event, k=p * body.n + j: emit(k, event), index=j)
        for p, request in enumerate(requests) for j in range(body.n)])


def _usage(requests: Sequence[Request], n: int, generated: int) -> dict[str, int]:
    prompt = sum(len(r.prompt_tokens) for r in requests)
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


class _Choices:
    """The pieces of every choice as events arrive."""

    def __init__(self, count: int) -> None:
        self.texts: list[list[str]] = [[] for _ in range(count)]
        self.tokens: list[list[TokenInfo]] = [[] for _ in range(count)]
        self.last: list[Event | None] = [None] * count

    def add(self, index: int, event: Event) -> None:
        self.texts[index].append(event.text)
        self.tokens[index] += event.tokens
        if event.finish_reason is not None:
            self.last[index] = event

    def text(self, index: int) -> str:
        return "".join(self.texts[index])

    @property
    def generated(self) -> int:
        return sum(e.usage["completion_tokens"] for e in self.last if e is not None and e.usage)


def router(services: Services) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/completions", summary="OpenAI text completion", tags=["OpenAI"])
    @api.post("/completions", include_in_schema=False)
    async def completions(body: CompletionRequest) -> Response:
        service = services.pick(body.model)
        requests = await prepare(service, body, body.logprobs)
        header = {"id": f"cmpl-{uuid.uuid4()}", "object": "text_completion", "created": int(time.time()),
                  "model": service.name}
        echo = [r if body.echo and isinstance(r, str) else "" for r in prompts_of(body.prompt)]
        count = len(requests) * body.n
        if body.stream:
            async def chunks() -> AsyncIterator[dict[str, Any]]:
                offsets, choices = [0] * count, _Choices(count)
                events = events_of(service, body, requests)
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
                    yield {**header, "choices": [], "usage": _usage(requests, body.n, choices.generated)}
            return sse(*await started(chunks()))
        choices = _Choices(count)
        async for index, event in events_of(service, body, requests):
            choices.add(index, event)
        return JSONResponse({**header, "choices": [
            {"index": i, "text": echo[i // body.n] + choices.text(i), "finish_reason": choices.last[i].finish_reason,
             "logprobs": logprobs_dict(choices.tokens[i]) if body.logprobs is not None else None}
            for i in range(count)], "usage": _usage(requests, body.n, choices.generated)})

    @api.post("/completion", summary="llama.cpp completion", tags=["llama.cpp"])
    async def llama_completion(body: CompletionRequest) -> Response:
        service = services.pick(body.model)
        n_probs = body.n_probs if body.n_probs is not None else body.logprobs
        requests = await prepare(service, body, n_probs or None)
        count = len(requests) * body.n

        def result(index: int, text: str, tokens: list[TokenInfo], last: Event | None) -> dict[str, Any]:
            out: dict[str, Any] = {"index": index, "content": text, "stop": last is not None,
                                   "model": service.name}
            if body.return_tokens:
                out["tokens"] = [t.token for t in tokens]
            if n_probs:
                out["completion_probabilities"] = completion_probabilities(tokens)
            if last is not None:
                usage = last.usage or {}
                out.update(stop_type="word" if last.stop_word else "eos" if last.finish_reason == "stop" else "limit",
                           stopping_word=last.stop_word or "", tokens_predicted=usage.get("completion_tokens", 0),
                           tokens_evaluated=usage.get("prompt_tokens", 0), timings=last.timings,
                           truncated=False)
            return out

        if body.stream:
            async def chunks() -> AsyncIterator[dict[str, Any]]:
                async for index, event in events_of(service, body, requests):
                    if event.text or event.tokens or event.finish_reason:
                        yield result(index, event.text, event.tokens, event if event.finish_reason else None)
            return sse(*await started(chunks()), done_marker=False)
        choices = _Choices(count)
        async for index, event in events_of(service, body, requests):
            choices.add(index, event)
        results = [result(i, choices.text(i), choices.tokens[i], choices.last[i]) for i in range(count)]
        return JSONResponse(results[0] if count == 1 else results)

    return api
