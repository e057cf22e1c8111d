"""Shaping a chat reply: generated text back into an OpenAI ``chat.completion`` (or its chunks).

:func:`chat_response` and :class:`ChatChunker` split what a :class:`~.plan.ChatPlan` generated
into content, reasoning and tool calls.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from . import tools as tooling
from .plan import THINK_CLOSE, THINK_OPEN, ChatPlan


def _split_reasoning(text: str) -> tuple[str | None, str]:
    if THINK_CLOSE not in text:
        return None, text
    head, _, tail = text.partition(THINK_CLOSE)
    return head.replace(THINK_OPEN, "", 1).strip(), tail.lstrip()


def _chat_logprobs(logprobs: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not logprobs:
        return None
    entries = []
    for token, logprob, top in zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"]):
        entries.append({"token": token, "logprob": logprob, "bytes": list(token.encode()),
                        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                                         for t, lp in (top or {}).items()]})
    return {"content": entries}


def chat_header(model: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4()}", "created": int(time.time()), "model": model}


def chat_response(plan: ChatPlan, header: dict[str, Any], completion: Mapping[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` from a finished ``text_completion``-shaped result."""
    choice0 = completion["choices"][0]
    content, calls = (tooling.parse_tool_calls(choice0["text"], plan.known_tools) if plan.known_tools
                      else (choice0["text"], []))
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if plan.reasoning and content:
        thinking, message["content"] = _split_reasoning(content)
        if thinking is not None:
            message["reasoning_content"] = thinking
    if calls:
        message["tool_calls"] = [call.as_openai() for call in calls]
        if plan.legacy_functions:
            message["function_call"] = {"name": calls[0].name, "arguments": calls[0].arguments}
    finish = "tool_calls" if calls else choice0["finish_reason"]
    return {**header, "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "logprobs": _chat_logprobs(choice0["logprobs"]),
                         "finish_reason": finish}],
            "usage": completion["usage"]}


def _could_be_call(text: str) -> bool:
    stripped = text.lstrip()
    prefixes = ("{", "[TOOL_CALLS]", "<tool_call>", "to=functions", "<|python_tag|>")
    return any(stripped.startswith(p) or p.startswith(stripped) for p in prefixes) if stripped else True


class ChatChunker:
    """Turns ``text_completion`` chunks into ``chat.completion.chunk`` s, fed one at a time (so
    a sync iterator and the async server share it). Role first, then content or reasoning
    deltas; a tool call comes whole at the end, because text that could still become a call
    is held back until it is clear."""

    def __init__(self, header: dict[str, Any], plan: ChatPlan, index: int = 0) -> None:
        self.header, self.known, self.index = header, plan.known_tools, index
        self.held, self.streaming_text = "", not plan.known_tools
        self.thinking, self.after_thinking = plan.reasoning, False

    def chunk(self, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        return {**self.header, "object": "chat.completion.chunk",
                "choices": [{"index": self.index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}

    def start(self) -> dict[str, Any]:
        return self.chunk({"role": "assistant", "content": None})  # as llama-server: no empty-string deltas

    def feed(self, part: Mapping[str, Any]) -> list[dict[str, Any]]:
        choice = part["choices"][0]
        text, finish = choice["text"], choice["finish_reason"]
        out = []
        if self.thinking and text:
            self.held += text
            if THINK_CLOSE in self.held:
                inner, _, text = self.held.partition(THINK_CLOSE)
                self.held, self.thinking, self.after_thinking = "", False, True
                out.append(self.chunk({"reasoning_content": inner.replace(THINK_OPEN, "", 1)}))
            elif THINK_OPEN in self.held or THINK_OPEN.startswith(self.held.lstrip()):
                text = ""
            else:
                text, self.held, self.thinking = self.held, "", False
        if self.after_thinking and text:  # the answer starts after the whitespace that follows </think>
            text = text.lstrip()
            self.after_thinking = not text
        if not self.streaming_text and text:
            self.held += text
            if _could_be_call(self.held):
                text = ""
            else:
                text, self.held, self.streaming_text = self.held, "", True
        if text:
            out.append(self.chunk({"content": text}, logprobs=_chat_logprobs(choice["logprobs"])))
        if finish is not None:
            held = self.held
            content, calls = tooling.parse_tool_calls(held, self.known) if self.known and held else (held or None, [])
            if content:
                out.append(self.chunk({"content": content}))
            if calls:
                out.append(self.chunk({"tool_calls": [call.as_openai(i) for i, call in enumerate(calls)]}))
            out.append(self.chunk({}, "tool_calls" if calls else finish))
        return out


def chat_chunks(completion: Iterator[dict[str, Any]], header: dict[str, Any], plan: ChatPlan) -> Iterator[dict[str, Any]]:
    chunker = ChatChunker(header, plan)
    yield chunker.start()
    for part in completion:
        yield from chunker.feed(part)
