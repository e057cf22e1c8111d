"""One served model: its Model (loaded once), engine, chat template and embedding context, and
the steps between a validated request and the engine's events.

Everything slow (tokenizing, rendering a template, compiling a grammar) runs in a worker
thread, never on the event loop; the engine runs in its own thread. Every failure a request
can cause is a :class:`RequestError` naming the field.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from ..chat import ChatPlan, chat_template, plan_chat, schema_to_gbnf
from ..chat.completion import response_grammar
from ..chat.json_schema import SchemaError
from ..context import Context
from ..embedding import embed
from ..enums import PoolingType
from ..chat.media import MediaReader
from ..errors import LlamaError, MediaTooLargeError
from ..generation.core import Event, Request
from ..generation.params import SamplingParams
from ..model import Model
from ..multimodal import Projector
from ..sampler import Sampler
from .engine import Engine, EngineStopped, Job, QueueFull
from .errors import RequestError
from .media_fetch import fetch_media
from .grammar_limits import grammar_problem
from .ranking import Ranker
from .schemas import ChatRequest, GenerationFields
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
        self.model = Model(settings.model, n_gpu_layers=settings.n_gpu_layers, use_mlock=settings.use_mlock,
                           use_mmap=settings.use_mmap)
        self.vocab = self.model.vocab
        self.template = chat_template(self.model, settings.chat_format)
        self.engine = Engine(self.model, n_ctx=settings.n_ctx, n_parallel=settings.n_parallel,
                             n_batch=settings.n_batch, n_threads=settings.n_threads,
                             n_threads_batch=settings.n_threads_batch, max_queue=settings.max_queue,
                             flash_attn=settings.flash_attn)
        self.embedder: Context | None = None
        if settings.embedding:  # a second context on the same weights, not a second copy of them
            self.embedder = Context(self.model, n_ctx=settings.n_ctx, n_batch=settings.n_ctx,
                                    n_ubatch=settings.n_ctx, n_threads=settings.n_threads, embeddings=True,
                                    pooling_type=PoolingType[settings.pooling.upper()] if settings.pooling else None)
        self._embed_lock = threading.Lock()
        self.ranker = Ranker.of(self.model, settings, self.embedder, self._embed_lock)
        self.projector: Projector | None = None  # images (and audio) in chat messages, with --mmproj
        self.media: MediaReader | None = None
        if settings.mmproj:
            self.projector = Projector(self.model, settings.mmproj, n_threads=settings.n_threads,
                                       use_gpu=settings.n_gpu_layers != 0)
            self.media = MediaReader(self.projector, fetch=fetch_media if settings.allow_remote_media else None,
                                     max_bytes=settings.media_max_bytes)

    @property
    def name(self) -> str:
        return self.settings.model_alias

    def close(self) -> None:
        self.engine.close()
        if self.ranker is not None:
            self.ranker.close()
        if self.embedder is not None:
            self.embedder.close()
        if self.projector is not None:
            self.projector.close()
        self.model.close()

    # --- prompts --------------------------------------------------------------------------
    def tokenize_prompt(self, prompt: str | Sequence[int | str], field: str = "prompt") -> list[int]:
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
        if len(tokens) >= self.engine.n_ctx:
            raise RequestError(400, f"the prompt has {len(tokens)} tokens but the context holds {self.engine.n_ctx}",
                               field, "context_length_exceeded")
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
                grammar=self._grammar_of(body), reasoning=body.reasoning, media=self.media)
        except MediaTooLargeError as exc:
            raise RequestError(413, str(exc), "messages") from exc
        except (ValueError, TypeError, LlamaError) as exc:  # messages, tools, a template that failed
            raise RequestError(400, str(exc)) from exc
        except RecursionError as exc:  # a tool's or response_format's schema nested ~900 deep
            raise RequestError(400, "a JSON schema in the request nests too deeply") from exc
        if check_room and len(plan.prompt_tokens) >= self.engine.n_ctx:
            raise RequestError(400, f"the messages need {len(plan.prompt_tokens)} tokens but the context holds "
                                    f"{self.engine.n_ctx}", "messages", "context_length_exceeded")
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
                raise RequestError(400, "'response_format' has a schema that nests too deeply", "response_format") from exc
        return self._grammar_of(body)

    def check_grammar(self, grammar: str | None, triggers: Sequence[str] = ()) -> None:
        """Compile it once here (in a worker thread), so a grammar llama.cpp refuses is a 400."""
        if not grammar:
            return
        problem = grammar_problem(grammar)  # before llama.cpp: some grammars overflow its parser's stack
        if problem is not None:
            raise RequestError(400, problem, "grammar")
        try:
            sampler = Sampler()
            if triggers:
                sampler.grammar_lazy(self.model, grammar, trigger_patterns=triggers)
            else:
                sampler.grammar(self.model, grammar)
            sampler.close()
        except (ValueError, LlamaError) as exc:
            raise RequestError(400, f"invalid grammar: {exc}", "grammar") from exc

    def sampling(self, body: GenerationFields, grammar: str | None, triggers: Sequence[str] = ()) -> SamplingParams:
        fields: dict[str, Any] = {name: getattr(body, name) for name in _SAMPLING if getattr(body, name) is not None}
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
        fields["logit_bias"] = self._logit_bias(body) or None
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

    # --- jobs -------------------------------------------------------------------------------
    def max_tokens(self, body: GenerationFields, prompt_tokens: int) -> int:
        """How many tokens a job may generate: the request's limit within the room left."""
        room = self.engine.n_ctx - prompt_tokens
        field, wanted = next(((f, getattr(body, f)) for f in ("n_predict", "max_tokens", "max_completion_tokens")
                              if getattr(body, f) is not None), ("max_tokens", None))
        if wanted is None or wanted == -1:
            return room
        if wanted > room:
            raise RequestError(400, f"'{field}' is {wanted} but only {room} tokens are left after the "
                                    f"{prompt_tokens}-token prompt in a {self.engine.n_ctx}-token context",
                               field, "context_length_exceeded")
        return wanted

    def job(self, request: Request, body: GenerationFields, emit: Callable[[Event], None], index: int = 0) -> Job:
        seed = request.params.seed
        if seed is None or seed == 0xFFFFFFFF:  # llama.cpp's "random seed"
            seed = (time.time_ns() + index) & 0xFFFFFFFF
        elif index:  # n > 1 with a fixed seed: different, reproducible choices
            seed = (seed + index) & 0xFFFFFFFF
        return Job(request, self.max_tokens(body, len(request.prompt_tokens)), seed, emit)

    async def run(self, jobs_of: Callable[[Callable[[int, Event], None]], list[Job]]) -> AsyncIterator[tuple[int, Event]]:
        """Submit the jobs (one per choice) and yield ``(choice, event)`` as they come; a job that
        failed raises RequestError. Leaving early cancels them all."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        jobs = jobs_of(lambda i, event: loop.call_soon_threadsafe(events.put_nowait, (i, event)))
        try:
            for job in jobs:
                self.engine.submit(job)
        except QueueFull as exc:
            for job in jobs:
                job.cancelled.set()
            raise RequestError(503, f"the server is busy ({exc}); retry shortly", headers={"Retry-After": "1"}) from exc
        except EngineStopped as exc:
            raise RequestError(503, str(exc)) from exc
        except ValueError as exc:
            raise RequestError(400, str(exc)) from exc
        open_jobs = len(jobs)
        try:
            while open_jobs:
                index, event = await events.get()
                if event.error is not None:
                    if not self.engine.alive:  # the engine stopped under this job: the server, not the request
                        raise RequestError(503, f"the server cannot generate now: {event.error}")
                    raise RequestError(500, f"generation failed: {event.error}")
                if event.finish_reason is not None:
                    open_jobs -= 1
                yield index, event
        finally:
            for job in jobs:
                job.cancelled.set()  # a client that went away frees its slots at the next step

    # --- embeddings ---------------------------------------------------------------------------
    def embed(self, inputs: list[str | list[int]]) -> tuple[list, int]:
        if self.embedder is None:
            raise RequestError(400, "this server was started without --embedding", code="embeddings_disabled")
        with self._embed_lock:
            try:
                return embed(self.embedder, inputs)
            except (ValueError, LlamaError) as exc:
                raise RequestError(400, str(exc), "input") from exc


def _response_format(body: GenerationFields) -> dict[str, Any] | None:
    if body.response_format is None:
        return None
    return body.response_format.model_dump(exclude_none=True, by_alias=True)

