"""Text completions: OpenAI's ``/v1/completions`` and llama.cpp's ``/completion``.

Both take a :class:`CompletionRequest`; a request makes one engine job per prompt and choice
(``n``), and the events come back as OpenAI ``text_completion`` (chunks) or as llama.cpp's
``content`` / ``completion_probabilities`` objects.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Union

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..generation.core import Event, Request, TokenInfo
from ..multimodal import MediaPrompt
from ..results import completion_probabilities, logprobs_dict
from .errors import RequestError
from .schemas import MAX_CHOICES, CompletionRequest, GenerationFields, InfillRequest, JSONPrompt
from .engine import Job
from .service import ModelService
from .services import Services
from .sse import prepend, sse, started


Prompted = Union[list[int], MediaPrompt]  # a prompt's tokens, with its media if it has any


def prompts_of(prompt: str | JSONPrompt | list[Any]) -> list[str | JSONPrompt | list[int | str]]:
    """A request's prompts: text, token ids, ids mixed with text or a prompt object (llama.cpp),
    or a list of those."""
    if isinstance(prompt, (str, JSONPrompt)):
        return [prompt]
    ids, lists = any(isinstance(part, int) for part in prompt), any(isinstance(part, list) for part in prompt)
    if ids and lists:
        raise RequestError(400, "'prompt' mixes token ids with lists of them; give one prompt or a list of prompts",
                           "prompt")
    return [prompt] if ids else list(prompt)  # one prompt of ids (and text pieces, as llama.cpp allows), or several


def completion_prompts(service: ModelService, body: CompletionRequest) -> list[Callable[[], Prompted]]:
    """How to tokenize each of a completion request's prompts (text, ids, a prompt object with
    media, or fill-in-the-middle)."""
    prompts = prompts_of(body.prompt)

    def tokens_of(i: int, prompt: str | JSONPrompt | list[int | str]) -> Prompted:
        field = "prompt" if len(prompts) == 1 else f"prompt[{i}]"
        if isinstance(prompt, JSONPrompt):
            return service.tokenize_json_prompt(prompt, field)
        if body.suffix is None:
            return service.tokenize_prompt(prompt, field)
        if not isinstance(prompt, str):
            raise RequestError(400, "'suffix' needs a text prompt", "suffix")
        return service.fill_in_the_middle(prompt, body.suffix)

    return [lambda i=i, p=p: tokens_of(i, p) for i, p in enumerate(prompts)]


async def prepare(service: ModelService, body: GenerationFields, prompts: Sequence[Callable[[], Prompted]],
                  logprobs: int | None) -> tuple[list[Request], list[Job]]:
    """One generation Request per prompt and a job per choice, tokenized and constrained off the
    event loop."""
    if len(prompts) * body.n > MAX_CHOICES:
        raise RequestError(400, f"{len(prompts)} prompts x n={body.n} choices is more than {MAX_CHOICES}", "n")
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])

    def build() -> tuple[list[Request], list[Job]]:
        grammar = service.constraint(body)
        service.check_grammar(grammar)
        params = service.sampling(body, grammar)
        requests = []
        for tokens_of in prompts:
            tokens = tokens_of()
            media = {}
            if isinstance(tokens, MediaPrompt):
                tokens, media = tokens.tokens, tokens.media
            requests.append(Request(tokens, params, None, stops, logprobs, media=media))
        return requests, service.jobs(requests, body)

    return await run_in_threadpool(build)


def _usage(requests: Sequence[Request], generated: int) -> dict[str, int]:
    prompt = sum(len(r.prompt_tokens) for r in requests)
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


class _Choices:
    """The pieces of every choice as events arrive."""

    def __init__(self, count: int) -> None:
        self.texts: list[list[str]] = [[] for _ in range(count)]
        self.tokens: list[list[TokenInfo]] = [[] for _ in range(count)]
        self.ids: list[list[int]] = [[] for _ in range(count)]
        self.last: list[Event | None] = [None] * count

    def add(self, index: int, event: Event) -> None:
        self.texts[index].append(event.text)
        self.tokens[index] += event.tokens
        self.ids[index] += event.ids
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
    async def completions(body: CompletionRequest) -> Response:
        service = services.pick(body.model)
        requests, jobs = await prepare(service, body, completion_prompts(service, body), body.logprobs)
        header = {"id": f"cmpl-{uuid.uuid4()}", "object": "text_completion", "created": int(time.time()),
                  "model": service.name}
        echo = [r if body.echo and isinstance(r, str) else "" for r in prompts_of(body.prompt)]
        count = len(requests) * body.n
        if body.stream:
            async def chunks() -> AsyncIterator[dict[str, Any]]:
                offsets, choices = [0] * count, _Choices(count)
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
                    yield {**header, "choices": [], "usage": _usage(requests, choices.generated)}
            return sse(*await started(chunks()))
        choices = _Choices(count)
        async for index, event in service.run(jobs, live=False):
            choices.add(index, event)
        return JSONResponse({**header, "choices": [
            {"index": i, "text": echo[i // body.n] + choices.text(i), "finish_reason": choices.last[i].finish_reason,
             "logprobs": logprobs_dict(choices.tokens[i]) if body.logprobs is not None else None}
            for i in range(count)], "usage": _usage(requests, choices.generated)})

    @api.post("/completion", summary="llama.cpp completion", tags=["llama.cpp"])
    @api.post("/completions", include_in_schema=False)  # llama-server's: its own route, not OpenAI's
    async def llama_completion(body: CompletionRequest) -> Response:
        service = services.pick(body.model)
        n_probs = body.n_probs if body.n_probs is not None else body.logprobs
        requests, jobs = await prepare(service, body, completion_prompts(service, body), n_probs or None)
        return await llama_shaped(service, body, requests, jobs, n_probs)

    @api.post("/infill", summary="llama.cpp fill-in-the-middle", tags=["llama.cpp"])
    async def infill(body: InfillRequest) -> Response:
        service = services.pick(body.model)
        files = [(f.filename, f.text) for f in body.input_extra]
        tokens = lambda: service.fill_in_the_middle(body.input_prefix, body.input_suffix, body.prompt, files)  # noqa: E731
        requests, jobs = await prepare(service, body, [tokens], body.n_probs)
        return await llama_shaped(service, body, requests, jobs, body.n_probs)

    return api


def _selected(result: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """llama-server's ``response_fields``: only these, ``"a/b"`` being ``result["a"]["b"]``."""
    chosen = {}
    for field in fields:
        value: Any = result
        for part in field.split("/"):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            chosen[field] = value
    return chosen


