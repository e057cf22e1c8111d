"""Routes that do not generate: models, health, props, tokenize/detokenize, embeddings, rerank,
metrics."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from .._version import __version__
from ..enums import PoolingType
from ..rerank import ranking
from .errors import RequestError, error_response
from .schemas import DetokenizeRequest, EmbeddingRequest, RerankRequest, TokenizeRequest
from .engine import Engine
from .services import Services


def _rate(tokens: float, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else 0.0


# name, kind, help, value of an engine (llama-server's names, so its dashboards work here)
METRICS: list[tuple[str, str, str, Callable[[Engine], float]]] = [
    ("prompt_tokens_total", "counter", "Number of prompt tokens processed.", lambda e: e.stats.prompt_tokens),
    ("prompt_tokens_cached_total", "counter", "Number of prompt tokens reused from the cache.",
     lambda e: e.stats.prompt_tokens_cached),
    ("prompt_seconds_total", "counter", "Prompt process time", lambda e: e.stats.prompt_seconds),
    ("tokens_predicted_total", "counter", "Number of generation tokens processed.",
     lambda e: e.stats.generated_tokens),
    ("tokens_predicted_seconds_total", "counter", "Predict process time", lambda e: e.stats.generation_seconds),
    ("n_decode_total", "counter", "Total number of llama_decode() calls", lambda e: e.stats.decodes),
    ("n_tokens_max", "counter", "Largest observed n_tokens.", lambda e: e.stats.most_tokens),
    ("spec_decode_num_draft_tokens_total", "counter", "Draft tokens proposed by speculative decoding.",
     lambda e: e.stats.drafted_tokens),
    ("spec_decode_num_accepted_tokens_total", "counter", "Draft tokens accepted by the target model.",
     lambda e: e.stats.accepted_tokens),
    ("spec_decode_num_drafts_total", "counter", "Drafts verified by speculative decoding.", lambda e: e.stats.drafts),
    ("requests_failed_total", "counter", "Requests that ended with an error.", lambda e: e.stats.failed_requests),
    ("prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.",
     lambda e: _rate(e.stats.prompt_tokens, e.stats.prompt_seconds)),
    ("predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.",
     lambda e: _rate(e.stats.generated_tokens, e.stats.generation_seconds)),
    ("requests_processing", "gauge", "Number of requests processing.", lambda e: e.busy_slots),
    ("requests_deferred", "gauge", "Number of requests deferred.", lambda e: e.queue_depth),
    ("n_busy_slots_per_decode", "gauge", "Average number of busy slots per llama_decode() call",
     lambda e: _rate(e.stats.busy_slot_decodes, e.stats.decodes)),
]


def _inputs(raw: Any) -> list[Any]:
    """The prompts of an embedding request: one (text, ids, ids mixed with text, an object) or a
    list of them."""
    if not isinstance(raw, list):
        return [raw]
    if any(isinstance(part, int) for part in raw) and all(isinstance(part, (int, str)) for part in raw):
        return [raw]  # one prompt of token ids, perhaps with text pieces
    return list(raw)


def router(services: Services) -> APIRouter:
    api = APIRouter()

    @api.get("/health", tags=["llama.cpp"])
    async def health() -> JSONResponse:
        """200 while every model's engine runs; 503 (with the reason) once one has stopped."""
        stopped = [s for s in services.all if not s.engine.alive]
        if stopped:
            reasons = "; ".join(f"{s.name}: {s.engine.failure or 'stopped'}" for s in stopped)
            return error_response(503, f"the engine is not running ({reasons})", code="unavailable")
        return JSONResponse({"status": "ok"})

    @api.get("/v1/models", tags=["OpenAI"])
    @api.get("/models", include_in_schema=False)
    async def models() -> dict[str, Any]:
        data = []
        for s in services.all:
            model = s.model
            data.append({"id": s.name, "object": "model", "owned_by": "pyllama", "created": s.settings.started,
                         "aliases": [s.name, *s.settings.aliases], "tags": list(s.settings.tags),
                         "meta": {"n_vocab": s.vocab.n_tokens, "n_ctx_train": model.n_ctx_train,
                                  "n_embd": model.n_embd, "n_params": model.n_params, "size": model.size}})
        return {"object": "list", "data": data}

    @api.get("/props", tags=["llama.cpp"])
    async def props() -> dict[str, Any]:
        service = services.default
        settings = service.settings
        fallback = service.template.fallback
        return {"model": service.name, "model_alias": service.name, "model_path": settings.model,
                "n_ctx": service.engine.n_ctx, "n_parallel": len(service.engine.slots),
                "total_slots": len(service.engine.slots), "chat_template": service.template.source,
                # a model without a template of its own (a base model): which format stands in, and why
                "has_chat_template": fallback is None, "chat_format": service.template.format,
                "chat_template_note": fallback.note if fallback else None,
                "embedding": service.embedder is not None, "build_info": f"pyllama {__version__}",
                "modalities": {"vision": bool(service.projector and service.projector.supports_vision),
                               "audio": bool(service.projector and service.projector.supports_audio)},
                # any slot may use the whole (unified) context
                "default_generation_settings": {"n_ctx": service.engine.n_ctx,
                                                "params": service.default_params()}}

    @api.post("/tokenize", tags=["llama.cpp"])
    async def tokenize(body: TokenizeRequest) -> Response:
        service = services.pick(body.model)
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
        service = services.pick(body.model)
        n_vocab = service.vocab.n_tokens
        bad = next((t for t in body.tokens if t >= n_vocab), None)
        if bad is not None:
            raise RequestError(400, f"'tokens' must be token ids in 0..{n_vocab - 1}, got {bad}", "tokens")
        text = await run_in_threadpool(service.vocab.detokenize, body.tokens)
        return {"content": text}

    @api.post("/v1/embeddings", tags=["OpenAI"])
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        """OpenAI's embeddings: one pooled vector per input."""
        service = services.pick(body.model)
        if service.embedder is not None and service.embedder.pooling_type == PoolingType.NONE:
            chosen = "this server has --pooling none" if service.settings.pooling else \
                "this model's default pooling is none (a generative model's)"
            raise RequestError(400, f"/v1/embeddings needs pooled embeddings, and {chosen}: start the server with "
                                    "--pooling mean (or cls, last), or use /embeddings for a vector per token",
                               code="pooling_none")
        vectors, count = await run_in_threadpool(service.embed, _inputs(body.input), body.embd_normalize)
        data = []
        for i, vector in enumerate(vectors):
            if body.dimensions is not None:
                vector = vector[: body.dimensions]
            if body.encoding_format == "base64":
                vector = base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode()
            data.append({"object": "embedding", "embedding": vector, "index": i})
        return {"object": "list", "model": service.name, "data": data,
                "usage": {"prompt_tokens": count, "total_tokens": count}}

    @api.post("/embeddings", tags=["llama.cpp"])
    @api.post("/embedding", include_in_schema=False)
    async def native_embeddings(body: EmbeddingRequest) -> list[dict[str, Any]]:
        """llama.cpp's embeddings: a list of ``{index, embedding}``, the embedding a list of rows
        (one per token with --pooling none, which is not normalized, else one)."""
        service = services.pick(body.model)
        pooled = service.embedder is None or service.embedder.pooling_type != PoolingType.NONE
        norm = body.embd_normalize if pooled else -1
        vectors, _ = await run_in_threadpool(service.embed, _inputs(body.input), norm)
        return [{"index": i, "embedding": vector if not pooled else [vector]} for i, vector in enumerate(vectors)]

    @api.post("/v1/rerank", tags=["Jina/Cohere"])
    @api.post("/rerank", include_in_schema=False)
    @api.post("/reranking", include_in_schema=False)
    @api.post("/v1/reranking", include_in_schema=False)
    async def rerank(body: RerankRequest) -> Any:
        """Documents by relevance to the query, best first (the top_n best)."""
        service = services.pick(body.model)
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

    @api.get("/metrics", response_class=PlainTextResponse, tags=["llama.cpp"])
    async def metrics() -> PlainTextResponse:
        """Prometheus text with llama-server's metric names (``--metrics``)."""
        if not services.default.settings.metrics:
            raise RequestError(501, "metrics are off: start the server with --metrics", code="not_supported")
        lines = []
        for name, kind, help_text, value in METRICS:
            lines.append(f"# HELP llamacpp:{name} {help_text}\n# TYPE llamacpp:{name} {kind}\n")
            for service in services.all:
                label = f'{{model="{service.name}"}}' if len(services.all) > 1 else ""
                lines.append(f"llamacpp:{name}{label} {value(service.engine)}\n")
        response = PlainTextResponse("".join(lines))
        # with llama-server's capitals: some clients read headers case-sensitively (Starlette lowercases)
        response.raw_headers.append((b"Process-Start-Time-Unix", str(services.default.settings.started).encode()))
        return response

    return api
