"""Reranking routes (llama-server's ``--reranking``): ``/rerank``, ``/v1/rerank``, ``/reranking``.

Jina/Cohere's shape: ``{query, documents, top_n?, return_documents?}`` answered with
``{model, object: "list", usage, results: [{index, relevance_score, document?}]}``, best
first. A body with ``texts`` instead of ``documents`` is Hugging Face TEI's and is answered as
TEI does, with a bare list of ``{index, score, text?}``. Scores are the model's raw logits, as
llama-server sends them. The scoring itself is pyllama.rerank, shared with Llama.rerank.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ..context import Context
from ..enums import PoolingType
from ..errors import ContextOverflowError, LlamaError
from ..model import Model
from ..rerank import ranking, score
from .errors import RequestError
from .schemas import RerankRequest
from .settings import Settings

if TYPE_CHECKING:  # services -> service -> this module: no import cycle at run time
    from .services import Services


class Ranker:
    """A RANK-pooled context on the served model's weights; one request scores at a time."""

    def __init__(self, context: Context, lock: threading.Lock | None = None, owned: bool = True) -> None:
        self.context, self._lock, self._owned = context, lock or threading.Lock(), owned

    @classmethod
    def of(cls, model: Model, settings: Settings, embedder: Context | None,
           embed_lock: threading.Lock) -> Ranker | None:
        """llama-server's rule: --reranking, or --embedding with --pooling rank (then the
        embedding context ranks too, under its lock); else None."""
        if embedder is not None and embedder.pooling_type == PoolingType.RANK:
            return cls(embedder, embed_lock, owned=False)
        if not settings.reranking:
            return None
        n_ctx = settings.n_ctx or model.n_ctx_train
        # a whole pair goes through a non-causal model in one micro-batch: batch sizes = n_ctx
        context = Context(model, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=settings.n_threads,
                          n_threads_batch=settings.n_threads_batch, embeddings=True, pooling_type=PoolingType.RANK)
        return cls(context)

    def score(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        with self._lock:
            try:
                return score(self.context, query, documents)
            except ContextOverflowError as exc:
                raise RequestError(400, str(exc), "documents", "context_length_exceeded") from exc
            except (ValueError, LlamaError) as exc:
                raise RequestError(400, str(exc)) from exc

    def close(self) -> None:
        if self._owned:
            self.context.close()


def router(services: Services) -> APIRouter:
    api = APIRouter()

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

    return api
