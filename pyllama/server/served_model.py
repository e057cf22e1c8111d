"""One served model: its Model (loaded once), engine, chat template and embedding context, and
the steps between a validated request and the engine's events: prompts tokenized, a chat
planned, engine jobs made and run, inputs embedded. What a request samples with is
server/sampling.py's; how the engine's events reach the event loop, server/inbox.py's.

Everything slow (tokenizing, rendering a template, compiling a grammar) runs in a worker
thread, never on the event loop; the engine runs in its own thread. Every failure a request
can cause is a :class:`RequestError` naming the field.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from ..chat import ChatPlan, chat_template, plan_chat
from ..chat.media import MediaReader, base64_bytes
from ..context import Context
from ..embedding import embed
from ..enums import GGMLType, PoolingType
from ..errors import EngineStoppedError, LlamaError, MediaError, MediaTooLargeError, QueueFullError
from ..generation.cache import RAMCache
from ..generation.generator import Event, Generation, Request, infill_prompt
from ..generation.speculative import Drafter, DraftModel, PromptLookupDecoding
from ..model import Model
from ..multimodal import MediaPrompt, Projector, default_marker
from .engine import Engine
from .job import Job
from .errors import RequestError
from .inbox import Inbox
from .lora_adapters import Adapters
from .media_fetch import fetch_media, read_media_file
from .ranking import Ranker
from .sampling import Sampling, grammar_of, response_format
from .schemas.common import GenerationFields, JSONPrompt
from .schemas.openai import ChatRequest, PromptContent
from .settings import Settings


class ServedModel:
    """One model the server serves, loaded and ready for requests (the pool loads and unloads it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model = Model(settings.model, **settings.model_options())
        self.adapters = Adapters(self.model, settings.loras, apply=not settings.lora_init_without_apply)
        self.vocab = self.model.vocab
        self.template = chat_template(self.model, settings.chat_format, settings.jinja)
        n_ctx = settings.n_ctx or self.model.n_ctx_train
        threads = {"n_threads": settings.n_threads, "n_threads_batch": settings.n_threads_batch}
        with_draft = settings.model_draft and not (settings.spec_type or "").startswith(("ngram", "none"))
        self.draft_model = Model(settings.model_draft, n_gpu_layers=settings.n_gpu_layers) if with_draft else None
        self.engine = Engine(self.model, n_ctx=n_ctx, n_parallel=settings.n_parallel, n_batch=settings.n_batch,
                             n_ubatch=settings.n_ubatch, max_queue=settings.max_queue,
                             context_shift=settings.context_shift, flash_attn=settings.flash_attn,
                             drafters=self._drafters(n_ctx), max_draft=settings.draft_max,
                             min_draft=settings.draft_min, kv_unified=settings.kv_unified,
                             prompt_cache=RAMCache(settings.cache_ram_mib << 20) if settings.cache_ram_mib else None,
                             type_k=_cache_type(settings.cache_type_k), type_v=_cache_type(settings.cache_type_v),
                             swa_full=settings.swa_full, cache_idle_slots=settings.cache_idle_slots, **threads)
        self.sampling = Sampling(self.vocab, self.engine.n_ctx, settings.temperature, settings.seed)
        self.embedder: Context | None = None
        if settings.embedding:  # a second context on the same weights, not a second copy of them
            self.embedder = Context(self.model, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, embeddings=True,
                                    pooling_type=PoolingType[settings.pooling.upper()] if settings.pooling else None,
                                    flash_attn=settings.flash_attn, **threads)
        self._embed_lock = threading.Lock()
        self.ranker = Ranker.of(self.model, settings, self.embedder, self._embed_lock)
        self.projector: Projector | None = None  # images (and audio) in chat messages, with --mmproj
        self.media: MediaReader | None = None
        if settings.mmproj:
            self.projector = Projector(self.model, settings.mmproj, n_threads=settings.n_threads,
                                       use_gpu=self.model.uses_gpu)
            self.media = MediaReader(self.projector, fetch=fetch_media if settings.allow_remote_media else None,
                                     read_file=functools.partial(read_media_file, settings.media_path),
                                     max_bytes=settings.media_max_bytes)

    def _drafters(self, n_ctx: int) -> list[Drafter]:
        """One per slot: a draft model's context each, or prompt lookup (which keeps no state)."""
        if self.draft_model is not None:
            return [DraftModel(self.draft_model, num_pred_tokens=self.settings.draft_max, n_ctx=n_ctx,
                               n_threads=self.settings.n_threads) for _ in range(self.settings.n_parallel)]
        if (self.settings.spec_type or "").startswith("ngram"):
            return [PromptLookupDecoding(num_pred_tokens=self.settings.draft_max)] * self.settings.n_parallel
        return []

    @property
    def name(self) -> str:
        return self.settings.model_alias

    def close(self) -> None:
        self.engine.close()
        for slot in self.engine.slots:
            if isinstance(slot.drafter, DraftModel):
                slot.drafter.close()
        if self.draft_model is not None:
            self.draft_model.close()
        if self.ranker is not None:
            self.ranker.close()
        if self.embedder is not None:
            self.embedder.close()
        if self.projector is not None:
            self.projector.close()
        self.model.close()

    # --- prompts --------------------------------------------------------------------------
    def tokenize_prompt(self, prompt: str | Sequence[int | str], field: str = "prompt",
                        check_room: bool = True) -> list[int]:
        """Token ids of one prompt: text, token ids, or both mixed (llama.cpp)."""
        if isinstance(prompt, str):
            tokens = self.vocab.tokenize(prompt, add_special=True, parse_special=True)
        else:
            tokens, first = [], True
            for part in prompt:
                if isinstance(part, str):
                    tokens += self.vocab.tokenize(part, add_special=first, parse_special=True)
                else:
                    if part >= self.vocab.n_tokens:
                        raise RequestError(400, f"'{field}' has token id {part}; the vocabulary has "
                                                f"{self.vocab.n_tokens} tokens", field)
                    tokens.append(part)
                first = False
        if not tokens:
            raise RequestError(400, f"'{field}' is empty", field)
        if check_room:
            self._check_room(tokens, field)
        return tokens

    def tokenize_json_prompt(self, prompt: JSONPrompt, field: str) -> list[int] | MediaPrompt:
        """llama.cpp's prompt object: its text, with its media (base64) where the media marker stands."""
        if not prompt.multimodal_data:
            return self.tokenize_prompt(prompt.prompt_string, field)
        if self.projector is None:
            raise RequestError(400, f"'{field}.multimodal_data': this server has no multimodal projector (--mmproj)",
                               f"{field}.multimodal_data")
        texts = prompt.prompt_string.split(default_marker())
        if len(texts) - 1 != len(prompt.multimodal_data):
            raise RequestError(400, f"'{field}' has {len(texts) - 1} media markers ({default_marker()}) for "
                                    f"{len(prompt.multimodal_data)} multimodal_data items", field)
        parts: list[Any] = [texts[0]]
        try:
            for i, (data, text) in enumerate(zip(prompt.multimodal_data, texts[1:])):
                where = f"{field}.multimodal_data[{i}]"
                parts += [self.projector.load(base64_bytes(data, where, "media", self.settings.media_max_bytes), what=where),
                          text]
            tokenized = self.projector.tokenize([p for p in parts if not isinstance(p, str) or p])
        except MediaTooLargeError as exc:
            raise RequestError(413, str(exc), field) from exc
        except (MediaError, ValueError, LlamaError) as exc:
            raise RequestError(400, str(exc), field) from exc
        self._check_room(tokenized.tokens, field)
        return tokenized

    def _check_room(self, tokens: Sequence[int], field: str) -> None:
        if len(tokens) >= self.engine.n_ctx:
            raise RequestError.too_long(field, f"the request exceeds the available context size: the prompt has "
                                               f"{len(tokens)} tokens and the context holds {self.engine.n_ctx}",
                                        len(tokens), self.engine.n_ctx)

    def fill_in_the_middle(self, prefix: str, suffix: str, middle: str = "",
                           files: Sequence[tuple[str, str]] = ()) -> list[int]:
        try:
            tokens = infill_prompt(self.vocab, prefix, suffix, middle, files)
        except ValueError as exc:
            raise RequestError(400, str(exc), "input_suffix") from exc
        self._check_room(tokens, "input_prefix")
        return tokens

    async def plan_chat(self, body: ChatRequest, check_room: bool = True) -> ChatPlan:
        """The prompt and constraints; ``check_room=False`` also plans one the context cannot hold
        (a client counting tokens wants the count, not an error)."""
        try:
            plan = await run_in_threadpool(plan_chat, self.template, self.vocab, media=self.media,
                                           **chat_plan_arguments(body, self.settings.thinking))
        except MediaTooLargeError as exc:
            raise RequestError(413, str(exc), "messages") from exc
        except (ValueError, TypeError, LlamaError) as exc:  # messages, tools, a template that failed
            raise RequestError(400, str(exc)) from exc
        except RecursionError as exc:  # a tool's or response_format's schema nested ~900 deep
            raise RequestError(400, "a JSON schema in the request nests too deeply") from exc
        if check_room:
            self._check_room(plan.prompt_tokens, "messages")
        return plan

    # --- llama-server's __verbose -------------------------------------------------------------
    def wants_verbose(self, body: GenerationFields) -> bool:
        return self.settings.verbose if body.verbose is None else body.verbose

    def verbose(self, request: Request, text: str) -> dict[str, Any]:
        """llama-server's ``__verbose`` (with -v or the request's ``verbose``): what the model
        really saw and wrote."""
        prompt = self.vocab.detokenize(request.prompt_tokens, unparse_special=True)
        return {"prompt": prompt, "n_prompt_tokens": len(request.prompt_tokens), "content": text}

    # --- jobs -------------------------------------------------------------------------------
    def max_tokens(self, body: GenerationFields, prompt_tokens: int) -> int:
        """How many tokens a job may generate: the request's limit within the room left (with
        context shifting, the limit alone; a request without one then gets a context's worth).
        A limit past the room is cut to it, as llama-server and llama-cpp-python do: a chat UI
        that sends a fixed max_tokens keeps working while its history grows, and the result
        says ``truncated``."""
        room = self.engine.n_ctx - prompt_tokens
        wanted = next((limit for limit in (body.n_predict, body.max_tokens, body.max_completion_tokens)
                       if limit is not None), self.settings.n_predict)
        if wanted is None or wanted == -1:
            return self.engine.n_ctx if self.engine.context_shift else room
        return wanted if self.engine.context_shift else min(wanted, room)

    def jobs(self, requests: Sequence[Request], body: GenerationFields) -> list[Job]:
        """One job per request and choice (``n``), in OpenAI's order: prompt index * n + choice.
        Their sampler chains are built here, in the caller's worker thread, so compiling a
        grammar never holds up the engine, and a grammar llama.cpp refuses is a 400."""
        jobs = []
        loras = self.adapters.active(body.lora)
        for request in requests:
            prompt = len(request.prompt_tokens)
            limit = self.max_tokens(body, prompt)
            keep = prompt if body.n_keep == -1 else min(body.n_keep + self.vocab.add_bos, prompt)
            for j in range(body.n):
                seed = request.params.seed
                if seed is None or seed == 0xFFFFFFFF:  # llama.cpp's "random seed"
                    seed = (time.time_ns() + j) & 0xFFFFFFFF
                elif j:  # n > 1 with a fixed seed: different, reproducible choices
                    seed = (seed + j) & 0xFFFFFFFF
                try:
                    generation = Generation(self.model, request, seed, limit, self.engine.n_ctx)
                    room = self.engine.n_ctx - prompt
                    generation.limited_by_context = limit == room and not self.engine.context_shift
                except (ValueError, LlamaError) as exc:
                    field = "grammar" if request.params.grammar else None
                    raise RequestError(400, f"invalid grammar: {exc}" if field else str(exc), field) from exc
                jobs.append(Job(request, limit, seed, keep=keep, cache_prompt=body.cache_prompt, loras=loras,
                                slot_id=body.id_slot, generation=generation,
                                progress=body.stream and body.return_progress,
                                timings_each=body.stream and body.timings_per_token))
        return jobs

    async def run(self, jobs: Sequence[Job], live: bool = True) -> AsyncIterator[tuple[int, Event]]:
        """Submit the jobs and yield ``(job index, event)`` as they come; a job that failed raises
        RequestError carrying the text it had generated (``generated_text``: a full shared KV
        cache or a shutdown ends a reply midway, and what it wrote is not lost). Leaving early
        cancels them all. Not ``live`` (a reply sent whole), the events are handed over when a
        job ends instead of token by token."""
        inbox = Inbox(asyncio.get_running_loop(), live)
        for index, job in enumerate(jobs):
            job.emit = inbox.emitter(index)
        try:
            for job in jobs:
                self.engine.submit(job)
        except (QueueFullError, EngineStoppedError, ValueError) as exc:
            self.engine.cancel(jobs)  # those already queued go with the rest
            if isinstance(exc, QueueFullError):
                raise RequestError(503, f"the server is busy ({exc}); retry shortly",
                                   headers={"Retry-After": "1"}) from exc
            raise RequestError(503 if isinstance(exc, EngineStoppedError) else 400, str(exc)) from exc
        open_jobs = len(jobs)
        texts: list[list[str]] = [[] for _ in jobs]
        try:
            while open_jobs:
                for index, event in await inbox.take():
                    if event.error is not None:
                        generated = "".join(texts[index])
                        if not self.engine.alive:  # the engine stopped under this job: the server, not the request
                            raise RequestError(503, f"the server cannot generate now: {event.error}",
                                               generated_text=generated)
                        raise RequestError(500, f"generation failed: {event.error}", generated_text=generated)
                    texts[index].append(event.text)
                    if event.finish_reason is not None:
                        open_jobs -= 1
                    yield index, event
        finally:
            self.engine.cancel(jobs)  # a client that went away frees its slots and queue places

    # --- embeddings ---------------------------------------------------------------------------
    def embed(self, raw: Any, norm: float = 2) -> tuple[list, int]:
        """Embeddings of an embedding request's ``input``: one prompt (text, ids mixed with text,
        llama.cpp's input object) or a list of them."""
        if self.embedder is None:
            raise RequestError(400, "this server was started without --embedding", code="embeddings_disabled")
        inputs = _embedding_inputs(raw)
        prompts = []
        for i, item in enumerate(inputs):
            if isinstance(item, JSONPrompt):
                if item.multimodal_data:
                    raise RequestError(400, f"input[{i}].multimodal_data: embeddings take text only", "input")
                item = item.prompt_string
            elif isinstance(item, PromptContent):
                item = "".join(part.text for part in item.content)
            field = f"input[{i}]" if len(inputs) > 1 else "input"
            prompts.append(self.vocab.tokenize(item, add_special=True, parse_special=True) if isinstance(item, str)
                           else self.tokenize_prompt(item, field, check_room=False))
        with self._embed_lock:
            start = time.perf_counter()
            try:
                vectors, count = embed(self.embedder, prompts, normalize=norm, truncate=False)
            except (ValueError, LlamaError) as exc:
                raise RequestError(400, str(exc), "input") from exc
            self.engine.stats.embedded(count, len(prompts), time.perf_counter() - start)
            return vectors, count


def _embedding_inputs(raw: Any) -> list[Any]:
    if not isinstance(raw, list):
        return [raw]
    if any(isinstance(part, int) for part in raw) and all(isinstance(part, (int, str)) for part in raw):
        return [raw]  # one prompt of token ids, perhaps with text pieces
    return list(raw)


# --reasoning: llama.cpp lets a template think unless told not to
_THINKING = {"on": {"enable_thinking": True}, "off": {"enable_thinking": False}, "auto": {"enable_thinking": True}}


def chat_plan_arguments(body: ChatRequest, thinking: str) -> dict[str, Any]:
    """:func:`~pyllama.chat.plan_chat`'s arguments for a chat request, but the template, the
    vocabulary and the media reader (the Ray ingress renders with the same ones)."""
    choice = body.tool_choice.model_dump() if hasattr(body.tool_choice, "model_dump") else body.tool_choice
    call = body.function_call.model_dump() if hasattr(body.function_call, "model_dump") else body.function_call
    return {"messages": [m.model_dump(exclude_none=True, by_alias=True) for m in body.messages],
            "tools": [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None,
            "tool_choice": choice,
            "functions": [f.model_dump(exclude_none=True) for f in body.functions] if body.functions else None,
            "function_call": call, "response_format": response_format(body), "stop": body.stop,
            "grammar": grammar_of(body), "reasoning": body.reasoning,
            "add_generation_prompt": body.add_generation_prompt is not False,
            "continue_final_message": body.continue_final_message,
            "template_kwargs": {**_THINKING[thinking], **(body.chat_template_kwargs or {})}}


def _cache_type(name: str | None) -> GGMLType | None:
    """``-ctk q8_0`` -> GGMLType.Q8_0 (settings checked the name)."""
    return None if name is None else GGMLType[name.upper()]
