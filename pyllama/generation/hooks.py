"""Python code inside one generation: logits processors and stopping criteria.

The protocol is llama-cpp-python's (and transformers'): both are called with the token ids so
far (the prompt and what was generated, a read-only ``numpy.intc`` array) and the logits of
the step, float32 of length n_vocab: writable for a processor, read-only for a criterion. A
processor returns the scores to sample from (it may change the array in place and return it);
a criterion returns True to stop. The logits are views of llama.cpp's buffer, valid for that
step only (the next decode overwrites them: copy what you keep), as llama-cpp-python's are.

A criterion is asked after each token is drawn, before it counts: one that returns True when
it sees N generated ids ends the generation with exactly N tokens, and ``finish_reason`` "stop".
Both only run when a request has them; a request without them samples as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..context import Context
from ..sampler import Sampler

LogitsProcessor = Callable[[np.ndarray, np.ndarray], np.ndarray]
StoppingCriterion = Callable[[np.ndarray, np.ndarray], bool]


class LogitsProcessorList(list):
    """Processors applied in order, each to the scores the one before returned."""

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


class StoppingCriteriaList(list):
    """Stops when any criterion says so; every criterion sees every step (some count steps)."""

    def __call__(self, input_ids: np.ndarray, logits: np.ndarray) -> bool:
        verdicts = [bool(criterion(input_ids, logits)) for criterion in self]
        return any(verdicts)


class TokenHooks:
    """One request's processor and criterion, and the token ids they are shown."""

    def __init__(self, prompt: Sequence[int], processor: LogitsProcessor | None,
                 criterion: StoppingCriterion | None) -> None:
        self.processor = processor
        self.criterion = criterion
        self._ids = np.empty(max(64, 2 * len(prompt)), dtype=np.intc)
        self._ids[:len(prompt)] = prompt
        self._n = len(prompt)

    def input_ids(self) -> np.ndarray:
        ids = self._ids[:self._n]  # positions before n never change: a view stays true
        ids.flags.writeable = False
        return ids

    def accept(self, token: int) -> None:
        if self._n == len(self._ids):
            self._ids = np.concatenate([self._ids, np.empty_like(self._ids)])
        self._ids[self._n] = token
        self._n += 1

    def sample(self, sampler: Sampler, context: Context, row: int) -> int:
        """Draw from ``row`` after the processor rewrote its logits. It works on llama.cpp's own
        buffer, so a processor that changes the array in place costs no copy, and every stage
        of the sampler chain (and logprobs) sees the processed scores."""
        if self.processor is not None:
            logits = context.logits(row, writable=True)
            scores = self.processor(self.input_ids(), logits)
            if scores is None:
                raise TypeError("the logits processor returned None; it must return the scores")
            if scores is not logits:
                scores = np.asarray(scores, dtype=np.float32)
                if scores.shape != logits.shape:
                    raise ValueError(f"the logits processor returned scores of shape {scores.shape}, "
                                     f"expected {logits.shape} (n_vocab)")
                logits[:] = scores
        return sampler.sample(context, row)

    def stops(self, context: Context, row: int) -> bool:
        """Whether the criterion ends generation before the token drawn from ``row`` counts."""
        return self.criterion is not None and bool(self.criterion(self.input_ids(), context.logits(row)))
