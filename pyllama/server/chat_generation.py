"""The one chat path: a :class:`ChatRequest` planned into a prompt and constraints
(pyllama.chat), one engine job per choice, and the text split back into content, reasoning
and tool calls, as OpenAI ``chat.completion`` (chunks).

Not a route: OpenAI's ``/v1/chat/completions`` (server/openai.py) is a thin route over
:func:`complete_chat` / :func:`stream_chat`; the other chat-shaped APIs (server/responses.py,
server/anthropic.py) translate their requests into a ChatRequest (:func:`translated`) and these
results into their own shapes (:class:`ChunkEvents`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ..chat import ChatChunker, ChatPlan, chat_header, chat_response
from ..generation.generator import Event, Request, TokenInfo
from ..text_completion import completion_probabilities, logprobs_dict
from .job import Job
from .errors import RequestError, validation_message
from .sampling import check_grammar
from .schemas.openai import ChatRequest
from .served_model import ServedModel
from .sse import prepend


def _part(event: Event, logprobs: bool, offset: int = 0) -> dict[str, Any]:
    """An engine event as the ``text_completion`` chunk the chat shapers read."""
    return {"choices": [{"text": event.text, "finish_reason": event.finish_reason,
                         "logprobs": logprobs_dict(event.tokens, offset) if logprobs else None}],
            "usage": event.usage}


async def _start(service: ServedModel, body: ChatRequest,
                 live: bool) -> tuple[ChatPlan, Request, AsyncIterator[tuple[int, Event]]]:
    """Plan the chat, build its generation request (off the event loop), submit one job per choice
    (``live``: its events as they come, for a stream)."""
    plan = await service.plan_chat(body)
    top = (body.top_logprobs or 0) if body.logprobs else None

    def build() -> tuple[Request, list[Job]]:
        check_grammar(plan.grammar)
        params = service.sampling.params(body, plan.grammar, plan.grammar_triggers)
        request = Request(plan.prompt_tokens, params, None, plan.stops, top, media=plan.media,
                          post_sampling=body.post_sampling_probs)
        return request, service.jobs([request], body)

    request, jobs = await run_in_threadpool(build)
    return plan, request, service.run(jobs, live)


def _drawn_logprobs(tokens: list[TokenInfo]) -> dict[str, Any]:
    """llama-server's chat ``logprobs`` with ``post_sampling_probs``: each token's ``prob`` and
    ``top_probs`` after the sampler chain, in its /completion shape."""
    return {"content": completion_probabilities(tokens, post_sampling=True)}


def translated(fields: dict[str, Any]) -> ChatRequest:
    """Another API's request as a ChatRequest, validated as the chat route validates its own."""
    try:
        return ChatRequest.model_validate(fields)
    except ValidationError as exc:
        message, param = validation_message(exc.errors())
        raise RequestError(400, message, param, "invalid_value") from exc


