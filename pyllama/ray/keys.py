"""A request's routing key: text that grows the way its prompt does, so that two requests whose
prompts share a prefix (a system prompt, a chat history) get keys that share a prefix.

Where the ingress can read the model's vocabulary and template, an OpenAI chat or completion
request's key is its prompt's tokens, as the replica's engine will see them
(pyllama/ray/prompt_keys.py). Any other request's key is read from its JSON body alone: the chat
messages in order (role and text of each, as a chat template lays them out), or the prompt of a
completion (text, or token ids, each written as one character). The model's name leads, so two
models never share a prefix. Tools and media are left out: a template may put tools anywhere, and an image's bytes
say nothing about the text around it. Any API's field names are read (OpenAI, llama.cpp,
Anthropic, Responses, Ollama); a body without them gets the empty key, routed by load.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

_TOKEN_BASE = 0x10000  # token ids as characters above the BMP: no surrogates, ids below ~1M fit


def tokens_key(model: str, tokens: Sequence[int]) -> str:
    """The key of a prompt of ``tokens`` for ``model``."""
    return f"{model}\x00{_text(list(tokens))}"


def body_of(body: bytes) -> dict[str, Any] | None:
    """The request's JSON object, or None (the replica answers bad JSON; its key does not matter)."""
    try:
        request = json.loads(body) if body else None
    except ValueError:
        return None
    return request if isinstance(request, dict) else None


def routing_key(body: bytes) -> str:
    return request_key(body_of(body))


def request_key(request: dict[str, Any] | None) -> str:
    """The key of a request's JSON object (None: the empty key, routed by load)."""
    if request is None:
        return ""
    parts = [str(request.get("model") or ""), "\x00"]
    for field in ("system", "instructions"):  # Anthropic's and Ollama's system prompt, Responses' instructions
        parts.append(_text(request.get(field)))
    for field in ("messages", "input", "prompt", "content"):  # chat, Responses / embeddings, completions, tokenize
        value = request.get(field)
        parts.append(_messages(value) if field in ("messages", "input") and _is_messages(value) else _text(value))
    return "".join(parts)


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and any(isinstance(item, dict) and "role" in item for item in value)


def _messages(messages: list[Any]) -> str:
    return "".join(f"\x01{item.get('role', '')}\x02{_text(item.get('content'))}" for item in messages
                   if isinstance(item, dict))


def _text(value: Any) -> str:
    """The text of a prompt or a message's content: a string, token ids, or a list of parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 0x10FFFF - _TOKEN_BASE:
        return chr(_TOKEN_BASE + value)
    if isinstance(value, list):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return "".join(_text(v) for v in value)
        return _text(value[0]) if value and isinstance(value[0], (str, list)) else "".join(
            _text(part) for part in value)  # a batch of prompts: the first; parts of a message: each
    if isinstance(value, dict):  # a content part: {"type": "text", "text": ...}; media parts add nothing
        return _text(value.get("text"))
    return ""
