"""One served model: its Model (loaded once), engine, chat template and embedding context, and
the steps between a validated request and the engine's events.

Everything slow (tokenizing, rendering a template, compiling a grammar) runs in a worker
thread, never on the event loop; the engine runs in its own thread. Every failure a request
can cause is a :class:`RequestError` naming the field.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from ..chat import ChatPlan, chat_template, plan_chat, schema_to_gbnf
from ..chat.completion import response_grammar
from ..chat.json_schema import SchemaError
from ..chat.media import MediaReader, base64_bytes
from ..context import Context
from ..embedding import embed
from ..enums import GGMLType, PoolingType
from ..errors import LlamaError, MediaError, MediaTooLargeError
from ..generation.cache import RAMCache
from ..generation.core import Event, Generation, Request, infill_prompt
from ..generation.params import SamplingParams
from ..generation.speculative import Drafter, DraftModel, PromptLookupDecoding
from ..model import Model
from ..multimodal import MediaPrompt, Projector, default_marker
from .engine import Engine, EngineStopped, Job, QueueFull
from .errors import RequestError
from .grammar_limits import grammar_problem
from .lora_adapters import Adapters
from .media_fetch import fetch_media
from .ranking import Ranker
from .schemas import ChatRequest, GenerationFields, JSONPrompt, PromptContent, PromptString
from .settings import Settings

# request fields that map onto SamplingParams as they are, and those whose name differs
_SAMPLING = ("temperature", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty", "frequency_penalty",
             "presence_penalty", "mirostat_tau", "mirostat_eta", "dynatemp_range", "dynatemp_exponent",
             "top_n_sigma", "xtc_probability", "xtc_threshold", "dry_multiplier", "dry_base", "dry_allowed_length",
             "dry_penalty_last_n", "min_keep", "seed")
_RENAMED = {"repeat_last_n": "penalty_last_n", "penalty_last_n": "penalty_last_n", "mirostat": "mirostat_mode",
            "mirostat_mode": "mirostat_mode"}


class ModelService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model = Model(settings.model, **settings.model_options())
        self.adapters = Adapters(self.model, settings.loras, apply=not settings.lora_init_without_apply)
        self.vocab = self.model.vocab
        self.eog_tokens = [t for t in range(self.vocab.n_tokens) if self.vocab.is_eog(t)]
        self.template = chat_template(self.model, settings.chat_format)
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
                             swa_full=settings.swa_full, **threads)
        self.embedder: Context | None = None
        if settings.embedding:  # a second context on the same weights, not a second copy of them
            self.embedder = Context(self.model, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, embeddings=True,
                                    pooling_type=PoolingType[settings.pooling.upper()] if settings.pooling else None,
                                    **threads)
        self._embed_lock = threading.Lock()
        self.ranker = Ranker.of(self.model, settings, self.embedder, self._embed_lock)
        self.projector: Projector | None = None  # images (and audio) in chat messages, with --mmproj
        self.media: MediaReader | None = None
        if settings.mmproj:
            self.projector = Projector(self.model, settings.mmproj, n_threads=settings.n_threads,
                                       use_gpu=settings.n_gpu_layers != 0)
            self.media = MediaReader(self.projector, fetch=fetch_media if settings.allow_remote_media else None,
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

    def tokenize_json_prompt(self, prompt: JSONPrompt | PromptString, field: str) -> list[int] | MediaPrompt:
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
        messages = [m.model_dump(exclude_none=True, by_alias=True) for m in body.messages]
        tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
        functions = [f.model_dump(exclude_none=True) for f in body.functions] if body.functions else None
        choice = body.tool_choice.model_dump() if hasattr(body.tool_choice, "model_dump") else body.tool_choice
        call = body.function_call.model_dump() if hasattr(body.function_call, "model_dump") else body.function_call
        try:
            plan = await run_in_threadpool(
                plan_chat, self.template, self.vocab, messages, tools=tools, tool_choice=choice, functions=functions,
                function_call=call, response_format=_response_format(body), stop=body.stop,
                grammar=self._grammar_of(body), reasoning=body.reasoning, media=self.media,
                add_generation_prompt=body.add_generation_prompt is not False,
                continue_final_message=body.continue_final_message,
                template_kwargs={**_THINKING[self.settings.thinking], **(body.chat_template_kwargs or {})})
        except MediaTooLargeError as exc:
            raise RequestError(413, str(exc), "messages") from exc
        except (ValueError, TypeError, LlamaError) as exc:  # messages, tools, a template that failed
            raise RequestError(400, str(exc)) from exc
        except RecursionError as exc:  # a tool's or response_format's schema nested ~900 deep
            raise RequestError(400, "a JSON schema in the request nests too deeply") from exc
        if check_room:
            self._check_room(plan.prompt_tokens, "messages")
        return plan

    # --- constraints and sampling -----------------------------------------------------------
    @staticmethod
    def _grammar_of(body: GenerationFields) -> str | None:
        """``json_schema`` (llama.cpp) or ``grammar``; response_format is planned with the chat."""
        if body.json_schema is not None:
            try:
                return schema_to_gbnf(body.json_schema)
            except SchemaError as exc:
                raise RequestError(400, f"'json_schema': {exc}", "json_schema") from exc
            except RecursionError as exc:  # the converter recurses once per level of the schema
                raise RequestError(400, "'json_schema' nests too deeply", "json_schema") from exc
        return body.grammar

    def constraint(self, body: GenerationFields) -> str | None:
        """The grammar a completion request asks for (grammar, json_schema or response_format)."""
        if body.response_format is not None and body.response_format.type != "text":
            try:
                return response_grammar(_response_format(body))
            except ValueError as exc:
                raise RequestError(400, str(exc), "response_format") from exc
            except RecursionError as exc:
                raise RequestError(400, "'response_format' has a schema that nests too deeply",
                                   "response_format") from exc
        return self._grammar_of(body)

    @staticmethod
    def check_grammar(grammar: str | None) -> None:
        """Refuse, before llama.cpp parses it, a grammar that would overflow its parser's stack
        (it is compiled, and refused if invalid, with the request's jobs)."""
        problem = grammar_problem(grammar) if grammar else None
        if problem is not None:
            raise RequestError(400, problem, "grammar")

    def sampling(self, body: GenerationFields, grammar: str | None, triggers: Sequence[str] = ()) -> SamplingParams:
        defaults = {"temperature": self.settings.temperature, "seed": self.settings.seed}  # the server's --temp, -s
        fields: dict[str, Any] = {name: value for name, value in defaults.items() if value is not None}
        fields.update({name: getattr(body, name) for name in _SAMPLING if getattr(body, name) is not None})
        for name, target in _RENAMED.items():
            if getattr(body, name) is not None:
                fields[target] = getattr(body, name)
        for window in ("penalty_last_n", "dry_penalty_last_n"):
            # llama.cpp allocates a ring buffer of the window's size when the engine admits the job:
            # 2**31-1 froze every stream for a minute. A window wider than the context is the context.
            if fields.get(window, -1) > self.engine.n_ctx:
                fields[window] = self.engine.n_ctx
        if body.dry_sequence_breakers is not None:
            fields["dry_sequence_breakers"] = tuple(body.dry_sequence_breakers)
        bias = self._logit_bias(body)
        if body.ignore_eos:  # as llama.cpp: the end-of-generation tokens can never be sampled
            bias.update(dict.fromkeys(self.eog_tokens, float("-inf")))
        fields["logit_bias"] = bias or None
        try:
            return SamplingParams(grammar=grammar, grammar_triggers=tuple(triggers), **fields)
        except ValueError as exc:
            raise RequestError(400, str(exc), str(exc).split(" ", 1)[0]) from exc

    def _logit_bias(self, body: GenerationFields) -> dict[int, float]:
        """OpenAI's {"id": bias}, or llama.cpp's [[id or text, bias]] and text keys; false bans."""
        raw = body.logit_bias
        if not raw:
            return {}
        pairs = list(raw.items()) if isinstance(raw, dict) else [tuple(pair) for pair in raw]
        bias: dict[int, float] = {}
        for key, value in pairs:
            if value is True or isinstance(value, str):
                raise RequestError(400, f"'logit_bias': the bias for {key!r} must be a number or false", "logit_bias")
            amount = float("-inf") if value is False else float(value)
            if isinstance(key, str) and key.lstrip("-").isdigit():
                key = int(key)
            if isinstance(key, bool) or isinstance(key, float):
                raise RequestError(400, f"'logit_bias': {key!r} is not a token id or text", "logit_bias")
            ids = [key] if isinstance(key, int) else self.vocab.tokenize(key, add_special=False, parse_special=False)
            for token in ids:
                if not 0 <= token < self.vocab.n_tokens:
                    raise RequestError(400, f"'logit_bias': token ids must be in 0..{self.vocab.n_tokens - 1}, "
                                            f"got {token}", "logit_bias")
                bias[token] = amount
        return bias

    def default_params(self) -> dict[str, Any]:
        """What a request that sets nothing generates with (llama-server's /props)."""
        defaults = SamplingParams()
        shown = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)
                 if f.name not in ("logit_bias", "grammar", "grammar_triggers")}
        shown["dry_sequence_breakers"] = list(defaults.dry_sequence_breakers)
        shown.update(temperature=self.settings.temperature if self.settings.temperature is not None
                     else defaults.temperature, seed=self.settings.seed if self.settings.seed is not None else -1,
                     n_predict=self.settings.n_predict if self.settings.n_predict is not None else -1)
        return shown

    def generation_settings(self, request: Request, limit: int) -> dict[str, Any]:
        """The settings a job ran with, as llama-server reports them (``generation_settings``)."""
        params = request.params
        shown: dict[str, Any] = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)
                                 if f.name not in ("logit_bias", "grammar_triggers", "dry_sequence_breakers")}
        shown.update(n_predict=limit, n_ctx=self.engine.n_ctx, stop=list(request.stops), n_probs=request.logprobs or 0,
                     dry_sequence_breakers=list(params.dry_sequence_breakers), grammar=params.grammar or "",
                     logit_bias=[{"token": t, "bias": b if b != float("-inf") else None}  # JSON has no -inf
                                 for t, b in (params.logit_bias or {}).items()])
        return shown

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
        wanted = next((getattr(body, f) for f in ("n_predict", "max_tokens", "max_completion_tokens")
                       if getattr(body, f) is not None), self.settings.n_predict)
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
        inbox = _Inbox(asyncio.get_running_loop(), live)
        for index, job in enumerate(jobs):
            job.emit = inbox.emitter(index)
        try:
            for job in jobs:
                self.engine.submit(job)
        except (QueueFull, EngineStopped, ValueError) as exc:
            self.engine.cancel(jobs)  # those already queued go with the rest
            if isinstance(exc, QueueFull):
                raise RequestError(503, f"the server is busy ({exc}); retry shortly",
                                   headers={"Retry-After": "1"}) from exc
            raise RequestError(503 if isinstance(exc, EngineStopped) else 400, str(exc)) from exc
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
    def embed(self, inputs: list[Any], norm: float = 2) -> tuple[list, int]:
        """Embeddings of the inputs (text, ids mixed with text, llama.cpp's input objects)."""
        if self.embedder is None:
            raise RequestError(400, "this server was started without --embedding", code="embeddings_disabled")
        prompts = []
        for i, item in enumerate(inputs):
            if isinstance(item, PromptString):
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


