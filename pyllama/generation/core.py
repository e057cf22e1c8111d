"""The completion loop behind Llama.create_completion: prompt in, text events out.

``generate`` evaluates the prompt through a Session (reusing the cached prefix), samples
token by token, and yields :class:`Event` s whose text is safe to show (whole UTF-8
characters, stop strings removed). ``collect`` and ``chunks`` turn the events into the
OpenAI-shaped pieces of a plain and a streamed response.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .text_stream import TextStream
from ..model import Model
from ..sampler import Sampler
from .params import SamplingParams
from .session import ContextFullError, Session


Drafter = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class Request:
    prompt_tokens: list[int]
    params: SamplingParams
    max_tokens: int | None = 16
    stops: list[str] = dataclasses.field(default_factory=list)
    echo: bool = False
    echo_text: str = ""
    logprobs: int | None = None
    loras: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TokenInfo:
    text: str
    logprob: float | None = None
    top: dict[str, float] | None = None


@dataclasses.dataclass
class Event:
    """Text safe to show, the tokens behind it, and on the last one how and why it ended."""

    text: str
    tokens: list[TokenInfo]
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    error: str | None = None  # set by the server's engine when generation failed


@dataclasses.dataclass
class Result:
    text: str
    finish_reason: str
    usage: dict[str, int]
    logprobs: dict[str, list] | None


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def _token_info(model: Model, logits: np.ndarray, token: int, top_n: int) -> TokenInfo:
    logprobs = _log_softmax(logits)
    top = np.argpartition(-logprobs, min(top_n, len(logprobs) - 1))[:top_n] if top_n > 0 else []
    text = model.token_to_piece(token).decode("utf-8", "replace")
    best = {model.token_to_piece(int(t)).decode("utf-8", "replace"): float(logprobs[t])
            for t in sorted(top, key=lambda t: -logprobs[t])}
    return TokenInfo(text, float(logprobs[token]), best)


def _prompt_infos(model: Model, prompt: list[int], rows: list[np.ndarray], top_n: int) -> list[TokenInfo]:
    infos = [TokenInfo(model.token_to_piece(prompt[0]).decode("utf-8", "replace"))]
    for row, token in zip(rows, prompt[1:]):
        infos.append(_token_info(model, row, token, top_n))
    return infos


@dataclasses.dataclass
class SpeculationStats:
    drafted: int = 0
    accepted: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


def _plain_tokens(session: Session, sampler: Sampler) -> Iterator[int]:
    """Sample, hand out, evaluate: one token per decode. Ends when the context is full."""
    while True:
        token = sampler.sample(session.context)
        yield token
        try:
            session.append(token)
        except ContextFullError:
            return


def _speculative_tokens(session: Session, sampler: Sampler, drafter: Drafter,
                        stats: SpeculationStats) -> Iterator[int]:
    """Let the drafter guess, verify the guess in one batch, hand out what the target's own
    sampler agrees with plus its first disagreement: the same tokens as plain decoding."""
    token = sampler.sample(session.context)
    window = 16  # how much of a guess to verify: halves after a miss on the first token, doubles after a full hit
    while True:
        yield token
        room = min(session.n_ctx - len(session.tokens) - 2, window)
        draft = [int(t) for t in drafter(np.asarray(session.tokens + [token], dtype=np.int32))][:room] if room > 0 else []
        if not draft:
            try:
                session.append(token)
            except ContextFullError:
                return
            token = sampler.sample(session.context)
            continue
        session.extend([token] + draft)
        stats.drafted += len(draft)
        for i, guess in enumerate(draft):
            token = sampler.sample(session.context, i)
            if token != guess:
                session.truncate(len(session.tokens) - (len(draft) - i))
                if i == 0:
                    window = max(1, window // 2)
                break
            stats.accepted += 1
            yield token
        else:
            window = min(64, window * 2)
            token = sampler.sample(session.context, len(draft))


def generate(model: Model, session: Session, request: Request, seed: int, verbose: bool = False,
             drafter: Drafter | None = None, stats: SpeculationStats | None = None) -> Iterator[Event]:
    vocab = model.vocab
    prompt = request.prompt_tokens
    want_logprobs = request.logprobs is not None
    rows = session.prefill(prompt, all_logits=request.echo and want_logprobs)
    sampler = request.params.sampler(model, seed)
    stats = stats if stats is not None else SpeculationStats()
    if not request.params.grammar:  # penalties see the prompt; a grammar must not be fed it
        for token in prompt[-request.params.penalty_last_n:]:
            sampler.accept(token)

    pending: list[TokenInfo] = []
    if request.echo:
        if want_logprobs:
            pending = _prompt_infos(model, prompt, rows, request.logprobs or 0)
        yield Event(request.echo_text, pending)
        pending = []

    room = session.n_ctx - len(prompt)
    limit = request.max_tokens if request.max_tokens and request.max_tokens > 0 else room
    if session.keep is None:
        limit = min(limit, room)
    stream = TextStream(request.stops)
    if drafter is not None and not want_logprobs:
        tokens = _speculative_tokens(session, sampler, drafter, stats)
    else:
        tokens = _plain_tokens(session, sampler)
    generated, finish = 0, "length"
    try:
        for token in tokens:
            if vocab.is_eog(token):
                finish = "stop"
                break
            generated += 1
            if want_logprobs:
                pending.append(_token_info(model, session.context.logits(), token, request.logprobs or 0))
            text = stream.push(vocab.token_to_piece(token))
            if text or stream.stopped:
                yield Event(text, pending)
                pending = []
            if stream.stopped:
                finish = "stop"
                break
            if generated == limit:
                break
    finally:
        tokens.close()
    usage = {"prompt_tokens": len(prompt), "completion_tokens": generated, "total_tokens": len(prompt) + generated}
    if verbose:
        print(session.context.perf(), file=sys.stderr)
    yield Event(stream.finish(), pending, finish, usage)


def _logprobs_dict(infos: list[TokenInfo], offset: int = 0) -> dict[str, list]:
    offsets = []
    for info in infos:
        offsets.append(offset)
        offset += len(info.text)
    return {"tokens": [i.text for i in infos], "text_offset": offsets,
            "token_logprobs": [i.logprob for i in infos], "top_logprobs": [i.top for i in infos]}


def collect(events: Iterator[Event], with_logprobs: bool) -> Result:
    texts, infos = [], []
    for event in events:
        texts.append(event.text)
        infos += event.tokens
        if event.finish_reason is not None:
            logprobs = _logprobs_dict(infos) if with_logprobs else None
            return Result("".join(texts), event.finish_reason, event.usage or {}, logprobs)
    raise RuntimeError("generation ended without a final event")


def chunks(events: Iterator[Event], with_logprobs: bool) -> Iterator[dict[str, Any]]:
    """``{"text", "logprobs", "finish_reason"}`` per event; text offsets run across chunks."""
    offset = 0
    for event in events:
        logprobs = _logprobs_dict(event.tokens, offset) if with_logprobs else None
        offset += sum(len(info.text) for info in event.tokens)
        if event.text or event.finish_reason is not None or event.tokens:
            yield {"text": event.text, "logprobs": logprobs, "finish_reason": event.finish_reason}
