"""Sampling settings of one request, and the Sampler chain they stand for."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..model import Model
from ..sampler import Sampler


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """llama-cpp-python's sampling arguments; ``temperature <= 0`` means greedy."""

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
    seed: int | None = None
    logit_bias: Mapping[int, float] | None = None
    grammar: str | None = None
    grammar_triggers: tuple[str, ...] = ()  # regexes: the grammar applies only once one matches

    def __post_init__(self) -> None:
        checks = [
            (self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}"),
            (0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}"),
            (0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1], got {self.min_p}"),
            (0.0 < self.typical_p <= 1.0, f"typical_p must be in (0, 1], got {self.typical_p}"),
            (self.repeat_penalty > 0.0, f"repeat_penalty must be > 0, got {self.repeat_penalty}"),
            (-2.0 <= self.frequency_penalty <= 2.0, f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}"),
            (-2.0 <= self.presence_penalty <= 2.0, f"presence_penalty must be in [-2, 2], got {self.presence_penalty}"),
            (self.mirostat_mode in (0, 1, 2), f"mirostat_mode must be 0, 1 or 2, got {self.mirostat_mode}"),
            (self.temperature == self.temperature, "temperature must be a number"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def sampler(self, model: Model, default_seed: int) -> Sampler:
        """The chain, in llama.cpp's default order: bias, penalties, grammar, then truncation,
        temperature and the final draw."""
        seed = default_seed if self.seed is None else self.seed
        chain = Sampler()
        if self.logit_bias:
            chain.logit_bias(model, {int(t): float(b) for t, b in self.logit_bias.items()})
        if self.repeat_penalty != 1.0 or self.frequency_penalty or self.presence_penalty:
            chain.penalties(model, self.penalty_last_n, self.repeat_penalty, self.frequency_penalty,
                            self.presence_penalty)
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
        if self.top_k > 0:
            chain.top_k(self.top_k)
        if self.typical_p < 1.0:
            chain.typical(self.typical_p)
        if self.top_p < 1.0:
            chain.top_p(self.top_p)
        if self.min_p > 0.0:
            chain.min_p(self.min_p)
        return chain.temp(self.temperature).dist(seed)
