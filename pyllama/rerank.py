"""Relevance of documents to a query with a reranker, scored as llama.cpp's server scores them
(Llama.rerank and the server's /rerank).

A reranker is a cross-encoder: a BERT-family model with a classification head (bge-reranker,
jina-reranker), or a causal one such as Qwen3-Reranker. Its Context must have
``embeddings=True`` and RANK pooling; the pooled output of a sequence is then the head's
logits, and the first one is the score. Each (query, document) pair is one sequence: the
model's ``rerank`` template when it has one, else ``[BOS] query [EOS] [SEP] document [EOS]``
with each special token only where the vocabulary adds it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from .context import Context
from .embedding import evaluate
from .enums import PoolingType
from .errors import ContextOverflowError
from .model import Model

_PLACEHOLDER = re.compile(r"\{(query|document)\}")


def check_ranker(context: Context) -> None:
    """Refuse a context whose outputs are not relevance scores."""
    if context.pooling_type != PoolingType.RANK:
        raise ValueError(f"reranking needs a context with RANK pooling, not {context.pooling_type.name}: load the "
                         "reranker with Llama(path, embedding=True, pooling_type=PoolingType.RANK) "
                         "(python -m pyllama.server --reranking)")


def pair_tokens(model: Model, query: str, document: str) -> list[int]:
    """The token sequence that scores ``document`` against ``query``."""
    template = model.chat_template("rerank")
    if template is not None:
        # one pass, so a query that contains "{document}" stays text (llama.cpp replaces twice)
        text = _PLACEHOLDER.sub(lambda m: query if m.group(1) == "query" else document, template)
        return model.tokenize(text, add_special=False, parse_special=True)
    vocab = model.vocab
    end = vocab.eos if vocab.eos >= 0 else vocab.sep  # vocabularies without EOS close with SEP
    tokens = [vocab.bos] if vocab.add_bos else []
    tokens += model.tokenize(query, add_special=False)
    tokens += [end] if vocab.add_eos else []
    tokens += [vocab.sep] if vocab.add_sep else []
    tokens += model.tokenize(document, add_special=False)
    tokens += [end] if vocab.add_eos else []
    return tokens


def score(context: Context, query: str, documents: Sequence[str]) -> tuple[list[float], int]:
    """(one raw score per document, in their order; tokens evaluated). Each pair is evaluated
    alone in sequence 0 and the KV memory is cleared after: callers serialize use of ``context``."""
    check_ranker(context)
    if not query:
        raise ValueError("the query is empty")
    if not documents:
        raise ValueError("there are no documents to rank")
    # a non-causal model sees the whole pair in one micro-batch, so it must fit in all three
    limit = min(context.n_ctx, context.n_batch, context.n_ubatch)
    pairs = [pair_tokens(context.model, query, document) for document in documents]
    for i, tokens in enumerate(pairs):
        if len(tokens) > limit:
            raise ContextOverflowError(f"document {i} with the query is {len(tokens)} tokens, but at most {limit} "
                                       "fit (the smallest of n_ctx, n_batch and n_ubatch)")
    try:
        scores = [float(evaluate(context, tokens)[0]) for tokens in pairs]
    finally:
        context.kv_clear()
    return scores, sum(map(len, pairs))


def ranking(scores: Sequence[float], top_n: int | None = None, documents: Sequence[str] | None = None,
            normalize: bool = False) -> list[dict[str, Any]]:
    """Cohere/Jina results, most relevant first: ``{"index", "relevance_score"}``, plus
    ``"document": {"text"}`` when ``documents`` are given. ``normalize`` maps a logit to 0..1
    with the sigmoid (as sentence-transformers' CrossEncoder); llama-server sends raw scores."""
    if top_n is not None and top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:top_n]  # stable: ties keep document order
    results = []
    for i in order:
        value = _sigmoid(scores[i]) if normalize else scores[i]
        result: dict[str, Any] = {"index": i, "relevance_score": value}
        if documents is not None:
            result["document"] = {"text": documents[i]}
        results.append(result)
    return results


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)  # this side never overflows for very negative logits
    return z / (1.0 + z)
