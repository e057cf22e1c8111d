"""Routes that do not generate: models, health, props, tokenize/detokenize, embeddings, metrics."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from .errors import RequestError, error_response
from .schemas import DetokenizeRequest, EmbeddingRequest, TokenizeRequest
from .services import Services


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
        return {"object": "list", "data": [{"id": s.name, "object": "model", "owned_by": "pyllama",
                                            "created": s.settings.started} for s in services.all]}

    @api.get("/props", tags=["llama.cpp"])
    async def props() -> dict[str, Any]:
        service = services.default
        return {"model": service.name, "model_path": service.settings.model, "n_ctx": service.engine.n_ctx,
                "n_parallel": len(service.engine.slots), "total_slots": len(service.engine.slots),
                "chat_template": service.template.source, "embedding": service.embedder is not None,
                "modalities": {"vision": bool(service.projector and service.projector.supports_vision),
                               "audio": bool(service.projector and service.projector.supports_audio)}}

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
    @api.post("/embeddings", include_in_schema=False)
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        service = services.pick(body.model)
        raw = body.input
        if isinstance(raw, str):
            inputs: list[Any] = [raw]
        elif all(isinstance(item, int) for item in raw):
            inputs = [list(raw)]  # one input given as token ids
        else:
            inputs = list(raw)
        vectors, count = await run_in_threadpool(service.embed, inputs)
        data = []
        for i, vector in enumerate(vectors):
            if body.dimensions is not None:
                vector = vector[: body.dimensions]
            if body.encoding_format == "base64":
                vector = base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode()
            data.append({"object": "embedding", "embedding": vector, "index": i})
        return {"object": "list", "model": service.name, "data": data,
                "usage": {"prompt_tokens": count, "total_tokens": count}}

    @api.get("/metrics", response_class=PlainTextResponse, tags=["llama.cpp"])
    async def metrics() -> str:
        series = [("pyllama_requests_total", "counter", "Generation requests accepted", lambda e: e.stats.requests),
                  ("pyllama_requests_failed_total", "counter", "Requests that ended with an error",
                   lambda e: e.stats.failed_requests),
                  ("pyllama_prompt_tokens_total", "counter", "Prompt tokens evaluated", lambda e: e.stats.prompt_tokens),
                  ("pyllama_tokens_generated_total", "counter", "Tokens generated", lambda e: e.stats.generated_tokens),
                  ("pyllama_tokens_per_second", "gauge", "Generated tokens per busy second",
                   lambda e: e.stats.generated_tokens / e.stats.busy_seconds if e.stats.busy_seconds else 0.0),
                  ("pyllama_queue_depth", "gauge", "Requests waiting for a slot", lambda e: e.queue_depth),
                  ("pyllama_slots_busy", "gauge", "Slots generating", lambda e: e.busy_slots),
                  ("pyllama_slots_total", "gauge", "Slots", lambda e: len(e.slots))]
        lines = []
        for name, kind, help_text, value in series:
            lines.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            for service in services.all:
                label = f'{{model="{service.name}"}}' if len(services.all) > 1 else ""
                lines.append(f"{name}{label} {value(service.engine)}\n")
        return "".join(lines)

    return api
