"""Sampling settings of one request, and the Sampler chain they stand for."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from ..model import Model
from ..sampler import Sampler

DRY_BREAKERS = ("\n", ":", '"', "*")  # llama.cpp's default sequence breakers


def _window(last_n: int, n_ctx: int) -> int:
    """llama.cpp's ``*_last_n``: 0 turns the stage off, -1 means the whole context."""
    return n_ctx if last_n < 0 else last_n


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """llama-cpp-python's sampling arguments plus llama.cpp's extras; ``temperature <= 0`` means greedy."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0
    top_n_sigma: float = -1.0
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = -1
    dry_sequence_breakers: tuple[str, ...] = DRY_BREAKERS
    min_keep: int = 1
    seed: int | None = None
    logit_bias: Mapping[int, float] | None = None
    grammar: str | None = None
    grammar_triggers: tuple[str, ...] = ()  # regexes: the grammar applies only once one matches

    def __post_init__(self) -> None:
        numbers = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if isinstance(getattr(self, f.name), float)}
        for name, value in numbers.items():
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        checks = [
            (self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}"),
            (0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}"),
            (0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1], got {self.min_p}"),
            (0.0 < self.typical_p <= 1.0, f"typical_p must be in (0, 1], got {self.typical_p}"),
            (self.repeat_penalty > 0.0, f"repeat_penalty must be > 0, got {self.repeat_penalty}"),
            (-2.0 <= self.frequency_penalty <= 2.0,
             f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}"),
            (-2.0 <= self.presence_penalty <= 2.0, f"presence_penalty must be in [-2, 2], got {self.presence_penalty}"),
            (self.penalty_last_n >= -1, f"penalty_last_n must be >= -1, got {self.penalty_last_n}"),
            (self.mirostat_mode in (0, 1, 2), f"mirostat_mode must be 0, 1 or 2, got {self.mirostat_mode}"),
            (0.0 <= self.xtc_probability <= 1.0, f"xtc_probability must be in [0, 1], got {self.xtc_probability}"),
            (0.0 <= self.xtc_threshold <= 1.0, f"xtc_threshold must be in [0, 1], got {self.xtc_threshold}"),
            (self.dry_multiplier >= 0.0, f"dry_multiplier must be >= 0, got {self.dry_multiplier}"),
            (self.dry_allowed_length >= 0, f"dry_allowed_length must be >= 0, got {self.dry_allowed_length}"),
            (self.dry_penalty_last_n >= -1, f"dry_penalty_last_n must be >= -1, got {self.dry_penalty_last_n}"),
            (self.min_keep >= 0, f"min_keep must be >= 0, got {self.min_keep}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def sampler(self, model: Model, default_seed: int, history: Sequence[int] = (), n_ctx: int = 0) -> Sampler:
        """The chain, in llama.cpp's default order: bias, penalties, DRY, grammar, then the
        truncations, temperature and the final draw.

        The penalties see the last ``penalty_last_n`` tokens of ``history`` (the prompt), as
        llama-server primes them; the grammar never sees it. ``n_ctx`` resolves the ``-1``
        (whole context) windows.
        """
        seed = default_seed if self.seed is None else self.seed
        chain = Sampler()
        if self.logit_bias:
            chain.logit_bias(model, {int(t): float(b) for t, b in self.logit_bias.items()})
        seen = 0  # how much of the history the stages so far remember
        penalty_window = _window(self.penalty_last_n, n_ctx)
        if penalty_window and (self.repeat_penalty != 1.0 or self.frequency_penalty or self.presence_penalty):
            chain.penalties(model, penalty_window, self.repeat_penalty, self.frequency_penalty, self.presence_penalty)
            seen = penalty_window
        dry_window = _window(self.dry_penalty_last_n, n_ctx)
        if self.dry_multiplier > 0.0 and dry_window:
            chain.dry(model, self.dry_multiplier, self.dry_base, self.dry_allowed_length, dry_window,
                      self.dry_sequence_breakers)
            seen = max(seen, dry_window)
        for token in history[-seen:] if seen else ():  # each stage keeps its own last n; nothing after sees it
            chain.accept(token)
        if self.grammar and self.grammar_triggers:
            chain.grammar_lazy(model, self.grammar, trigger_patterns=self.grammar_triggers)
        elif self.grammar:
            chain.grammar(model, self.grammar)
        if self.temperature <= 0:
            return chain.greedy()
        if self.mirostat_mode == 1:
            return chain.temp(self.temperature).mirostat(model, seed, self.mirostat_tau, self.mirostat_eta)
        if self.mirostat_mode == 2:
            return chain.temp(self.temperature).mirostat_v2(seed, self.mirostat_tau, self.mirostat_eta)
        if self.top_n_sigma > 0:
            chain.top_n_sigma(self.top_n_sigma)
        if self.top_k > 0:
            chain.top_k(min(self.top_k, model.vocab.n_tokens))  # more than the vocabulary keeps it all
        if self.typical_p < 1.0:
            chain.typical(self.typical_p, self.min_keep)
        if self.top_p < 1.0:
            chain.top_p(self.top_p, self.min_keep)
        if self.min_p > 0.0:
            chain.min_p(self.min_p, self.min_keep)
        if self.xtc_probability > 0.0:
            chain.xtc(self.xtc_probability, self.xtc_threshold, self.min_keep, seed)
        return chain.temp(self.temperature, self.dynatemp_range, self.dynatemp_exponent).dist(seed)
