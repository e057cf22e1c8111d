"""One request's generation, driven one token at a time by ``Llama`` and by the server's engine.

A :class:`Generation` owns what belongs to one request: its sampler chain (primed with the
prompt for the penalties), the stop-string stream, the token limit, logprobs, usage, timings
and why it ended. Whoever drives it owns the context: it evaluates tokens and tells the
Generation which row of logits to sample from. ``advance`` samples and accounts for one token
and returns the text that is safe to show; when ``finish_reason`` is set, it is done.
:func:`generate` is the single-sequence driver ``Llama`` uses.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..context import Context
from ..errors import ContextFullError
from ..model import Model
from ..vocab import Vocab
from .params import SamplingParams
from .draft_policy import DraftPolicy, SpeculationStats
from .hooks import LogitsProcessor, StoppingCriterion, TokenHooks
from .kv_sequence import KVSequence
from .speculative import Drafter, verified_tokens
from .text_stream import TextStream

if TYPE_CHECKING:
    from ..multimodal import MediaChunk


@dataclasses.dataclass
class Request:
    """What to generate; validated by whoever built it (Llama's arguments, the server's models)."""

    prompt_tokens: list[int]
    params: SamplingParams
    max_tokens: int | None = 16  # None or <= 0: until the context is full
    stops: list[str] = dataclasses.field(default_factory=list)
    logprobs: int | None = None  # alternatives per token to report; None: no logprobs
    # the logprobs are those of the distribution the sampler chain drew from, not the model's (llama-server's
    # post_sampling_probs): the alternatives are the tokens the chain left, most likely first
    post_sampling: bool = False
    # images/audio by the position they start at; prompt_tokens holds placeholders there (pyllama.multimodal)
    media: Mapping[int, MediaChunk] = dataclasses.field(default_factory=dict)
    # Python code run at each step (pyllama.generation.hooks); None: none, and no cost
    logits_processor: LogitsProcessor | None = None
    stopping_criteria: StoppingCriterion | None = None


@dataclasses.dataclass
class Candidate:
    token: int
    piece: bytes
    logprob: float

    @property
    def text(self) -> str:
        return self.piece.decode("utf-8", "replace")


@dataclasses.dataclass
class TokenInfo(Candidate):
    """A generated (or echoed) token, its logprob (None for the first prompt token) and the
    most likely alternatives at its position."""

    logprob: float | None = None
    top: list[Candidate] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Event:
    """Text safe to show, the tokens behind it, and on the last one how and why it ended."""

    text: str
    tokens: list[TokenInfo]  # with logprobs requested
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    timings: dict[str, float] | None = None
    stop_word: str | None = None  # the stop string that ended it, if one did
    error: str | None = None  # set by the server's engine when this request failed
    ids: list[int] = dataclasses.field(default_factory=list)  # the generated token ids behind the text
    truncated: bool = False  # the context cut the text short: shifted, or full before the request's limit
    progress: dict[str, float] | None = None  # prompt evaluation so far (total, cache, processed, time_ms)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def token_info(model: Model, logits: np.ndarray, token: int, top_n: int) -> TokenInfo:
    """``token``'s logprob under ``logits`` and the ``top_n`` most likely tokens there."""
    logprobs = _log_softmax(np.asarray(logits))
    top = np.argpartition(-logprobs, min(top_n, len(logprobs) - 1))[:top_n] if top_n > 0 else []
    piece = model.vocab.token_to_piece
    best = [Candidate(int(t), piece(int(t)), float(logprobs[t])) for t in sorted(top, key=lambda t: -logprobs[t])]
    return TokenInfo(token, piece(token), float(logprobs[token]), best)


def drawn_info(model: Model, candidates: np.ndarray, token: int, top_n: int) -> TokenInfo:
    """``token`` and the ``top_n`` most likely of the ``candidates`` the sampler chain left
    (:meth:`Sampler.keep_candidates`), their logprobs the logs of their probabilities there."""
    piece = model.vocab.token_to_piece
    ids, probs = candidates["id"], candidates["p"]
    hit = np.flatnonzero(ids == token)
    p = float(probs[hit[0]]) if hit.size else 0.0
    top = [Candidate(int(t), piece(int(t)), math.log(float(q))) for t, q in zip(ids[:top_n], probs[:top_n])]
    return TokenInfo(token, piece(token), math.log(p) if p > 0 else -math.inf, top)


def prompt_infos(model: Model, prompt: list[int], rows: list[np.ndarray], top_n: int) -> list[TokenInfo]:
    """Logprobs of each prompt token under the logits of the position before it (echo)."""
    infos = [TokenInfo(prompt[0], model.token_to_piece(prompt[0]))]
    for row, token in zip(rows, prompt[1:]):
        infos.append(token_info(model, row, token, top_n))
    return infos


