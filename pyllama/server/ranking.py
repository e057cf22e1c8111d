"""The served model's reranker (llama-server's ``--reranking``), behind the rerank routes of
server/llamacpp.py: Jina/Cohere's ``{query, documents, top_n?, return_documents?}`` answered with
``{model, object: "list", usage, results: [{index, relevance_score, document?}]}``, best first,
or, for a body with ``texts``, Hugging Face TEI's bare list of ``{index, score, text?}``. Scores
are the model's raw logits, as llama-server sends them; the scoring is pyllama.rerank, shared
with Llama.rerank.
"""

from __future__ import annotations

import threading

from ..context import Context
from ..enums import PoolingType
from ..errors import ContextOverflowError, LlamaError
from ..model import Model
from ..rerank import score
from .errors import RequestError
from .settings import Settings


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
                          n_threads_batch=settings.n_threads_batch, embeddings=True, pooling_type=PoolingType.RANK,
                          flash_attn=settings.flash_attn)
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

