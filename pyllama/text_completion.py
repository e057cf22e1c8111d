"""OpenAI- and llama.cpp-shaped results built from generation events.

``Llama`` and the server both turn :class:`~pyllama.generation.generator.Event` s into the
pieces of a ``text_completion`` (whole or streamed) with these functions, so the shapes are
written once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from typing import Any

from .generation.generator import Event, TokenInfo


@dataclasses.dataclass
class Result:
    text: str
    finish_reason: str
    usage: dict[str, int]
    tokens: list[TokenInfo]
    timings: dict[str, float] | None


def collect(events: Iterable[Event]) -> Result:
    """The whole completion from its events (the last one carries the finish reason)."""
    texts, infos = [], []
    for event in events:
        if event.error is not None:
            raise RuntimeError(event.error)
        texts.append(event.text)
        infos += event.tokens
        if event.finish_reason is not None:
            return Result("".join(texts), event.finish_reason, event.usage or {}, infos, event.timings)
    raise RuntimeError("generation ended without a final event")


def logprobs_dict(infos: list[TokenInfo], offset: int = 0) -> dict[str, list]:
    """OpenAI's completions ``logprobs``: tokens, text offsets (from ``offset``), logprobs, top alternatives."""
    offsets = []
    for info in infos:
        offsets.append(offset)
        offset += len(info.text)
    return {"tokens": [i.text for i in infos], "text_offset": offsets,
            "token_logprobs": [i.logprob for i in infos],
            "top_logprobs": [{c.text: c.logprob for c in i.top} if i.logprob is not None else None for i in infos]}


def completion_probabilities(infos: list[TokenInfo], post_sampling: bool = False) -> list[dict[str, Any]]:
    """llama-server's ``completion_probabilities`` (``n_probs`` on /completion); ``post_sampling``:
    its ``post_sampling_probs`` form, ``prob`` and ``top_probs`` (the infos' logprobs are then
    those of the sampler chain's distribution)."""
    value, top = ("prob", "top_probs") if post_sampling else ("logprob", "top_logprobs")

    def shown(logprob: float) -> float:
        return math.exp(logprob) if post_sampling else logprob

    return [{"id": i.token, "token": i.text, "bytes": list(i.piece), value: shown(i.logprob),
             top: [{"id": c.token, "token": c.text, "bytes": list(c.piece), value: shown(c.logprob)}
                   for c in i.top]} for i in infos]


def completion_chunks(events: Iterable[Event], with_logprobs: bool) -> Iterator[dict[str, Any]]:
    """``{"text", "logprobs", "finish_reason"}`` per event that shows something; text offsets
    run across chunks."""
    offset = 0
    for event in events:
        if event.error is not None:
            raise RuntimeError(event.error)
        logprobs = logprobs_dict(event.tokens, offset) if with_logprobs else None
        offset += sum(len(info.text) for info in event.tokens)
        if event.text or event.finish_reason is not None or event.tokens:
            yield {"text": event.text, "logprobs": logprobs, "finish_reason": event.finish_reason}