def infill_prompt(vocab: Vocab, prefix: str, suffix: str, middle: str = "",
                  files: Sequence[tuple[str, str]] = ()) -> list[int]:
    """A fill-in-the-middle prompt: the model writes what goes between ``prefix`` and ``suffix``
    (after ``middle``, the start of the gap). ``files`` (name, text) give more context, in the
    repository-level pattern (FIM_REP, FIM_SEP) on models that have those tokens."""
    fim = [vocab.fim_prefix, vocab.fim_suffix, vocab.fim_middle]
    if -1 in fim:
        raise ValueError("fill-in-the-middle needs a model with FIM tokens; this one has none")
    context: list[int] = []
    if files:
        repo, separator = vocab.fim_repo, vocab.fim_separator
        if repo >= 0:
            context += [repo] + vocab.tokenize("myproject\n", False, False)
        for name, text in files:
            header = [separator] + vocab.tokenize(f"{name}\n", False, False) if separator >= 0 else \
                vocab.tokenize("\n\n--- snippet ---\n\n", False, False)
            context += header + vocab.tokenize(text, False, False)
        if separator >= 0:
            context += [separator] + vocab.tokenize("filename\n", False, False)
    return (([vocab.bos] if vocab.add_bos else []) + context + [fim[0]] + vocab.tokenize(prefix, False, True)
            + vocab.tokenize(middle, False, True) + [fim[1]] + vocab.tokenize(suffix, False, True) + [fim[2]])


def control_tokens(vocab: Vocab, texts: Sequence[str]) -> frozenset[int]:
    """The control tokens that ``texts`` name (each text one whole token of the vocabulary)."""
    found = set()
    for text in texts:
        tokens = vocab.tokenize(text, add_special=False, parse_special=True)
        if len(tokens) == 1 and vocab.is_control(tokens[0]):
            found.add(tokens[0])
    return frozenset(found)


