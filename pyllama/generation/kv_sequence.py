"""KVSequence: one token sequence kept in a Context's KV memory across calls.

A new prompt that shares a prefix with what the memory holds evaluates only the new part.
When generation reaches the end of the context, the session either stops (the caller sees
ContextFullError) or, when ``keep`` is set, drops the older half of the tokens after the
first ``keep`` and shifts the rest down, as llama.cpp's ``--keep`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..batch import Batch
from ..context import Context
from ..errors import ContextFullError, ContextOverflowError
from ..multimodal.prompt import MediaChunk, evaluate, reusable_prefix

SEQ = 0


class KVSequence:
    def __init__(self, context: Context, keep: int | None = None) -> None:
        self.context = context
        self.keep = keep
        self.tokens: list[int] = []  # what the KV memory holds, position i = tokens[i]
        self.last_prompt_evaluated = 0  # tokens the last prefill had to run (the rest was reused)
        self._step = Batch(1)

    @property
    def n_ctx(self) -> int:
        return self.context.n_ctx

    def reset(self) -> None:
        self.context.kv_clear()
        self.tokens = []

    def prefill(self, prompt: Sequence[int], all_logits: bool = False,
                media: Mapping[int, MediaChunk] | None = None) -> list[np.ndarray]:
        """Bring the memory to exactly ``prompt``; logits of its last token are then current.

        With ``all_logits`` the logits of every evaluated prompt token are returned (copies),
        and nothing is reused, so every position has them. ``media``: the images/audio of a
        :class:`~pyllama.multimodal.MediaPrompt` (its ``tokens`` are the ``prompt``).
        """
        if not prompt:
            raise ValueError("the prompt is empty")
        if len(prompt) > self.n_ctx:
            raise ContextOverflowError(f"the prompt has {len(prompt)} tokens but the context holds {self.n_ctx}")
        if media and all_logits:
            raise ValueError("prompt logprobs (echo) are not available for prompts with images or audio")
        # the last token runs again for fresh logits; an image is reused whole or not at all
        reuse = 0 if all_logits else reusable_prefix(self.tokens, prompt, media or {})
        if not self.context.kv_remove(SEQ, reuse, -1):  # memory that cannot cut a sequence (recurrent)
            self.context.kv_clear()
            reuse = 0
        del self.tokens[reuse:]
        if media:
            evaluate(self.context, prompt, media, reuse, SEQ)
            self.tokens.extend(prompt[reuse:])
            self.last_prompt_evaluated = len(prompt) - reuse
            return []
        rows = []
        n_batch = self.context.n_batch
        for start in range(reuse, len(prompt), n_batch):
            chunk = prompt[start:start + n_batch]
            self.context.decode(Batch.of(chunk, start_pos=start, output=True if all_logits else "last"))
            self.tokens.extend(chunk)
            if all_logits:
                rows += [np.array(self.context.logits(i)) for i in range(len(chunk))]
        self.last_prompt_evaluated = len(prompt) - reuse
        return rows

    def append(self, token: int) -> None:
        """Evaluate one generated token; its logits become current."""
        if len(self.tokens) >= self.n_ctx:
            if self.keep is None:
                raise ContextFullError(f"the context is full ({self.n_ctx} tokens)")
            self._shift()
        batch = self._step
        batch.clear()
        batch.add(token, len(self.tokens), (SEQ,), True)
        self.context.decode(batch)
        self.tokens.append(token)

    def extend(self, tokens: Sequence[int]) -> None:
        """Evaluate several tokens at once with logits for each (a speculative guess to verify);
        the caller makes sure they fit."""
        self.context.decode(Batch.of(tokens, start_pos=len(self.tokens), output=True))
        self.tokens.extend(tokens)

    def truncate(self, n: int) -> None:
        """Forget everything after the first ``n`` tokens (a rejected guess)."""
        if self.context.kv_remove(SEQ, n, -1):
            del self.tokens[n:]
            return
        kept = self.tokens[:n]  # memory that cannot cut a sequence (recurrent): evaluate the kept part again
        self.reset()
        if kept:
            self.prefill(kept)

    def _shift(self) -> None:
        start, end = discarded_by_shift(self.tokens, self.keep or 0)
        if start >= end:
            raise ContextFullError(f"the context is full ({self.n_ctx} tokens) and only an image could be dropped")
        self.context.kv_remove(SEQ, start, end)
        self.context.kv_shift(SEQ, end, len(self.tokens), start - end)
        del self.tokens[start:end]


def discarded_by_shift(tokens: Sequence[int], keep: int) -> tuple[int, int]:
    """The span a context shift drops: the older half after the first ``keep`` tokens, moved so
    that media positions (runs of negative placeholders) are dropped whole or kept whole."""
    keep = min(keep, len(tokens) - 2)
    start, end = keep, keep + (len(tokens) - keep) // 2
    while start < end and start > 0 and tokens[start] < 0 and tokens[start - 1] < 0:
        start += 1
    while end < len(tokens) - 1 and tokens[end] < 0 and tokens[end - 1] < 0:
        end += 1
    return start, end


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
