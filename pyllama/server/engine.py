"""Continuous batching: many requests share one Context, one decode per step.

Each request gets a slot (a sequence id in a unified KV cache) with its own sampler and
text stream. Every step decodes one batch holding the next token of every generating slot
and as much queued prompt as the batch has room for, so new requests join between steps
and long prompts do not stall the replies already running. A new request takes the idle
slot whose cached tokens share the longest prefix with its prompt. A cancelled request
frees its slot at the next step. When the queue is full, ``submit`` raises QueueFull.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable

import numpy as np

from ..generation.core import Event, _token_info
from ..generation.text_stream import TextStream
from ..batch import Batch
from ..context import Context
from ..errors import KVCacheFullError, LlamaError
from ..model import Model
from ..sampler import Sampler
from ..generation.params import SamplingParams
from ..generation.session import common_prefix


class QueueFull(LlamaError):
    """Too many requests are waiting; try again later."""


@dataclasses.dataclass
class Job:
    prompt_tokens: list[int]
    params: SamplingParams
    max_tokens: int
    stops: list[str]
    emit: Callable[[Event], None]  # called from the engine thread
    logprobs: int | None = None
    seed: int = 0
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    submitted: float = dataclasses.field(default_factory=time.monotonic)


class _Slot:
    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.tokens: list[int] = []  # what this sequence's KV holds
        self.job: Job | None = None
        self.sampler: Sampler | None = None
        self.stream: TextStream | None = None
        self.pending: list[int] = []  # prompt tokens still to evaluate
        self.next_token: int | None = None  # sampled, handed out, not yet evaluated
        self.generated = 0
        self.output_index = -1  # row of this slot's logits in the last batch


@dataclasses.dataclass
class Stats:
    requests: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    busy_seconds: float = 0.0


class Engine:
    def __init__(self, model: Model, *, n_ctx: int, n_parallel: int = 4, n_batch: int = 512,
                 n_threads: int | None = None, n_threads_batch: int | None = None, max_queue: int = 64,
                 flash_attn: bool | None = None) -> None:
        self.model = model
        self.context = Context(model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=min(n_batch, 512), n_seq_max=n_parallel,
                               n_threads=n_threads, n_threads_batch=n_threads_batch, kv_unified=True,
                               flash_attn=flash_attn)
        self.n_ctx = self.context.n_ctx
        self.n_batch = n_batch
        self.max_queue = max_queue
        self.slots = [_Slot(i) for i in range(n_parallel)]
        self.queue: collections.deque[Job] = collections.deque()
        self.stats = Stats()
        self._batch = Batch(n_batch)
        self._wake = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="pyllama-engine", daemon=True)
        self._thread.start()

    # --- the public side (any thread) ---------------------------------------------------
    def submit(self, job: Job) -> None:
        if len(job.prompt_tokens) + 1 > self.n_ctx:
            raise ValueError(f"the prompt has {len(job.prompt_tokens)} tokens but the context holds {self.n_ctx}")
        with self._wake:
            if len(self.queue) >= self.max_queue:
                raise QueueFull(f"{len(self.queue)} requests are already waiting")
            self.queue.append(job)
            self.stats.requests += 1
            self._wake.notify()

    @property
    def queue_depth(self) -> int:
        return len(self.queue)

    @property
    def busy_slots(self) -> int:
        return sum(slot.job is not None for slot in self.slots)

    def close(self) -> None:
        with self._wake:
            self._running = False
            self._wake.notify()
        self._thread.join(timeout=30)
        self.context.close()

    # --- the engine thread --------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._wake:
                while self._running and not self.queue and not any(s.job for s in self.slots):
                    self._wake.wait()
                if not self._running:
                    break
                self._admit()
            started = time.monotonic()
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - one bad step must not take the server down
                for slot in self.slots:
                    if slot.job is not None:
                        self._finish(slot, "error", error=str(exc))
                self.context.kv_clear()
                for slot in self.slots:
                    slot.tokens = []
            self.stats.busy_seconds += time.monotonic() - started
        for slot in self.slots:
            if slot.job is not None:
                self._finish(slot, "error", error="the server is shutting down")

    def _admit(self) -> None:
        idle = [s for s in self.slots if s.job is None]
        while self.queue and idle:
            job = self.queue.popleft()
            if job.cancelled.is_set():
                continue
            slot = max(idle, key=lambda s: common_prefix(s.tokens, job.prompt_tokens))
            idle.remove(slot)
            reuse = min(common_prefix(slot.tokens, job.prompt_tokens), len(job.prompt_tokens) - 1)
            self.context.kv_remove(slot.seq_id, reuse, -1)
            slot.tokens = slot.tokens[:reuse]
            slot.job, slot.pending = job, job.prompt_tokens[reuse:]
            slot.next_token, slot.generated = None, 0
            slot.sampler = job.params.sampler(self.model, job.seed)
            if not job.params.grammar:
                for token in job.prompt_tokens[-job.params.penalty_last_n:]:
                    slot.sampler.accept(token)
            slot.stream = TextStream(job.stops)
            self.stats.prompt_tokens += len(slot.pending)

    def _step(self) -> None:
        for slot in self.slots:
            if slot.job is not None and slot.job.cancelled.is_set():
                self._release(slot)
        batch = self._batch
        batch.clear()
        for slot in self.slots:  # generating slots first: one token each
            slot.output_index = -1
            if slot.job is not None and slot.next_token is not None:
                slot.output_index = batch.n_tokens
                batch.add(slot.next_token, len(slot.tokens), (slot.seq_id,), True)
                slot.tokens.append(slot.next_token)
                slot.next_token = None
        for slot in sorted((s for s in self.slots if s.job is not None and s.pending), key=lambda s: s.job.submitted):
            room = self.n_batch - batch.n_tokens
            if room <= 0:
                break
            chunk, slot.pending = slot.pending[:room], slot.pending[room:]
            batch.add_sequence(chunk, start_pos=len(slot.tokens), seq_id=slot.seq_id,
                               output="last" if not slot.pending else False)
            slot.tokens.extend(chunk)
            if not slot.pending:
                slot.output_index = batch.n_tokens - 1
        if batch.n_tokens == 0:
            return
        try:
            self.context.decode(batch)
        except KVCacheFullError:
            self._make_room()
            return
        for slot in self.slots:
            if slot.job is not None and slot.output_index >= 0:
                self._advance(slot)

    def _make_room(self) -> None:
        """The shared KV cache is full: end the request holding the most of it; the others
        evaluate their tokens again (the failed batch may have stored part of itself)."""
        active = [s for s in self.slots if s.job is not None]
        victim = max(active, key=lambda s: len(s.tokens))
        self._finish(victim, "length")
        for slot in [victim] + active:
            self.context.kv_remove(slot.seq_id)
            slot.pending = [] if slot is victim else slot.tokens + slot.pending
            slot.tokens, slot.next_token = [], None

    def _advance(self, slot: _Slot) -> None:
        job = slot.job
        token = slot.sampler.sample(self.context, slot.output_index)
        info = []
        if job.logprobs is not None:
            info = [_token_info(self.model, np.array(self.context.logits(slot.output_index)), token, job.logprobs)]
        if self.model.vocab.is_eog(token):
            self._finish(slot, "stop")
            return
        slot.generated += 1
        self.stats.generated_tokens += 1
        text = slot.stream.push(self.model.vocab.token_to_piece(token))
        if slot.stream.stopped:
            job.emit(Event(text, info))
            self._finish(slot, "stop")
        elif slot.generated >= job.max_tokens or len(slot.tokens) + 1 >= self.n_ctx:
            job.emit(Event(text, info))
            self._finish(slot, "length")
        else:
            if text or info:
                job.emit(Event(text, info))
            slot.next_token = token

    def _finish(self, slot: _Slot, reason: str, error: str | None = None) -> None:
        job = slot.job
        tail = slot.stream.finish() if slot.stream is not None and error is None else ""
        usage = {"prompt_tokens": len(job.prompt_tokens), "completion_tokens": slot.generated,
                 "total_tokens": len(job.prompt_tokens) + slot.generated}
        job.emit(Event(tail, [], reason, usage, error))
        self._release(slot)

    def _release(self, slot: _Slot) -> None:
        slot.job, slot.sampler, slot.stream, slot.next_token, slot.pending = None, None, None, None, []
