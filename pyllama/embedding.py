"""Embeddings of texts with a Context made with ``embeddings=True`` (Llama and the server).

A pooled model gives one vector per text; with pooling NONE, one vector per token. Each text
is evaluated alone in sequence 0; the KV memory is cleared before and after, so the Context
can be shared with nothing else while this runs (callers serialize).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .batch import Batch
from .context import Context
from .enums import PoolingType
from .errors import ContextOverflowError


def normalized(vectors: np.ndarray, norm: float) -> np.ndarray:
    """llama.cpp's ``embd_normalize``: -1 none, 0 max-absolute (scaled to int16's range), 1 taxicab,
    2 Euclidean, more: that p-norm. Each row on its own."""
    if norm < 0:
        return vectors
    if norm == 0:
        size = np.abs(vectors).max(axis=-1, keepdims=True) / 32760.0
    else:
        size = np.sum(np.abs(vectors) ** norm, axis=-1, keepdims=True) ** (1.0 / norm)
    return vectors / np.maximum(size, 1e-12)


def embed(context: Context, texts: Sequence[str | Sequence[int]], *, normalize: bool | float = True,
          truncate: bool = True) -> tuple[list, int]:
    """(one embedding per text, tokens evaluated). A text may be given as token ids.
    ``normalize``: True for Euclidean, False for none, or llama.cpp's ``embd_normalize`` number."""
    norm = 2.0 if normalize is True else -1.0 if normalize is False else float(normalize)
    model = context.model
    results, count = [], 0
    for text in texts:
        tokens = model.tokenize(text, add_special=True, parse_special=True) if isinstance(text, str) else list(text)
        if not tokens:
            raise ValueError("cannot embed an empty input")
        if any(not 0 <= t < context.n_vocab for t in tokens):
            raise ValueError(f"token ids must be in 0..{context.n_vocab - 1}")
        if len(tokens) > context.n_batch:
            if not truncate:
                raise ContextOverflowError(f"the input is too large to process: {len(tokens)} tokens, and a batch "
                                           f"holds {context.n_batch}")
            tokens = tokens[: context.n_batch]
        count += len(tokens)
        results.append(normalized(evaluate(context, tokens), norm).tolist())
    context.kv_clear()
    return results, count


def evaluate(context: Context, tokens: Sequence[int]) -> np.ndarray:
    """Run ``tokens`` alone in sequence 0 and copy out the pooled vector (for RANK pooling, the
    scores), or with pooling NONE one row per token. The KV memory is cleared first."""
    context.kv_clear()
    batch = Batch.of(list(tokens), output=True)
    # encode only models with an encoder: llama_decode runs a context without KV memory (BERT) as
    # an encoder itself, while llama_encode on a decoder (pooled Llama, Qwen3 reranker) crashes
    if context.model.has_encoder:
        context.encode(batch)
    else:
        context.decode(batch)
    if context.pooling_type == PoolingType.NONE:
        return np.stack([np.array(context.embeddings(i)) for i in range(len(tokens))])
    return np.array(context.sequence_embeddings(0))
