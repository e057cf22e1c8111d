"""Perplexity the way llama.cpp's ``llama-perplexity`` computes it.

The text is tokenized once (with BOS) and cut into chunks of ``n_ctx`` tokens; each chunk
starts again with BOS and is evaluated from an empty cache, and only its second half is
scored, so every scored token has at least ``n_ctx / 2`` tokens of context. The estimate
is exp(mean negative log-likelihood) with the standard error of that mean.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from .batch import Batch
from .context import Context
from .errors import ContextOverflowError
from .model import Model


@dataclasses.dataclass(frozen=True)
class Perplexity:
    ppl: float
    uncertainty: float  # the +/- llama.cpp prints
    chunks: int
    scored_tokens: int


def _log_prob_of(rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    shifted = rows - rows.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return shifted[np.arange(len(targets)), targets] - log_norm


def perplexity(model: Model, text: str, n_ctx: int = 512, *, n_threads: int | None = None, n_chunks: int = -1,
               progress: Callable[[int, float], None] | None = None) -> Perplexity:
    tokens = np.asarray(model.tokenize(text, add_special=True), dtype=np.int32)
    if len(tokens) < 2 * n_ctx:
        raise ContextOverflowError(f"perplexity with a context of {n_ctx} needs at least {2 * n_ctx} tokens; "
                                   f"the text has {len(tokens)}")
    n_total = len(tokens) // n_ctx if n_chunks < 0 else min(n_chunks, len(tokens) // n_ctx)
    first = n_ctx // 2
    add_bos = model.vocab.add_bos
    nll = nll2 = 0.0
    count = 0
    with Context(model, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=min(512, n_ctx), n_threads=n_threads) as ctx:
        batch = Batch(n_ctx)
        for chunk in range(n_total):
            window = tokens[chunk * n_ctx:(chunk + 1) * n_ctx].copy()
            targets = window[first + 1:].copy()  # scored against the original tokens
            if add_bos:
                window[0] = model.vocab.bos
            ctx.kv_clear()
            batch.clear()
            batch.add_sequence(window, output=False)
            batch.outputs[first:n_ctx] = 1
            ctx.decode(batch)
            for start in range(0, len(targets), 256):  # a block of rows at a time bounds the memory
                stop = min(start + 256, len(targets))
                rows = np.stack([np.array(ctx.logits(first + r)) for r in range(start, stop)])
                log_probs = _log_prob_of(rows, targets[start:stop])
                nll -= log_probs.sum()
                nll2 += (log_probs ** 2).sum()
            count += len(targets)
            if progress is not None:
                progress(chunk + 1, math.exp(nll / count))
    mean, mean2 = nll / count, nll2 / count
    ppl = math.exp(mean)
    variance = mean2 - mean * mean
    return Perplexity(ppl, math.sqrt(variance / (count - 1)) * ppl if variance > 0 else 0.0, n_total, count)