def _usage(prompt: int, generated: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


async def complete_chat(service: ServedModel, body: ChatRequest, details: bool = False) -> dict[str, Any]:
    """The whole ``chat.completion`` (with llama-server's ``timings``). ``details`` (for the
    other chat-shaped APIs): each choice also says which stop string ended it (``stop_word``)."""
    plan, request, events = await _start(service, body, live=False)
    header = chat_header(service.name)
    texts: list[list[str]] = [[] for _ in range(body.n)]
    tokens: list[list[TokenInfo]] = [[] for _ in range(body.n)]
    last: list[Event | None] = [None] * body.n
    async for index, event in events:
        texts[index].append(event.text)
        tokens[index] += event.tokens
        if event.finish_reason is not None:
            last[index] = event
    choices, generated = [], 0
    for j, final in enumerate(last):
        if final is None:
            raise RequestError(500, "generation ended without a result")
        completion = {"choices": [{"text": "".join(texts[j]), "finish_reason": final.finish_reason,
                                   "logprobs": logprobs_dict(tokens[j]) if body.logprobs else None}],
                      "usage": final.usage}
        choices.append({**chat_response(plan, header, completion)["choices"][0], "index": j})
        if body.logprobs and body.post_sampling_probs:
            choices[-1]["logprobs"] = _drawn_logprobs(tokens[j])
        if details:
            choices[-1]["stop_word"] = final.stop_word
        generated += (final.usage or {}).get("completion_tokens", 0)
    result = {**header, "object": "chat.completion", "choices": choices, "timings": last[0].timings,
              "usage": _usage(len(request.prompt_tokens), generated)}
    if service.wants_verbose(body):
        result["__verbose"] = service.verbose(request, "".join(texts[0]))
    return result


async def stream_chat(service: ServedModel, body: ChatRequest, details: bool = False) -> AsyncIterator[dict[str, Any]]:
    """``chat.completion.chunk`` s: the role first, then deltas; the last chunk of a choice
    carries ``timings``; with ``stream_options.include_usage``, a final chunk with the usage.
    Nothing is yielded before the jobs are queued, so a full queue is still an HTTP error.
    ``details`` (for the other chat-shaped APIs, whose streams open with the prompt's size):
    the first chunks carry ``prompt_tokens``, a choice's last chunk its ``stop_word``."""
    plan, request, events = await _start(service, body, live=True)
    header = chat_header(service.name)
    chunkers = [ChatChunker(header, plan, j) for j in range(body.n)]
    offsets, generated = [0] * body.n, 0
    usage_chunk = body.stream_options is not None and body.stream_options.include_usage
    timings = None  # with a usage chunk, the final timings go there (the stream's last chunk)
    first = await events.__anext__()
    for chunker in chunkers:
        yield {**chunker.start(), "prompt_tokens": len(request.prompt_tokens)} if details else chunker.start()
    async for index, event in prepend(first, events):
        if event.progress is not None:
            yield {**header, "object": "chat.completion.chunk", "prompt_progress": event.progress,
                   "timings": event.timings}
            continue
        out = chunkers[index].feed(_part(event, body.logprobs, offsets[index]))
        if body.logprobs and body.post_sampling_probs:
            for chunk in out:
                if chunk["choices"] and chunk["choices"][0].get("logprobs"):
                    chunk["choices"][0]["logprobs"] = _drawn_logprobs(event.tokens)
        offsets[index] += sum(len(t.text) for t in event.tokens)
        if event.timings is not None and usage_chunk and event.finish_reason is not None:
            timings = event.timings
        elif event.timings is not None and out:  # the last chunk of a choice, or each with timings_per_token
            out[-1]["timings"] = event.timings
        if event.finish_reason is not None:
            generated += (event.usage or {}).get("completion_tokens", 0)
            if details and out:
                out[-1]["choices"][0]["stop_word"] = event.stop_word
        for chunk in out:
            yield chunk
    if usage_chunk:
        yield {**header, "object": "chat.completion.chunk", "choices": [],
               "usage": _usage(len(request.prompt_tokens), generated), "timings": timings}


class ChunkEvents:
    """Another API's event stream from :func:`stream_chat`'s chunks (``details=True``), for
    one choice: subclasses say how the reply starts, how reasoning and text are written, how a
    tool call and the end of a block look, and how the reply ends; the reading is done here."""

    REASONING, TEXT = "reasoning", "text"  # what the subclass calls the two kinds of text

    def __init__(self) -> None:
        self.finish: str | None = None
        self.stop_word: str | None = None
        self.cached = 0  # prompt tokens that came from a cache

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if "prompt_progress" in chunk:  # llama.cpp's own telemetry (return_progress)
            return self.progress(chunk["prompt_progress"])
        out = self.start(chunk["prompt_tokens"]) if "prompt_tokens" in chunk else []  # the first chunk
        if not chunk["choices"]:  # the usage chunk, after the choice's last
            self.cached = (chunk.get("timings") or {}).get("cache_n", 0)
            return out + self.end(chunk["usage"])
        choice = chunk["choices"][0]
        delta = choice["delta"]
        if delta.get("reasoning_content"):
            out += self.write(self.REASONING, delta["reasoning_content"])
        if delta.get("content"):
            out += self.write(self.TEXT, delta["content"])
        for call in delta.get("tool_calls") or []:
            out += self.close() + self.tool_call(call)
        if choice["finish_reason"] is not None:
            self.finish, self.stop_word = choice["finish_reason"], choice.get("stop_word")
            out += self.close()
        return out

    def progress(self, progress: dict[str, Any]) -> list[dict[str, Any]]:
        return []  # no event of the API says this

    def start(self, prompt_tokens: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def write(self, kind: str, text: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def tool_call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def close(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def end(self, usage: dict[str, int]) -> list[dict[str, Any]]:
        raise NotImplementedError
