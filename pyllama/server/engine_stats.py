"""The engine's counters since the start, which /metrics and /slots report."""

from __future__ import annotations

import dataclasses

from ..generation.generator import Event


@dataclasses.dataclass
class Stats:
    """Counters since the start (llama-server's /metrics)."""

    requests: int = 0
    prompt_tokens: int = 0  # evaluated (cached ones cost nothing)
    prompt_tokens_cached: int = 0
    prompt_seconds: float = 0.0
    generated_tokens: int = 0
    generation_seconds: float = 0.0
    decodes: int = 0
    busy_slot_decodes: int = 0  # slots in each decode, summed
    most_tokens: int = 0  # the most any sequence held
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    drafts: int = 0
    busy_seconds: float = 0.0
    failed_requests: int = 0

    def embedded(self, tokens: int, decodes: int, seconds: float) -> None:
        """Embeddings sample nothing, but their prompts cost decodes (llama-server counts them)."""
        self.prompt_tokens += tokens
        self.decodes += decodes
        self.prompt_seconds += seconds

    def finished(self, event: Event) -> None:
        if event.timings:
            self.prompt_seconds += event.timings["prompt_ms"] / 1e3
            self.generation_seconds += event.timings["predicted_ms"] / 1e3
