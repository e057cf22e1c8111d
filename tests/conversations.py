"""A chat workload whose prompts grow: K conversations sharing a system prompt, each turn sent
with the whole history so far, turn t of every conversation (at once) before turn t+1.

What prefix-aware routing is for: each turn's prompt extends the previous one, so a replica
whose engine slot still holds the conversation evaluates only the new messages. Used by
tests/test_ray.py (counts) and bench/ray_serve.py (counts and times).
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import openai

SYSTEM = ("You are the ship's computer. Answer the crew in one short sentence, plainly, and never repeat "
          "the question back. ")
QUESTIONS = ("what is our heading", "how far to the next port", "is the weather changing", "who is on watch",
             "what is for dinner", "how deep is the water here", "when do we arrive", "why are we slowing down")
READABLE = {str(t): -100 for t in range(3, 259)} | {"2": -100}  # the tiny test models: words only, no EOS


@dataclasses.dataclass
class Totals:
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the engine reused from a cache (timings.cache_n)
    first_token_s: list[float] = dataclasses.field(default_factory=list)

    @property
    def reuse(self) -> float:
        return self.cached_tokens / max(self.prompt_tokens, 1)


def _turn(client: openai.OpenAI, model: str, messages: list[dict[str, str]],
          max_tokens: int) -> tuple[str, int, int, float]:
    """One streamed chat request: (reply, prompt tokens, cached tokens, seconds to the first token)."""
    started, first, reply, prompt, cached = time.perf_counter(), None, [], 0, 0
    for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0,
                                                logit_bias=READABLE, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter() - started
            reply.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            prompt = chunk.usage.prompt_tokens
            cached = (chunk.model_extra.get("timings") or {}).get("cache_n", 0)
    return "".join(reply), prompt, cached, first if first is not None else time.perf_counter() - started


def grow_conversations(client: openai.OpenAI, model: str, conversations: int = 6, turns: int = 4,
                       max_tokens: int = 8, topic: str = "") -> Totals:
    """``topic`` makes the conversations differ from another run's (a cache warmed by it does not count)."""
    histories = [[{"role": "system", "content": f"{topic}{SYSTEM}"}] for _ in range(conversations)]
    totals = Totals()
    with ThreadPoolExecutor(conversations) as pool:
        for turn in range(turns):
            for k, history in enumerate(histories):
                history.append({"role": "user", "content": f"{QUESTIONS[(k + turn) % len(QUESTIONS)]}, {k}?"})
            for history, (reply, prompt, cached, first) in zip(histories, pool.map(
                    lambda history: _turn(client, model, history, max_tokens), histories)):
                history.append({"role": "assistant", "content": reply})
                totals.requests += 1
                totals.prompt_tokens += prompt
                totals.cached_tokens += cached
                totals.first_token_s.append(first)
    return totals