class Generation:
    """The per-request state of generating after a prompt.

    ``limit`` is how many tokens it may generate (the caller folds in ``max_tokens`` and the
    room left in its context). ``n_ctx`` resolves ``penalty_last_n=-1`` (the whole context).
    """

    def __init__(self, model: Model, request: Request, seed: int, limit: int, n_ctx: int) -> None:
        self.model = model
        self.request = request
        history = [t for t in request.prompt_tokens if t >= 0] if request.media else request.prompt_tokens
        self.sampler = request.params.sampler(model, seed, history=history, n_ctx=n_ctx)
        self._post_sampling = request.post_sampling and request.logprobs is not None
        if self._post_sampling:
            self.sampler.keep_candidates()
        self.stream = TextStream(request.stops)
        self.limit = limit
        self.generated = 0
        self.last_token = -1
        self.finish_reason: str | None = None
        self.truncated = False  # set when the context shifted under it
        self.limited_by_context = False  # the limit is the room left, not one the request set
        self.prompt_evaluated = len(request.prompt_tokens)  # the driver lowers it when it reused a cached prefix
        self._speculation: tuple[SpeculationStats, int, int] | None = None  # (stats, drafted, accepted) at start
        self.hooks = TokenHooks(history, request.logits_processor, request.stopping_criteria) \
            if request.logits_processor is not None or request.stopping_criteria is not None else None
        self._is_eog = model.vocab.is_eog
        # a stop string that is a control token (a turn marker such as <start_of_turn>) renders as no
        # text, so the stream never sees it: it ends generation as that token
        self._stop_tokens = control_tokens(model.vocab, request.stops) if request.stops else frozenset()
        self._piece = model.vocab.token_to_piece
        self._pending: list[TokenInfo] = []
        self._pending_ids: list[int] = []
        self.started = time.perf_counter()
        self._first_token: float | None = None
        self._finished: float | None = None

    def start_clock(self) -> None:
        """Timings count from now (a queued request's wait is not prompt time)."""
        self.started = time.perf_counter()

    def sample(self, context: Context, row: int = -1) -> int:
        """Pick the next token from batch row ``row`` of the context's last decode."""
        if self.hooks is not None:
            return self.hooks.sample(self.sampler, context, row)
        return self.sampler.sample(context, row)

    def advance(self, context: Context, row: int = -1) -> Event | None:
        """Sample one token from ``row`` and account for it (:meth:`take`)."""
        token = self.sampler.sample(context, row) if self.hooks is None else \
            self.hooks.sample(self.sampler, context, row)
        return self.take(token, context, row)

    def take(self, token: int, context: Context, row: int = -1) -> Event | None:
        """Account for a sampled token: its text, logprobs, stop strings and limits. Returns an
        Event when there is something to show, and always when the generation ends."""
        if self._first_token is None:
            self._first_token = time.perf_counter()
        if self.hooks is not None:
            if self.hooks.stops(context, row):
                return self.finish("stop")
            self.hooks.accept(token)
        if self._is_eog(token) or token in self._stop_tokens:
            return self.finish("stop")
        self.generated += 1
        self.last_token = token
        self._pending_ids.append(token)
        if self._post_sampling:
            self._pending.append(drawn_info(self.model, self.sampler.candidates, token, self.request.logprobs))
        elif self.request.logprobs is not None:
            self._pending.append(token_info(self.model, context.logits(row), token, self.request.logprobs))
        text = self.stream.push(self._piece(token))
        if self.stream.stopped:
            return self.finish("stop", text)
        if self.generated >= self.limit:
            return self.finish("length", text)
        if not text:
            return None
        event = Event(text, self._pending, ids=self._pending_ids)
        self._pending, self._pending_ids = [], []
        return event

    def finish(self, reason: str, text: str = "") -> Event:
        """End the generation (also when the driver ran out of context): the last Event."""
        self.finish_reason = reason
        self._finished = time.perf_counter()
        truncated = self.truncated or (reason == "length" and self.limited_by_context)
        event = Event(text + self.stream.finish(), self._pending, reason, self.usage, self.timings,
                      self.stream.stopped_by, ids=self._pending_ids, truncated=truncated)
        self._pending, self._pending_ids = [], []
        return event

    def speculates_with(self, policy: DraftPolicy) -> None:
        """Guesses ``policy`` judges from now on count in this generation's timings."""
        self._speculation = (policy.stats, policy.stats.drafted, policy.stats.accepted)

    @property
    def usage(self) -> dict[str, int]:
        prompt = len(self.request.prompt_tokens)
        return {"prompt_tokens": prompt, "completion_tokens": self.generated, "total_tokens": prompt + self.generated}

    @property
    def timings(self) -> dict[str, float]:
        """llama-server's ``timings``: prompt evaluation (up to the first token) and generation."""
        first = self._first_token or time.perf_counter()
        end = self._finished or time.perf_counter()
        prompt_ms, predicted_ms = 1e3 * (first - self.started), 1e3 * (end - first)
        prompt_n, predicted_n = self.prompt_evaluated, self.generated
        return {
            "cache_n": len(self.request.prompt_tokens) - prompt_n,
            "prompt_n": prompt_n, "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
            "prompt_per_second": 1e3 * prompt_n / prompt_ms if prompt_ms > 0 else 0.0,
            # the first token came with the prompt's logits: the rate is over the decodes after it
            "predicted_n": predicted_n, "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / (predicted_n - 1) if predicted_n > 1 else 0.0,
            "predicted_per_second": 1e3 * (predicted_n - 1) / predicted_ms if predicted_n > 1 and predicted_ms > 0
            else 0.0,
            **self._draft_timings(),
        }

    def _draft_timings(self) -> dict[str, int]:
        if self._speculation is None:
            return {}
        stats, drafted, accepted = self._speculation
        return {"draft_n": stats.drafted - drafted, "draft_n_accepted": stats.accepted - accepted}


def generate(model: Model, session: KVSequence, request: Request, seed: int, drafter: Drafter | None = None,
             policy: DraftPolicy | None = None) -> Iterator[Event]:
    """Evaluate the prompt through ``session`` (reusing its cached prefix) and generate; the
    last Event carries the finish reason. With a drafter (and no logprobs), guesses are
    verified in one batch each, and the output is exactly that of plain decoding."""
    prompt = request.prompt_tokens
    session.prefill(prompt, media=request.media)
    room = session.n_ctx - len(prompt)
    limit = request.max_tokens if request.max_tokens and request.max_tokens > 0 else room
    if session.keep is None:
        limit = min(limit, room)
    generation = Generation(model, request, seed, limit, session.n_ctx)
    generation.prompt_evaluated = session.last_prompt_evaluated
    if drafter is not None and not request.media:  # drafters read text only
        policy = policy if policy is not None else DraftPolicy()
        generation.speculates_with(policy)
        for token, row in verified_tokens(session, generation.sample, drafter, policy):
            event = generation.take(token, session.context, row)
            if event is not None:
                yield event
            if generation.finish_reason is not None:
                return
        yield generation.finish("length")  # the context is full
        return
    context = session.context
    while True:
        event = generation.advance(context)
        if event is not None:
            yield event
        if generation.finish_reason is not None:
            return
        try:
            session.append(generation.last_token)
        except ContextFullError:
            yield generation.finish("length")
            return
