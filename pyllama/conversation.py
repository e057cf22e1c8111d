"""ChatSession: a conversation that keeps its history and never outgrows the context.

Like LLamaSharp's ChatSession: it holds the history, stops at anti-prompts, can transform
each reply, and before every turn makes the prompt fit. With ``overflow="drop_oldest"``
the oldest turns go first (the system prompt stays); with ``overflow="error"`` a turn that
does not fit raises ContextOverflowError and the history is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .chat import plan_chat
from .errors import ContextOverflowError

if TYPE_CHECKING:
    from .llama import Llama


class ChatSession:
    def __init__(self, llm: Llama, system_prompt: str | None = None, *, max_tokens: int = 256,
                 overflow: str = "drop_oldest", anti_prompts: Sequence[str] = (),
                 output_transform: Callable[[str], str] | None = None, **sampling: Any) -> None:
        if overflow not in ("drop_oldest", "error"):
            raise ValueError("overflow must be 'drop_oldest' or 'error'")
        self.llm = llm
        self.max_tokens = max_tokens
        self.overflow = overflow
        self.anti_prompts = list(anti_prompts)
        self.output_transform = output_transform
        self.sampling = sampling
        self.history: list[dict[str, str]] = [{"role": "system", "content": system_prompt}] if system_prompt else []
        self.dropped = 0  # turns removed to make room, over the session's life

    def _prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        # the prompt exactly as a turn would send it (one BOS, whatever the template writes)
        return len(plan_chat(self.llm.chat_template, self.llm.model.vocab, messages).prompt_tokens)

    def _fitted(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        budget = self.llm.n_ctx() - self.max_tokens
        keep_system = 1 if messages and messages[0]["role"] == "system" else 0
        while self._prompt_tokens(messages) > budget:
            if self.overflow == "error" or len(messages) - keep_system <= 1:
                raise ContextOverflowError(
                    f"the conversation needs {self._prompt_tokens(messages)} tokens plus {self.max_tokens} for the "
                    f"reply, but the context holds {self.llm.n_ctx()}")
            # drop the oldest exchange (a user turn and what answered it)
            end = keep_system + 1
            while end < len(messages) - 1 and messages[end]["role"] != "user":
                end += 1
            self.dropped += end - keep_system
            messages = messages[:keep_system] + messages[end:]
        return messages

    def _finish(self, messages: list[dict[str, str]], reply: str) -> str:
        if self.output_transform is not None:
            reply = self.output_transform(reply)
        self.history = messages + [{"role": "assistant", "content": reply}]
        return reply

    def send(self, text: str, **overrides: Any) -> str:
        """Add a user turn, generate the reply, keep both; returns the reply."""
        messages = self._fitted(self.history + [{"role": "user", "content": text}])
        out = self.llm.create_chat_completion(messages, max_tokens=self.max_tokens, stop=self.anti_prompts or None,
                                              **{**self.sampling, **overrides})
        return self._finish(messages, out["choices"][0]["message"]["content"] or "")

    def stream(self, text: str, **overrides: Any) -> Iterator[str]:
        """Like send, yielding the reply as it is generated (the transform applies to the stored turn)."""
        messages = self._fitted(self.history + [{"role": "user", "content": text}])
        parts = []
        for chunk in self.llm.create_chat_completion(messages, max_tokens=self.max_tokens, stream=True,
                                                     stop=self.anti_prompts or None, **{**self.sampling, **overrides}):
            piece = chunk["choices"][0]["delta"].get("content")
            if piece:
                parts.append(piece)
                yield piece
        self._finish(messages, "".join(parts))