class _Inbox:
    """Events from the engine thread to one request's coroutine. The event loop is woken once
    for whatever has arrived since it last looked, not once per token: on a small machine each
    wakeup takes CPU from the decoding threads. Not ``live``, only a job's last event wakes it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, live: bool) -> None:
        self._loop, self._live = loop, live
        self._events: collections.deque[tuple[int, Event]] = collections.deque()
        self._ready = asyncio.Event()
        self._woken = False

    def emitter(self, index: int) -> Callable[[Event], None]:
        def emit(event: Event) -> None:  # on the engine thread
            self._events.append((index, event))
            if not self._woken and (self._live or event.finish_reason is not None):
                self._woken = True
                self._loop.call_soon_threadsafe(self._ready.set)
        return emit

    async def take(self) -> list[tuple[int, Event]]:
        """What has arrived (possibly nothing, after a wakeup whose events an earlier take got)."""
        await self._ready.wait()
        self._ready.clear()
        self._woken = False  # before draining: an event appended after this wakes the loop again
        taken = []
        while self._events:
            taken.append(self._events.popleft())
        return taken


# --reasoning: llama.cpp lets a template think unless told not to
_THINKING = {"on": {"enable_thinking": True}, "off": {"enable_thinking": False}, "auto": {"enable_thinking": True}}


def _cache_type(name: str | None) -> GGMLType | None:
    """``-ctk q8_0`` -> GGMLType.Q8_0 (settings checked the name)."""
    return None if name is None else GGMLType[name.upper()]


def _response_format(body: GenerationFields) -> dict[str, Any] | None:
    if body.response_format is None:
        return None
    return body.response_format.model_dump(exclude_none=True, by_alias=True)

