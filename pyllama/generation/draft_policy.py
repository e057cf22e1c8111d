"""How many tokens to guess before each decode in speculative decoding: as many as pay for
themselves, and none when guessing would make decoding slower.

Verifying k guesses puts k more tokens in a decode. That pays when the guesses the target
accepts outweigh the extra decode (and drafting) time. A :class:`DraftPolicy` keeps two online
estimates: how often a guess is accepted (per sequence), and how long a decode takes for a given
number of tokens (``fixed + per_token * n``, fitted from the decodes it has timed; shared by the
sequences of one context). It drafts the k with the best expected tokens per second, and
nothing when no k beats plain decoding by a margin. A sequence it stopped drafting for is
probed again now and then, less often the longer guesses keep failing, so a text that turns
repetitive is still noticed while the probes cost at most a few percent (a probe with a slow
draft model is rare, as it must first catch up on the text).
"""

from __future__ import annotations

import dataclasses
import math

MARGIN = 1.05  # drafting must promise 5% more tokens per second than plain decoding
PROBE_BUDGET = 0.02  # share of the decoding time that probing for guesses that pay again may take
FORGET = 0.95  # weight of the past in the running estimates
FITTED_TOKENS = 64  # the cost fit covers decodes up to this size: generating slots and their guesses


@dataclasses.dataclass
class SpeculationStats:
    drafted: int = 0
    accepted: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


class LinearFit:
    """``seconds(n)`` = fixed + per_token * n, a running least-squares fit that forgets slowly."""

    def __init__(self) -> None:
        self._w = self._n = self._t = self._nn = self._nt = 0.0

    def observe(self, n_tokens: int, seconds: float) -> None:
        f = FORGET
        self._w, self._n, self._t = f * self._w + 1, f * self._n + n_tokens, f * self._t + seconds
        self._nn, self._nt = f * self._nn + n_tokens * n_tokens, f * self._nt + n_tokens * seconds

    @property
    def known(self) -> bool:
        """Enough observations of different sizes to tell the fixed part from the per-token part."""
        return self._w > 2 and self._w * self._nn - self._n * self._n > 1e-9 * self._w * self._w

    def line(self) -> tuple[float, float]:
        """``(fixed, per_token)``; a fit that has seen one size only is all per token."""
        spread = self._w * self._nn - self._n * self._n
        if not self.known:
            return 0.0, (self._t / self._n if self._n else 0.0)
        per_token = max(0.0, (self._w * self._nt - self._n * self._t) / spread)
        return max(0.0, (self._t - per_token * self._n) / self._w), per_token

    def seconds(self, n_tokens: int) -> float:
        fixed, per_token = self.line()
        return fixed + per_token * n_tokens


class DecodeCost:
    """What a decode of ``n`` tokens costs, and what drafting ``k`` guesses costs: prompt lookup
    costs about the same per call whatever it finds, a draft model a decode per guess."""

    def __init__(self) -> None:
        self._decodes, self._drafting = LinearFit(), LinearFit()

    def observe(self, n_tokens: int, seconds: float) -> None:
        if n_tokens <= FITTED_TOKENS:  # a long prompt's decode would bend the fit of the small ones drafting weighs
            self._decodes.observe(n_tokens, seconds)

    def observe_drafting(self, n_tokens: int, seconds: float) -> None:
        self._drafting.observe(n_tokens, seconds)

    @property
    def known(self) -> bool:
        return self._decodes.known

    def seconds(self, n_tokens: int) -> float:
        return self._decodes.seconds(n_tokens)

    def guessing_line(self, batch: int) -> tuple[float, float]:
        """``(fixed, per_guess)``: drafting k guesses and decoding them after ``batch`` tokens."""
        (decode_fixed, per_token), (draft_fixed, per_draft) = self._decodes.line(), self._drafting.line()
        return decode_fixed + per_token * batch + draft_fixed, per_token + per_draft


class DraftPolicy:
    """The draft length for one sequence; ``cost`` may be shared by sequences of one context."""

    def __init__(self, max_draft: int = 16, cost: DecodeCost | None = None, min_draft: int = 0) -> None:
        self.max_draft, self.min_draft = max_draft, min_draft
        self.cost = cost if cost is not None else DecodeCost()
        self.stats = SpeculationStats()
        self._hits, self._tries = 1.0, 2.0  # a prior: half of the guesses accepted
        self._wait, self._backoff = 0, 1  # steps until the next probe, and the probe interval
        self._learning_plain = False  # while the cost is unknown: alternate plain decodes and guesses

    @property
    def acceptance(self) -> float:
        return self._hits / self._tries

    def draft_length(self, batch: int = 1, room: int | None = None) -> int:
        """Tokens to guess for the next decode, whose batch holds ``batch`` tokens without them."""
        limit = min(self.max_draft, room if room is not None else self.max_draft)
        if limit <= 0:
            return 0
        if not self.cost.known:  # learn what decodes of different sizes cost: a drafter that always
            self._learning_plain = not self._learning_plain  # guesses would never show a plain one
            return 0 if self._learning_plain else min(limit, 4)
        a, plain = self.acceptance, self.cost.seconds(batch)
        fixed, per_guess = self.cost.guessing_line(batch)  # once: this runs before every decode
        best, best_rate = 0, 1.0 / plain if plain > 0 else 0.0
        expected, chance = 1.0, 1.0
        for k in range(1, limit + 1):
            chance *= a
            expected += chance  # tokens this decode gives: the sampled one and the accepted guesses
            rate = expected / (fixed + per_guess * k)
            if rate > best_rate * MARGIN and k >= self.min_draft:
                best, best_rate = k, rate
        if best:
            self._backoff = 1
            return best
        self._wait -= 1
        if self._wait <= 0:  # probe: is guessing paying off again?
            self._backoff = min(64, self._backoff * 2)
            # a probe costs a guess (for a draft model, catching up on the text since the last one)
            # and a longer decode: space probes so that they take at most PROBE_BUDGET of the time
            probe = fixed + per_guess - plain
            self._wait = max(self._backoff, math.ceil(probe / (PROBE_BUDGET * plain)) if plain > 0 else 0)
            return 1
        return 0

    def drafted(self, n_tokens: int, seconds: float) -> None:
        self.cost.observe_drafting(n_tokens, seconds)

    def verified(self, drafted: int, accepted: int) -> None:
        """``accepted`` of ``drafted`` guesses agreed with the target (the rest were thrown away)."""
        if not drafted:
            return
        self.stats.drafted += drafted
        self.stats.accepted += accepted
        tries = accepted + (accepted < drafted)  # guesses past the first miss were never judged
        self._hits, self._tries = FORGET * self._hits + accepted, FORGET * self._tries + tries