async def llama_shaped(service: ModelService, body: CompletionRequest | InfillRequest, requests: Sequence[Request],
                       jobs: Sequence[Job], n_probs: int | None) -> Response:
    """llama.cpp's completion results: ``content``, ``stop``, ``stop_type``, ``timings``,
    ``generation_settings``, with ``n_probs`` the ``completion_probabilities``; one object, or a
    list for several. ``response_fields`` keeps only the fields named (``a/b`` reaches into ``a``)."""
    count = len(requests) * body.n

    def result(index: int, text: str, tokens: list[TokenInfo], ids: list[int], last: Event | None) -> dict[str, Any]:
        out: dict[str, Any] = {"index": index, "content": text, "stop": last is not None, "model": service.name}
        if body.return_tokens:
            out["tokens"] = ids
        if n_probs:
            out["completion_probabilities"] = completion_probabilities(tokens)
        if last is not None:
            usage, job = last.usage or {}, jobs[index]
            out.update(stop_type="word" if last.stop_word else "eos" if last.finish_reason == "stop" else "limit",
                       stopping_word=last.stop_word or "", tokens_predicted=usage.get("completion_tokens", 0),
                       tokens_evaluated=usage.get("prompt_tokens", 0), timings=last.timings, truncated=last.truncated,
                       generation_settings=service.generation_settings(job.request, job.max_tokens),
                       prompt=service.vocab.detokenize(job.request.prompt_tokens, unparse_special=True))
        return _selected(out, body.response_fields) if body.response_fields and last is not None else out

    if body.stream:
        async def chunks() -> AsyncIterator[dict[str, Any]]:
            async for index, event in service.run(jobs):
                if event.progress is not None:
                    yield {"index": index, "content": "", "stop": False, "prompt_progress": event.progress}
                elif event.text or event.tokens or event.finish_reason:
                    out = result(index, event.text, event.tokens, event.ids, event if event.finish_reason else None)
                    if event.timings is not None:
                        out["timings"] = event.timings
                    yield out
        return sse(*await started(chunks()), done_marker=False)
    choices = _Choices(count)
    async for index, event in service.run(jobs, live=False):
        choices.add(index, event)
    results = [result(i, choices.text(i), choices.tokens[i], choices.ids[i], choices.last[i]) for i in range(count)]
    if service.wants_verbose(body):
        for i, out in enumerate(results):
            out["__verbose"] = service.verbose(requests[i // body.n], out["content"])
    return JSONResponse(results[0] if count == 1 else results)
