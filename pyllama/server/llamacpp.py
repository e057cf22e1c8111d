"""llama.cpp's own routes, as llama-server has them: ``/completion``, ``/infill``, ``/health``,
``/props``, ``/tokenize``, ``/detokenize``, ``/embeddings``, ``/rerank``, ``/metrics``, ``/slots``,
``/lora-adapters``, ``/apply-template`` and ``/chat/completions/input_tokens``.

Thin routes: completions go through the completion path (server/completion_jobs.py) and come
back as llama.cpp's ``content`` / ``completion_probabilities`` objects; the rest read or set the
served model (server/served_model.py). The bodies are schemas/llamacpp.py's (``/completion`` and
``/embeddings`` take schemas/openai.py's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from .._binding.library import LLAMA_CPP_COMMIT
from .._version import __version__
from ..enums import PoolingType
from ..generation.generator import Event, Request, TokenInfo
from ..rerank import ranking
from ..text_completion import completion_probabilities
from .completion_jobs import Choices, completion_prompts, prepare
from .engine import Engine
from .engine_stats import Stats
from .job import Job
from .errors import RequestError, error_response
from .sampling import default_params, generation_settings
from .schemas.common import LoraScale
from .schemas.llamacpp import DetokenizeRequest, InfillRequest, RerankRequest, SlotFile, TokenizeRequest
from .schemas.openai import ChatRequest, CompletionRequest, EmbeddingRequest
from .served_model import ServedModel
from .model_pool import ModelPool
from .slots import describe, erase, restore, save, slot_file
from .sse import sse, started


# llama-server's form, b<build>-<commit>: the llama.cpp commit this build links (its build number, a
# count of git commits, is not known here: 0), then pyllama's own version
BUILD_INFO = f"b0-{LLAMA_CPP_COMMIT} (pyllama {__version__})"


def _rate(tokens: float, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else 0.0


# name, kind, help, value of a model's counters, its counters at the last scrape and its engine (None: not
# loaded); llama-server's names, so its dashboards work here
METRICS: list[tuple[str, str, str, Callable[[Stats, Stats, Engine | None], float]]] = [
    ("prompt_tokens_total", "counter", "Number of prompt tokens processed.", lambda st, was, e: st.prompt_tokens),
    ("prompt_tokens_cached_total", "counter", "Number of prompt tokens reused from the cache.",
     lambda st, was, e: st.prompt_tokens_cached),
    ("prompt_seconds_total", "counter", "Prompt process time", lambda st, was, e: st.prompt_seconds),
    ("tokens_predicted_total", "counter", "Number of generation tokens processed.",
     lambda st, was, e: st.generated_tokens),
    ("tokens_predicted_seconds_total", "counter", "Predict process time", lambda st, was, e: st.generation_seconds),
    ("n_decode_total", "counter", "Total number of llama_decode() calls", lambda st, was, e: st.decodes),
    ("n_tokens_max", "counter", "Largest observed n_tokens.", lambda st, was, e: st.most_tokens),
    ("spec_decode_num_draft_tokens_total", "counter", "Draft tokens proposed by speculative decoding.",
     lambda st, was, e: st.drafted_tokens),
    ("spec_decode_num_accepted_tokens_total", "counter", "Draft tokens accepted by the target model.",
     lambda st, was, e: st.accepted_tokens),
    ("spec_decode_num_drafts_total", "counter", "Drafts verified by speculative decoding.",
     lambda st, was, e: st.drafts),
    ("requests_failed_total", "counter", "Requests that ended with an error.", lambda st, was, e: st.failed_requests),
    # throughput since the last scrape, as llama-server's buckets (reset by each scrape)
    ("prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.",
     lambda st, was, e: _rate(st.prompt_tokens - was.prompt_tokens, st.prompt_seconds - was.prompt_seconds)),
    ("predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.",
     lambda st, was, e: _rate(st.generated_tokens - was.generated_tokens,
                              st.generation_seconds - was.generation_seconds)),
    ("requests_processing", "gauge", "Number of requests processing.", lambda st, was, e: e.busy_slots if e else 0),
    ("requests_deferred", "gauge", "Number of requests deferred.", lambda st, was, e: e.queue_depth if e else 0),
    ("n_busy_slots_per_decode", "gauge", "Average number of busy slots per llama_decode() call",
     lambda st, was, e: _rate(st.busy_slot_decodes, st.decodes)),
]


def router(pool: ModelPool) -> APIRouter:
    api = APIRouter()

    @api.get("/health", tags=["llama.cpp"])
    async def health() -> JSONResponse:
        """200 while every loaded model's engine runs (a model asleep or not loaded yet is no
        failure, as in llama-server); 503 (with the reason) once one has stopped."""
        stopped = [p for p in pool.loaded() if not p.served.engine.alive]
        if stopped:
            reasons = "; ".join(f"{p.name}: {p.served.engine.failure or 'stopped'}" for p in stopped)
            return error_response(503, f"the engine is not running ({reasons})", code="unavailable")
        return JSONResponse({"status": "ok"})

    @api.post("/completion", summary="llama.cpp completion", tags=["llama.cpp"])
    @api.post("/completions", include_in_schema=False)  # llama-server's: its own route, not OpenAI's
    async def llama_completion(body: CompletionRequest) -> Response:
        service = await pool.pick(body.model)
        n_probs = body.n_probs if body.n_probs is not None else body.logprobs
        requests, jobs = await prepare(service, body, completion_prompts(service, body), n_probs or None)
        return await llama_shaped(service, body, requests, jobs, n_probs)

    @api.post("/infill", summary="llama.cpp fill-in-the-middle", tags=["llama.cpp"])
    async def infill(body: InfillRequest) -> Response:
        service = await pool.pick(body.model)
        files = [(f.filename, f.text) for f in body.input_extra]
        tokens = lambda: service.fill_in_the_middle(body.input_prefix, body.input_suffix, body.prompt, files)  # noqa: E731
        requests, jobs = await prepare(service, body, [tokens], body.n_probs)
        return await llama_shaped(service, body, requests, jobs, body.n_probs)

    @api.post("/v1/chat/completions/input_tokens", summary="tokens a chat request's prompt takes", tags=["llama.cpp"])
    @api.post("/chat/completions/input_tokens", include_in_schema=False)
    async def input_tokens(body: ChatRequest) -> dict[str, int]:
        plan = await (await pool.pick(body.model)).plan_chat(body, check_room=False)
        return {"input_tokens": len(plan.prompt_tokens)}

    @api.post("/apply-template", summary="the prompt a chat request renders to", tags=["llama.cpp"])
    async def apply_template(body: ChatRequest) -> dict[str, str]:
        plan = await (await pool.pick(body.model)).plan_chat(body, check_room=False)  # rendering only
        return {"prompt": plan.prompt}

    @api.get("/props", tags=["llama.cpp"])
    async def props(model: str | None = Query(None)) -> dict[str, Any]:
        """A model's properties; a router's own without ``?model=``. Never loads a model (a sleeping
        one says ``is_sleeping``, as llama-server's does)."""
        if pool.router and model is None:
            return {"role": "router", "max_instances": pool.models_max, "models_autoload": pool.autoload,
                    "model_alias": "pyllama", "model_path": "none", "build_info": BUILD_INFO,
                    "default_generation_settings": {"params": {}, "n_ctx": 0}}
        pooled = pool.entry(model)
        settings = pooled.settings
        if pooled.served is None:
            return {"model": pooled.name, "model_alias": pooled.name, "model_path": settings.model,
                    "n_ctx": settings.n_ctx, "total_slots": settings.n_parallel, "is_sleeping": True,
                    "status": pool.status(pooled), "build_info": BUILD_INFO,
                    "default_generation_settings": {"n_ctx": settings.n_ctx, "params": default_params(settings)}}
        service = pooled.served
        fallback = service.template.fallback
        return {"is_sleeping": False, "model": service.name, "model_alias": service.name, "model_path": settings.model,
                "n_ctx": service.engine.n_ctx, "n_parallel": len(service.engine.slots),
                "total_slots": len(service.engine.slots), "chat_template": service.template.source,
                # a model without a template of its own (a base model): which format stands in, and why
                "has_chat_template": fallback is None, "chat_format": service.template.format,
                "chat_template_note": fallback.note if fallback else None,
                "embedding": service.embedder is not None, "build_info": BUILD_INFO,
                "modalities": {"vision": bool(service.projector and service.projector.supports_vision),
                               "audio": bool(service.projector and service.projector.supports_audio)},
                # any slot may use the whole (unified) context
                "default_generation_settings": {"n_ctx": service.engine.n_ctx,
                                                "params": default_params(settings)}}

    @api.post("/tokenize", tags=["llama.cpp"])
    async def tokenize(body: TokenizeRequest) -> Response:
        service = await pool.pick(body.model)
        vocab = service.vocab

        def tokenized() -> bytes:
            # All of it in a worker, the JSON too: pieces for a few MB of text held the event loop
            # (and /health with it) for over ten seconds. One json.dumps of millions of items holds
            # the GIL for seconds, so the list goes out in slices.
            tokens = vocab.tokenize(body.content, body.add_special, body.parse_special)
            items: list[Any] = tokens
            if body.with_pieces:
                items = []
                for token in tokens:
                    piece = vocab.token_to_piece(token)
                    try:
                        items.append({"id": token, "piece": piece.decode("utf-8")})
                    except UnicodeDecodeError:  # part of a character: the bytes, as llama-server gives them
                        items.append({"id": token, "piece": list(piece)})
            slices = (json.dumps(items[i:i + 4096], ensure_ascii=False)[1:-1] for i in range(0, len(items), 4096))
            return ('{"tokens": [' + ", ".join(slices) + "]}").encode()

        return Response(await run_in_threadpool(tokenized), media_type="application/json")

    @api.post("/detokenize", tags=["llama.cpp"])
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        service = await pool.pick(body.model)
        n_vocab = service.vocab.n_tokens
        bad = next((t for t in body.tokens if t >= n_vocab), None)
        if bad is not None:
            raise RequestError(400, f"'tokens' must be token ids in 0..{n_vocab - 1}, got {bad}", "tokens")
        vocab = service.vocab
        # piece by piece, as llama-server does: llama_detokenize would also clean up spaces
        # ("France ?" -> "France?"), and a round trip must give back the text tokenized
        text = await run_in_threadpool(
            lambda: b"".join(vocab.token_to_piece(t, special=True) for t in body.tokens).decode("utf-8", "replace"))
        return {"content": text}

    @api.post("/embeddings", tags=["llama.cpp"])
    @api.post("/embedding", include_in_schema=False)
    async def native_embeddings(body: EmbeddingRequest) -> list[dict[str, Any]]:
        """llama.cpp's embeddings: a list of ``{index, embedding}``, the embedding a list of rows
        (one per token with --pooling none, which is not normalized, else one)."""
        service = await pool.pick(body.model)
        pooled = service.embedder is None or service.embedder.pooling_type != PoolingType.NONE
        norm = body.embd_normalize if pooled else -1
        vectors, _ = await run_in_threadpool(service.embed, body.input, norm)
        return [{"index": i, "embedding": vector if not pooled else [vector]} for i, vector in enumerate(vectors)]

    @api.post("/v1/rerank", tags=["Jina/Cohere"])
    @api.post("/rerank", include_in_schema=False)
    @api.post("/reranking", include_in_schema=False)
    @api.post("/v1/reranking", include_in_schema=False)
    async def rerank(body: RerankRequest) -> Any:
        """Documents by relevance to the query, best first (the top_n best)."""
        service = await pool.pick(body.model)
        if service.ranker is None:
            raise RequestError(400, "this server was started without --reranking", code="reranking_disabled")
        tei = body.texts is not None
        documents = body.texts if tei else [d if isinstance(d, str) else d.text for d in body.documents]
        scores, count = await run_in_threadpool(service.ranker.score, body.query, documents)
        if tei:
            results = ranking(scores, body.top_n)
            for result in results:
                result["score"] = result.pop("relevance_score")
                if body.return_text:
                    result["text"] = documents[result["index"]]
            return results
        shown = documents if body.return_documents or body.return_text else None
        return {"model": service.name, "object": "list", "usage": {"prompt_tokens": count, "total_tokens": count},
                "results": ranking(scores, body.top_n, shown)}

    scraped: dict[str, Stats] = {}  # each model's counters at the last scrape

    @api.get("/metrics", response_class=PlainTextResponse, tags=["llama.cpp"])
    async def metrics() -> PlainTextResponse:
        """Prometheus text with llama-server's metric names (``--metrics``)."""
        if not pool.default.settings.metrics:
            raise RequestError(501, "metrics are off: start the server with --metrics", code="not_supported")
        lines = []
        for name, kind, help_text, value in METRICS:
            lines.append(f"# HELP llamacpp:{name} {help_text}\n# TYPE llamacpp:{name} {kind}\n")
            for pooled in pool.all:  # counters go on across unloads; a model not loaded runs nothing
                label = f'{{model="{pooled.name}"}}' if len(pool.all) > 1 else ""
                shown = value(pooled.stats, scraped.get(pooled.name, Stats()), pooled.served and pooled.served.engine)
                lines.append(f"llamacpp:{name}{label} {shown}\n")
        scraped.update({pooled.name: dataclasses.replace(pooled.stats) for pooled in pool.all})
        response = PlainTextResponse("".join(lines))
        # with llama-server's capitals: some clients read headers case-sensitively (Starlette lowercases)
        response.raw_headers.append((b"Process-Start-Time-Unix", str(pool.default.settings.started).encode()))
        return response

    @api.get("/slots", tags=["llama.cpp"])
    async def slots(model: str | None = Query(None)) -> list[dict[str, Any]]:
        if not pool.default.settings.slots:
            raise RequestError(501, "the slots endpoint is off (started with --no-slots)", code="not_supported")
        return describe((await pool.pick(model)).engine)

    @api.post("/slots/{slot_id}", tags=["llama.cpp"])
    async def slot_action(slot_id: int, action: Literal["save", "restore", "erase"] = Query(...),
                          body: SlotFile | None = None, model: str | None = Query(None)) -> dict[str, Any]:
        service = await pool.pick(model)
        engine = service.engine
        if action == "erase":
            work = lambda: erase(engine, slot_id)  # noqa: E731
        else:
            path = slot_file(service.settings.slot_save_path, (body or SlotFile()).filename)
            act = save if action == "save" else restore
            work = lambda: act(engine, slot_id, path)  # noqa: E731
        return await asyncio.wrap_future(engine.call(work))

    @api.get("/lora-adapters", tags=["llama.cpp"])
    async def list_adapters(model: str | None = Query(None)) -> list[dict[str, Any]]:
        return (await pool.pick(model)).adapters.describe()

    @api.post("/lora-adapters", tags=["llama.cpp"])
    async def set_adapters(body: list[LoraScale], model: str | None = Query(None)) -> dict[str, Any]:
        (await pool.pick(model)).adapters.set_scales(body)
        return {"success": True}

    return api


def _selected(result: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """llama-server's ``response_fields``: only these, ``"a/b"`` being ``result["a"]["b"]``."""
    chosen = {}
    for field in fields:
        value: Any = result
        for part in field.split("/"):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            chosen[field] = value
    return chosen


async def llama_shaped(service: ServedModel, body: CompletionRequest | InfillRequest, requests: Sequence[Request],
                       jobs: Sequence[Job], n_probs: int | None) -> Response:
    """llama.cpp's completion results: ``content``, ``stop``, ``stop_type``, ``timings``,
    ``generation_settings``, with ``n_probs`` the ``completion_probabilities``; one object, or a
    list for several. ``response_fields`` keeps only the fields named (``a/b`` reaches into ``a``)."""
    count = len(requests) * body.n

    def result(index: int, text: str, tokens: list[TokenInfo], ids: list[int], last: Event | None) -> dict[str, Any]:
        out: dict[str, Any] = {"index": index, "content": text, "stop": last is not None, "model": service.name}
        if body.return_tokens:
            out["tokens"] = ids
        if n_probs:
            out["completion_probabilities"] = completion_probabilities(tokens, body.post_sampling_probs)
        if last is not None:
            usage, job = last.usage or {}, jobs[index]
            out.update(stop_type="word" if last.stop_word else "eos" if last.finish_reason == "stop" else "limit",
                       stopping_word=last.stop_word or "", tokens_predicted=usage.get("completion_tokens", 0),
                       tokens_evaluated=usage.get("prompt_tokens", 0), timings=last.timings, truncated=last.truncated,
                       generation_settings=generation_settings(job.request, job.max_tokens, service.engine.n_ctx),
                       prompt=service.vocab.detokenize(job.request.prompt_tokens, unparse_special=True))
        return _selected(out, body.response_fields) if body.response_fields and last is not None else out

    if body.stream:
        async def chunks() -> AsyncIterator[dict[str, Any]]:
            async for index, event in service.run(jobs):
                if event.progress is not None:
                    yield {"index": index, "content": "", "stop": False, "prompt_progress": event.progress,
                           "timings": event.timings}
                elif event.text or event.tokens or event.finish_reason:
                    out = result(index, event.text, event.tokens, event.ids, event if event.finish_reason else None)
                    if event.timings is not None:
                        out["timings"] = event.timings
                    yield out
        return sse(*await started(chunks()), done_marker=False)
    choices = Choices(count)
    async for index, event in service.run(jobs, live=False):
        choices.add(index, event)
    results = [result(i, choices.text(i), choices.tokens[i], choices.ids[i], choices.last[i]) for i in range(count)]
    if service.wants_verbose(body):
        for i, out in enumerate(results):
            out["__verbose"] = service.verbose(requests[i // body.n], out["content"])
    return JSONResponse(results[0] if count == 1 else results)
