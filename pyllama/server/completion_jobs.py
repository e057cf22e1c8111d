"""The completion path: a completion request's prompts (text, token ids, llama.cpp's prompt
objects, fill-in-the-middle) tokenized into generation Requests, one engine job per prompt and
choice (``n``), and the choices collected as their events arrive.

Shared by OpenAI's ``/v1/completions`` (server/openai.py) and llama.cpp's ``/completion`` and
``/infill`` (server/llamacpp.py), which shape the results each its own way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Union

from starlette.concurrency import run_in_threadpool

from ..generation.generator import Event, Request, TokenInfo
from ..multimodal import MediaPrompt
from .job import Job
from .errors import RequestError
from .sampling import check_grammar, completion_grammar
from .schemas.common import MAX_CHOICES, GenerationFields, JSONPrompt
from .schemas.openai import CompletionRequest
from .served_model import ServedModel


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


def completion_prompts(service: ServedModel, body: CompletionRequest) -> list[Callable[[], Prompted]]:
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


async def prepare(service: ServedModel, body: GenerationFields, prompts: Sequence[Callable[[], Prompted]],
                  logprobs: int | None) -> tuple[list[Request], list[Job]]:
    """One generation Request per prompt and a job per choice, tokenized and constrained off the
    event loop."""
    if len(prompts) * body.n > MAX_CHOICES:
        raise RequestError(400, f"{len(prompts)} prompts x n={body.n} choices is more than {MAX_CHOICES}", "n")
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])

    def build() -> tuple[list[Request], list[Job]]:
        grammar = completion_grammar(body)
        check_grammar(grammar)
        params = service.sampling.params(body, grammar)
        requests = []
        for tokens_of in prompts:
            tokens = tokens_of()
            media = {}
            if isinstance(tokens, MediaPrompt):
                tokens, media = tokens.tokens, tokens.media
            requests.append(Request(tokens, params, None, stops, logprobs, media=media,
                                    post_sampling=body.post_sampling_probs))
        return requests, service.jobs(requests, body)

    return await run_in_threadpool(build)


def completion_usage(requests: Sequence[Request], generated: int) -> dict[str, int]:
    prompt = sum(len(r.prompt_tokens) for r in requests)
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


class Choices:
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
