"""Drafters for speculative decoding: they guess the next tokens, the target model checks them.

A drafter is any callable ``draft(input_ids: np.ndarray, /, **kwargs) -> np.ndarray`` (the
protocol of llama-cpp-python's ``LlamaDraftModel``), so ported drafters work unchanged; one that
takes keywords is told ``max_tokens``, the most guesses that will be checked. The target
verifies a whole guess in one batch and keeps the longest prefix its own sampler agrees
with, so the output is exactly what plain decoding would give.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Callable, Iterator

import numpy as np

from ..batch import Batch
from ..context import Context
from ..errors import ContextFullError
from ..model import Model
from ..sampler import Sampler
from .draft_policy import DraftPolicy
from .kv_sequence import KVSequence

Drafter = Callable[[np.ndarray], np.ndarray]


def guess(drafter: Drafter, tokens: list[int], k: int) -> list[int]:
    """Up to ``k`` guesses to follow ``tokens``; a draft model told ``max_tokens=k`` runs no
    further than will be checked (a plain ``draft(input_ids)`` function is called as it is)."""
    ids = np.asarray(tokens, dtype=np.int32)
    plain_function = inspect.isfunction(drafter) or inspect.ismethod(drafter)
    takes_limit = _takes_limit(drafter if plain_function else type(drafter).__call__)
    return [int(t) for t in (drafter(ids, max_tokens=k) if takes_limit else drafter(ids))[:k]]


@functools.lru_cache(maxsize=64)  # asked before every guess, and a signature takes longer than a small guess
def _takes_limit(call: Callable[..., object]) -> bool:
    try:
        parameters = inspect.signature(call).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.kind is p.VAR_KEYWORD or p.name == "max_tokens" for p in parameters)


def verified_tokens(session: KVSequence, sample: Callable[..., int], drafter: Drafter,
                    policy: DraftPolicy) -> Iterator[tuple[int, int]]:
    """``(token, logits row)`` pairs, the same tokens plain decoding would give: the drafter
    guesses (as many tokens as ``policy`` finds worth it), the guess is verified in one batch
    with the target's own ``sample(context, row)``, and what it agrees with is handed out plus
    its first disagreement. Ends when the context is full; the caller stops earlier by closing it."""
    row = -1
    token = sample(session.context, row)
    while True:
        yield token, row
        k = policy.draft_length(room=session.n_ctx - len(session.tokens) - 2)
        draft: list[int] = []
        if k:
            started = time.perf_counter()
            draft = guess(drafter, session.tokens + [token], k)
            policy.drafted(len(draft), time.perf_counter() - started)
        started = time.perf_counter()
        if not draft:
            try:
                session.append(token)
            except ContextFullError:
                return
            policy.cost.observe(1, time.perf_counter() - started)
            row = -1
            token = sample(session.context, row)
            continue
        session.extend([token] + draft)
        policy.cost.observe(1 + len(draft), time.perf_counter() - started)
        for i, guessed in enumerate(draft):
            token, row = sample(session.context, i), i
            if token != guessed:
                session.truncate(len(session.tokens) - (len(draft) - i))
                policy.verified(len(draft), i)
                break
            yield token, row
        else:
            policy.verified(len(draft), len(draft))
            row = len(draft)
            token = sample(session.context, row)


class PromptLookupDecoding:
    """Guess by finding the latest n-gram earlier in the text and copying what followed it
    (llama.cpp's prompt lookup); free, and strong when the output quotes the prompt."""

    def __init__(self, max_ngram_size: int = 2, num_pred_tokens: int = 10) -> None:
        if max_ngram_size < 1 or num_pred_tokens < 1:
            raise ValueError("max_ngram_size and num_pred_tokens must be >= 1")
        self.max_ngram_size = max_ngram_size
        self.num_pred_tokens = num_pred_tokens

    def __call__(self, input_ids: np.ndarray, /, max_tokens: int | None = None, **kwargs: object) -> np.ndarray:
        ids = np.asarray(input_ids, dtype=np.int32)
        n = min(self.num_pred_tokens, max_tokens or self.num_pred_tokens)
        for size in range(min(self.max_ngram_size, len(ids) - 1), 0, -1):
            tail = ids[-size:]
            windows = np.lib.stride_tricks.sliding_window_view(ids[:-1], size)
            matches = np.nonzero((windows == tail).all(axis=1))[0]
            for start in matches[::-1]:
                follow = ids[start + size:start + size + n]
                if len(follow):
                    return follow.copy()
        return np.empty(0, dtype=np.int32)


class DraftModel:
    """A smaller GGUF model with the same vocabulary that guesses greedily (llama.cpp ``-md``).

    It keeps its own context and reuses the prefix it already evaluated between guesses.
    """

    def __init__(self, model: str | os.PathLike[str] | Model, num_pred_tokens: int = 8, n_ctx: int = 4096,
                 n_threads: int | None = None, n_gpu_layers: int = 0) -> None:
        self.model = model if isinstance(model, Model) else Model(model, n_gpu_layers=n_gpu_layers)
        self.num_pred_tokens = num_pred_tokens
        self.context = Context(self.model, n_ctx=n_ctx, n_threads=n_threads)
        self._session = KVSequence(self.context)
        self._sampler = Sampler().greedy()
        self._batch = Batch(1)

    def __call__(self, input_ids: np.ndarray, /, max_tokens: int | None = None, **kwargs: object) -> np.ndarray:
        ids = [int(t) for t in input_ids]
        room = self._session.n_ctx - len(ids)
        if room <= 1 or not ids:
            return np.empty(0, dtype=np.int32)
        self._session.prefill(ids)
        guesses = []
        n = min(self.num_pred_tokens, max_tokens or self.num_pred_tokens, room - 1)
        for i in range(n):
            token = self._sampler.sample(self.context)
            if self.model.vocab.is_eog(token):
                break
            guesses.append(token)
            if i + 1 < n:  # the last guess needs no decode: nothing is guessed after it
                self._session.append(token)
        return np.asarray(guesses, dtype=np.int32)

    def close(self) -> None:
        self.context.close()
