"""Continuous batching: many requests share one Context, one decode per step.

Each request gets a slot (a sequence id in a unified KV cache) holding its
:class:`~pyllama.generation.generator.Generation`, the same per-request core ``Llama`` drives.
Every step decodes one batch holding the next token of every generating slot and as much
queued prompt as the batch has room for, so new requests join between steps and long
prompts do not stall the replies already running. A new request takes the idle slot whose
cached tokens share the longest prefix with its prompt (at least a tenth of it, as
llama-server's slot similarity), else the one idle longest, so a cached prefix is kept for as
long as it can be. A cancelled request frees its
slot at the next step, a queued one its place at once. When the queue is full, ``submit``
raises QueueFullError.

With a prompt cache (``--cache-ram``), a slot's cached prefix that a new request is about to
cut goes to RAM first, and a request whose prompt a cached state covers better than any slot
starts from that state.

LoRA adapters: one decode applies one set of adapters and scales, so each step decodes only
the slots whose job has the set of the slot that has waited longest; the others wait a step.
A slot's cached prefix is reused only by a job with the same set.

Speculative decoding (a drafter: prompt lookup or a draft model): a generating slot may put
guesses after its token; they are verified from their rows of the same decode with the slot's
own sampler, so the text is exactly that of plain decoding. How many to guess is each slot's
DraftPolicy's choice, from its acceptance rate and what decodes of each size cost here.

Isolation: whatever fails while admitting, sampling or advancing one job ends that job alone,
with an error event; the other slots go on and keep their KV. A failed decode ends the jobs
that were in that batch. If the engine thread itself ever stops, every waiting job gets an
error, ``alive`` turns false and ``submit`` raises EngineStoppedError.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..batch import Batch
from ..context import Context
from ..errors import EngineStoppedError, KVCacheFullError, QueueFullError
from ..generation.cache import LlamaState, RAMCache
from ..generation.generator import Event, Generation
from ..generation.draft_policy import DecodeCost, DraftPolicy
from ..generation.kv_sequence import common_prefix, discarded_by_shift
from ..generation.speculative import Drafter, guess
from ..lora import AppliedLoras
from ..model import Model
from .engine_stats import Stats
from .job import Job
from ..multimodal.prompt import reusable_prefix, text_ahead

logger = logging.getLogger("pyllama.server")
T = TypeVar("T")


class _Slot:
    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.tokens: list[int] = []  # what this sequence's KV holds
        self.job: Job | None = None
        self.generation: Generation | None = None
        self.pending: list[int] = []  # prompt tokens still to evaluate
        self.next_token: int | None = None  # sampled, handed out, not yet evaluated
        self.output_index = -1  # row of this slot's logits in the last batch
        self.idle_since = 0.0
        self.cached = 0  # prompt tokens the current job found in the slot's cache
        self.drafter: Drafter | None = None
        self.policy: DraftPolicy | None = None
        self.draft: list[int] = []  # guesses after next_token in the batch being decoded
        self.loras: AppliedLoras = ()  # the adapters its KV was computed with
        self.last_decode = 0  # the step its tokens were last decoded in, so adapter groups take turns
        self.stashed: tuple[int, ...] = ()  # the tokens whose state it last put in the prompt cache

    def release(self) -> None:
        self.job, self.generation, self.next_token, self.pending = None, None, None, []
        self.idle_since = time.monotonic()

    def affinity(self, prompt: list[int]) -> tuple[int, float]:
        """How well this idle slot suits ``prompt``: the prefix it can reuse (a few shared tokens,
        a BOS say, do not count), then how long it has been idle."""
        shared = common_prefix(self.tokens, prompt)
        return (shared if shared >= max(2, len(prompt) // 10) else 0, -self.idle_since)


# what a slot put in a step's batch: the slot, its tokens, and whether they were generated (else prompt)
_Added = tuple[_Slot, list[int], bool]


class Engine:
    def __init__(self, model: Model, *, n_ctx: int, n_parallel: int = 4, n_batch: int = 512, n_ubatch: int = 512,
                 max_queue: int = 64, context_shift: bool = False, drafters: Sequence[Drafter] = (),
                 max_draft: int = 16, min_draft: int = 0, prompt_cache: RAMCache | None = None,
                 kv_unified: bool = True, cache_idle_slots: bool = True, **context_options: Any) -> None:
        """``drafters``: one per slot for speculative decoding (none: plain decoding);
        ``cache_idle_slots`` (with a ``prompt_cache``): llama-server's, see :meth:`_stash_idle`;
        ``context_options`` go to the shared Context (threads, flash attention, KV cache types...)."""
        self.model = model
        self.context = Context(model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=min(n_batch, n_ubatch),
                               n_seq_max=n_parallel, kv_unified=kv_unified, **context_options)
        self.context_shift = context_shift
        self.prompt_cache = prompt_cache
        self.cache_idle_slots = cache_idle_slots and prompt_cache is not None
        self.kv_unified = kv_unified
        # what one slot may hold: everything with a unified KV cache (slots share it), else its share
        self.n_ctx = self.context.n_ctx_seq
        self.n_batch = n_batch
        self.max_queue = max_queue
        self.slots = [_Slot(i) for i in range(n_parallel)]
        self.decode_cost = DecodeCost()  # shared by the slots' draft policies
        self.max_draft, self.min_draft = max_draft, min_draft
        for slot, drafter in zip(self.slots, drafters):
            slot.drafter = drafter
        self.queue: collections.deque[Job] = collections.deque()
        self.stats = Stats()
        self.failure: str | None = None  # why the engine thread stopped, if it did
        self._calls: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future]] = collections.deque()
        self._batch = Batch(n_batch)
        self._loras: AppliedLoras = ()  # what the context applies now
        self._wake = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="pyllama-engine", daemon=True)
        self._thread.start()

    # --- the public side (any thread) ---------------------------------------------------
    def submit(self, job: Job) -> None:
        if len(job.prompt_tokens) + 1 > self.n_ctx:
            raise ValueError(f"the prompt has {len(job.prompt_tokens)} tokens but the context holds {self.n_ctx}")
        if job.slot_id >= len(self.slots):
            raise ValueError(f"there is no slot {job.slot_id}: the slots are 0..{len(self.slots) - 1}")
        with self._wake:
            if not self.alive:
                raise EngineStoppedError(f"the engine is not running: {self.failure or 'it was shut down'}")
            if len(self.queue) >= self.max_queue:
                raise QueueFullError(f"{len(self.queue)} requests are already waiting")
            self.queue.append(job)
            self.stats.requests += 1
            self._wake.notify()

    def cancel(self, jobs: Sequence[Job]) -> None:
        """Take jobs back (their client left, or a sibling failed): a queued one gives up its
        place now, so it neither counts against ``max_queue`` nor waits for a slot to be dropped;
        a running one frees its slot at the next step."""
        with self._wake:
            for job in jobs:
                job.cancelled.set()
            if any(job.cancelled.is_set() for job in self.queue):
                self.queue = collections.deque(job for job in self.queue if not job.cancelled.is_set())
            self._wake.notify()

    @property
    def alive(self) -> bool:
        return self._running and self.failure is None and self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        return len(self.queue)

    @property
    def busy_slots(self) -> int:
        return sum(slot.job is not None for slot in self.slots)

    def stop(self) -> None:
        """Stop the engine thread between two steps; every job still queued or running ends
        with an error event saying the server is shutting down. Safe to call again."""
        with self._wake:
            self._running = False
            self._wake.notify()
        self._thread.join(timeout=30)

    def close(self) -> None:
        self.stop()
        self.context.close()

    # --- the engine thread --------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
            reason = "the server is shutting down"
        except BaseException as exc:  # noqa: BLE001 - a bug here must not leave requests hanging
            logger.exception("the engine thread stopped")
            reason = f"the engine stopped: {type(exc).__name__}: {exc}"
            self.failure = reason
        with self._wake:
            waiting, self.queue = list(self.queue), collections.deque()
            calls, self._calls = list(self._calls), collections.deque()
        for _, future in calls:
            if future.set_running_or_notify_cancel():
                future.set_exception(EngineStoppedError(reason))
        for job in waiting:
            self._emit(job, Event("", [], "error", error=reason))
        for slot in self.slots:
            if slot.job is not None:
                try:
                    self._fail(slot, reason)
                except Exception:  # noqa: BLE001 - the context may be what failed; its job still hears why
                    job, slot.job = slot.job, None
                    self._emit(job, Event("", [], "error", error=reason))

    def call(self, function: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``function`` on the engine thread between two steps (slot files touch the KV
        memory the steps use); its result or exception arrives in the future."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._wake:
            if not self.alive:
                raise EngineStoppedError(f"the engine is not running: {self.failure or 'it was shut down'}")
            self._calls.append((function, future))
            self._wake.notify()
        return future

    def _run_calls(self) -> None:
        while self._calls:
            function, future = self._calls.popleft()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function())
                except Exception as exc:  # noqa: BLE001 - the caller's to handle
                    future.set_exception(exc)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while self._running and not self.queue and not self._calls and not any(s.job for s in self.slots):
                    self._wake.wait()
                if not self._running:
                    return
            self._run_calls()
            with self._wake:
                admitted = self._take_queued()
            for slot, job in admitted:
                self._admit(slot, job)
            if admitted and self.cache_idle_slots:
                self._stash_idle()
            started = time.monotonic()
            self._step()
            self.stats.busy_seconds += time.monotonic() - started

    def _take_queued(self) -> list[tuple[_Slot, Job]]:
        """Pair queued jobs with idle slots (under the lock; the work happens outside it)."""
        idle = [s for s in self.slots if s.job is None]
        taken, waiting = [], collections.deque()
        while self.queue and idle:
            job = self.queue.popleft()
            if job.cancelled.is_set():
                continue
            if job.slot_id >= 0:  # it waits for its own slot
                candidates = [s for s in idle if s.seq_id == job.slot_id]
                if not candidates:
                    waiting.append(job)
                    continue
            slot = max(candidates if job.slot_id >= 0 else idle, key=lambda s: s.affinity(job.prompt_tokens))
            idle.remove(slot)
            slot.job = job  # reserved
            taken.append((slot, job))
        self.queue.extendleft(reversed(waiting))
        return taken

    def _admit(self, slot: _Slot, job: Job) -> None:
        try:
            prompt = job.prompt_tokens
            if slot.loras != job.loras:  # KV computed with other adapters is of no use to this job
                self.context.kv_remove(slot.seq_id)
                slot.tokens, slot.loras = [], job.loras
            slot.last_decode = 0
            # the prompt cache holds states computed without adapters
            if self.prompt_cache is not None and job.cache_prompt and not job.request.media and not job.loras:
                self._swap_cached(slot, prompt)
            reuse = reusable_prefix(slot.tokens, prompt, job.request.media) if job.cache_prompt else 0
            if not self.context.kv_remove(slot.seq_id, reuse, -1):  # memory that cannot cut a sequence (recurrent)
                self.context.kv_remove(slot.seq_id)
                reuse = 0
            slot.tokens = slot.tokens[:reuse]
            slot.pending, slot.next_token = prompt[reuse:], None
            slot.generation = job.generation or Generation(self.model, job.request, job.seed, job.max_tokens,
                                                           self.n_ctx)
            slot.generation.start_clock()
            if slot.drafter is not None:
                slot.policy = DraftPolicy(self.max_draft, self.decode_cost, self.min_draft)
                slot.generation.speculates_with(slot.policy)
            slot.generation.prompt_evaluated = len(slot.pending)
            self.stats.prompt_tokens += len(slot.pending)
            self.stats.prompt_tokens_cached += reuse
            slot.cached = reuse
            if job.progress:
                self._report_progress(slot)
        except Exception as exc:  # noqa: BLE001 - this job's own failure (a grammar llama.cpp refused...)
            self._fail(slot, f"{type(exc).__name__}: {exc}")
            return
        if job.max_tokens <= 0:  # nothing to generate: the prompt is not even evaluated
            self._finish(slot, slot.generation.finish("length"))

    def _stash_idle(self) -> None:
        """A request started: keep the idle slots' prompts in the prompt cache and, when the slots
        share one KV cache, free theirs for the running ones (llama-server's --cache-idle-slots).
        States computed with adapters or media are not the cache's to keep."""
        for slot in self.slots:
            if slot.job is not None or not slot.tokens or slot.loras or min(slot.tokens) < 0:
                continue
            tokens = tuple(slot.tokens)
            if tokens != slot.stashed:
                self.prompt_cache.put(LlamaState(tokens, self.context.state_bytes(slot.seq_id), 0))
                slot.stashed = tokens
            if self.kv_unified:
                self.context.kv_remove(slot.seq_id)
                slot.tokens = []

    def _swap_cached(self, slot: _Slot, prompt: list[int]) -> None:
        """Keep the slot's prefix in the prompt cache before this prompt cuts it, and start from a
        cached state instead when one covers more of the prompt."""
        shared = common_prefix(slot.tokens, prompt)
        if shared < len(slot.tokens):
            self.prompt_cache.put(LlamaState(tuple(slot.tokens), self.context.state_bytes(slot.seq_id), 0))
        best = self.prompt_cache.best_match(tuple(prompt))
        if best is not None and common_prefix(best.tokens, prompt) > shared:
            self.context.kv_remove(slot.seq_id)
            slot.tokens = []
            self.context.load_state_bytes(best.state, slot.seq_id)
            slot.tokens = list(best.tokens)

    def _step(self) -> None:
        """One step: ready the slots, put their work in one batch, decode it, and sample every
        slot the decode gave logits for."""
        self._release_cancelled()
        self._evaluate_due_media()
        self._make_room()
        loras = self._lora_turn()  # slots with other adapters wait for a later step
        added = self._fill_batch(loras)
        if self._batch.n_tokens and self._decode(added, loras):
            self._sample(added)

    def _release_cancelled(self) -> None:
        for slot in self.slots:
            if slot.job is not None and slot.job.cancelled.is_set():
                slot.release()

    def _evaluate_due_media(self) -> None:
        for slot in self.slots:
            if slot.job is not None and slot.pending and slot.job.request.media:
                self._evaluate_media(slot)

    def _make_room(self) -> None:
        """A generating slot whose sequence fills its context shifts it, or ends."""
        for slot in self.slots:
            if slot.job is not None and slot.next_token is not None and len(slot.tokens) >= self.n_ctx:
                try:
                    self._shift(slot)
                except Exception as exc:  # noqa: BLE001 - e.g. a memory that cannot shift: this job ends, not the engine
                    self._fail(slot, f"context shift failed: {type(exc).__name__}: {exc}")

    def _fill_batch(self, loras: AppliedLoras) -> list[_Added]:
        """This step's batch: the generating slots' next tokens (and guesses after them) first,
        then as much pending prompt as fits, the oldest job's first; only slots using ``loras``."""
        batch = self._batch
        batch.clear()
        for slot in self.slots:
            slot.output_index = -1
        added: list[_Added] = []
        generating = [s for s in self.slots if s.job is not None and s.next_token is not None and s.job.loras == loras]
        for slot in generating:
            try:
                slot.draft = self._guess(slot, len(generating), self.n_batch - batch.n_tokens - len(generating))
            except Exception:  # noqa: BLE001 - guesses only save time: a drafter that failed makes none
                logger.exception("drafting failed; going on without guesses")
                slot.draft = []
            tokens = [slot.next_token] + slot.draft
            slot.output_index = batch.n_tokens
            if slot.draft:
                batch.add_sequence(tokens, start_pos=len(slot.tokens), seq_id=slot.seq_id, output=True)
            else:
                batch.add(slot.next_token, len(slot.tokens), (slot.seq_id,), True)
            added.append((slot, tokens, True))
            slot.tokens.extend(tokens)
            slot.next_token = None
        for slot in sorted((s for s in self.slots if s.job is not None and s.pending and s.job.loras == loras),
                           key=lambda s: s.job.submitted):
            room = self.n_batch - batch.n_tokens
            if room <= 0:
                break
            take = min(room, text_ahead(slot.pending, len(slot.tokens), slot.job.request.media))  # text only
            chunk, slot.pending = slot.pending[:take], slot.pending[take:]
            batch.add_sequence(chunk, start_pos=len(slot.tokens), seq_id=slot.seq_id,
                               output="last" if not slot.pending else False)
            added.append((slot, chunk, False))
            slot.tokens.extend(chunk)
            if not slot.pending:
                slot.output_index = batch.n_tokens - 1
        return added

    def _decode(self, added: list[_Added], loras: AppliedLoras) -> bool:
        """Decode the batch; False if it could not be stored. A full KV cache first drops the idle
        slots' cached prefixes, then ends the job holding the most of it; a failed decode ends
        the jobs that were in the batch."""
        while True:
            try:
                self._use_loras(loras)
                started = time.perf_counter()
                self.context.decode(self._batch)
                self.decode_cost.observe(self._batch.n_tokens, time.perf_counter() - started)
                self.stats.decodes += 1
                self.stats.busy_slot_decodes += len(added)
                for slot, _, _ in added:
                    slot.last_decode = self.stats.decodes
                return True
            except KVCacheFullError:  # nothing of the batch was stored
                if self._drop_idle_caches():
                    continue
                self._undo(added)
                self._end_largest()
                return False
            except Exception as exc:  # noqa: BLE001 - a failed decode ends the jobs that were in it
                for slot, _, _ in added:
                    self._fail(slot, f"decoding failed: {exc}")
                return False

    def _sample(self, added: list[_Added]) -> None:
        """After a decode: report the prompts' progress, and sample each slot that has logits."""
        for slot, _, generated in added:
            if not generated and slot.job is not None and slot.job.progress:
                self._report_progress(slot)
        for slot in self.slots:
            if slot.job is not None and slot.output_index >= 0:
                try:
                    self._advance(slot)
                except Exception as exc:  # noqa: BLE001 - sampling failed for this job alone
                    self._fail(slot, f"{type(exc).__name__}: {exc}")

    def _lora_turn(self) -> AppliedLoras:
        """The adapters of this step's batch (one decode applies one set): those of the slot with
        work that has waited longest for a decode, so that every set gets its turn."""
        ready = [s for s in self.slots if s.job is not None and (s.next_token is not None or s.pending)]
        if not ready:
            return self._loras
        return min(ready, key=lambda s: (s.last_decode, s.job.submitted)).job.loras

    def _use_loras(self, loras: AppliedLoras) -> None:
        if loras != self._loras:
            self.context.set_loras(dict(loras))
            self._loras = loras

    def _report_progress(self, slot: _Slot) -> None:
        prompt = len(slot.job.prompt_tokens)
        elapsed = 1e3 * (time.perf_counter() - slot.generation.started)
        processed = prompt - len(slot.pending)
        done = processed - slot.cached  # evaluated so far; the first report comes before any
        ms = elapsed if done else 0.0
        # llama-server sends the prompt's timings so far with each report (nothing predicted yet)
        timings = {"cache_n": slot.cached, "prompt_n": done, "prompt_ms": ms,
                   "prompt_per_token_ms": ms / done if done else 0.0,
                   "prompt_per_second": 1e3 * done / ms if ms > 0 else 0.0,
                   "predicted_n": 0, "predicted_ms": 0.0, "predicted_per_token_ms": 0.0, "predicted_per_second": 0.0}
        self._emit(slot.job, Event("", [], progress={"total": prompt, "cache": slot.cached, "processed": processed,
                                                     "time_ms": elapsed}, timings=timings))

    def _shift(self, slot: _Slot) -> None:
        """The slot's sequence fills the context: with context shifting, drop the older half after
        the kept tokens and move the rest down (llama.cpp's context shift); else it ends here."""
        start, end = discarded_by_shift(slot.tokens, slot.job.keep) if self.context_shift else (0, 0)
        if start >= end:  # no shifting, or only an image could go
            slot.generation.truncated = True
            self._finish(slot, slot.generation.finish("length"))
            return
        self.context.kv_remove(slot.seq_id, start, end)
        self.context.kv_shift(slot.seq_id, end, len(slot.tokens), start - end)
        del slot.tokens[start:end]
        slot.generation.truncated = True

    def _guess(self, slot: _Slot, batch: int, room: int) -> list[int]:
        """The drafter's guesses to verify after the slot's next token, as many as pay off."""
        if slot.drafter is None or slot.policy is None or slot.job.request.media:  # drafters read text only
            return []
        k = slot.policy.draft_length(batch, min(room, self.n_ctx - len(slot.tokens) - 2))
        if not k:
            return []
        started = time.perf_counter()
        draft = guess(slot.drafter, slot.tokens + [slot.next_token], k)
        slot.policy.drafted(len(draft), time.perf_counter() - started)
        return draft

    def _evaluate_media(self, slot: _Slot) -> None:
        """Images or audio at the head of a slot's pending prompt: each is evaluated on its own
        through the projector (a batch holds text only); the text after it then goes on as usual."""
        media = slot.job.request.media
        while slot.pending and len(slot.tokens) in media:
            chunk = media[len(slot.tokens)]
            try:
                self._use_loras(slot.job.loras)
                chunk.evaluate(self.context, len(slot.tokens), slot.seq_id)
            except KVCacheFullError:
                self.context.kv_remove(slot.seq_id, len(slot.tokens), -1)  # a part may have gone in
                if self._drop_idle_caches():
                    continue
                self._fail(slot, f"the KV cache has no room for the {chunk.kind} ({chunk.n_tokens} tokens)")
                return
            except Exception as exc:  # noqa: BLE001 - this job's own image failed
                self._fail(slot, f"{type(exc).__name__}: {exc}")
                return
            slot.tokens.extend(slot.pending[:chunk.n_pos])
            del slot.pending[:chunk.n_pos]

    def _advance(self, slot: _Slot) -> None:
        """Sample the slot's next token; with guesses in the batch, go on through their rows while
        the sampler agrees with them, and forget the KV of the guesses it rejected."""
        generation, draft = slot.generation, slot.draft
        position = len(slot.tokens) - len(draft)  # where the KV stops holding verified tokens
        accepted = 0
        before = generation.generated
        for i in range(len(draft) + 1):
            event = generation.advance(self.context, slot.output_index + i)
            if generation.finish_reason is not None:
                break
            if event is not None:
                if slot.job.timings_each:
                    event.timings = generation.timings
                self._emit(slot.job, event)
            if i == len(draft) or generation.last_token != draft[i]:
                break
            accepted += 1
        self.stats.generated_tokens += generation.generated - before
        slot.draft = []
        if slot.policy is not None:
            slot.policy.verified(len(draft), accepted)
        if draft:
            self.stats.drafts += 1
            self.stats.drafted_tokens += len(draft)
            self.stats.accepted_tokens += accepted
        self.stats.most_tokens = max(self.stats.most_tokens, len(slot.tokens))
        if position + accepted < len(slot.tokens):  # rejected guesses
            self.context.kv_remove(slot.seq_id, position + accepted, -1)
            del slot.tokens[position + accepted:]
        if generation.finish_reason is not None:
            self._finish(slot, event)
        else:
            slot.next_token = generation.last_token

    def _finish(self, slot: _Slot, event: Event) -> None:
        job = slot.job
        self.stats.finished(event)
        slot.release()
        self._emit(job, event)

    @staticmethod
    def _emit(job: Job, event: Event) -> None:
        """Hand an event to the job's owner; one that cannot take it any more has gone away."""
        try:
            job.emit(event)
        except Exception:  # noqa: BLE001 - e.g. its event loop closed; never the engine's problem
            job.cancelled.set()

    def _fail(self, slot: _Slot, message: str) -> None:
        """End the slot's job with an error; its KV may be inconsistent, so it goes too."""
        job = slot.job
        self.context.kv_remove(slot.seq_id)
        slot.tokens = []
        slot.release()
        self.stats.failed_requests += 1
        logger.warning("request failed: %s", message)
        if job is not None:
            self._emit(job, Event("", [], "error", error=message))

    def _drop_idle_caches(self) -> bool:
        """Free the KV of idle slots' cached prefixes; True if that freed anything."""
        freed = False
        for slot in self.slots:
            if slot.job is None and slot.tokens:
                self.context.kv_remove(slot.seq_id)
                slot.tokens = []
                freed = True
        return freed

    @staticmethod
    def _undo(added: list[_Added]) -> None:
        """Take back what this step put in the batch (it was not stored)."""
        for slot, tokens, generated in added:
            del slot.tokens[len(slot.tokens) - len(tokens):]
            if generated:
                slot.next_token, slot.draft = tokens[0], []
            else:
                slot.pending = tokens + slot.pending
            slot.output_index = -1

    def _end_largest(self) -> None:
        """The shared KV cache is full with only active requests: end the one holding the most
        of it with an error that says so (as llama-server does; a reply cut short is not one
        that reached its limit); the others go on."""
        victim = max((s for s in self.slots if s.job is not None), key=lambda s: len(s.tokens))
        self._fail(victim, f"the context size has been exceeded: the KV cache the {len(self.slots)} slots share is "
                           f"full ({self.context.n_ctx} tokens)")
