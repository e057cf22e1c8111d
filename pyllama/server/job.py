"""Job: one request as the engine runs it, with what the submitter decided for it."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from ..generation.generator import Event, Generation, Request
from ..lora import AppliedLoras


@dataclasses.dataclass
class Job:
    request: Request
    max_tokens: int  # tokens it may generate (the route folded in the room left in the context)
    seed: int
    emit: Callable[[Event], None] = lambda event: None  # called from the engine thread; set by the submitter
    keep: int = 0  # with context shifting: tokens at the start that are never dropped
    cache_prompt: bool = True  # reuse a slot's cached prefix
    slot_id: int = -1  # a particular slot (llama-server's id_slot); -1: the best idle one
    # built by the submitter (its grammar compiled off this thread), else by the engine at admission
    generation: Generation | None = None
    progress: bool = False  # report prompt evaluation as it goes (llama-server's return_progress)
    timings_each: bool = False  # every event carries the timings so far (timings_per_token)
    loras: AppliedLoras = ()  # LoRA adapters and scales it runs with
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    submitted: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def prompt_tokens(self) -> list[int]:
        return self.request.prompt_tokens
