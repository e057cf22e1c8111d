"""Routing keys made of the prompt's tokens, rendered and tokenized in the ingress exactly as a
replica's server will (the same template, vocabulary and chat planning, pyllama/chat/plan.py),
so the router compares prefixes as the engine's cache reuse does.

For the OpenAI chat and completion routes of a one-model app. The ingress then opens the model's
vocabulary only (no weights). Other routes, requests it cannot render (images, a body the
replica will refuse) and apps whose ingress cannot open the model file get the JSON key
(pyllama/ray/keys.py), which grows the same way a chat's rendered prompt does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from ..chat import chat_template, plan_chat
from ..errors import LlamaError
from ..model import Model
from ..server.schemas.openai import ChatRequest
from ..server.served_model import chat_plan_arguments
from ..server.settings import Settings
from .keys import body_of, request_key, tokens_key

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
COMPLETION_PATHS = frozenset({"/v1/completions", "/completions", "/completion"})

log = logging.getLogger("pyllama.ray")


class PromptKeys:
    def __init__(self, settings: Settings | None) -> None:
        """``settings``: the app's model; None when it serves several (their keys come from JSON)."""
        self.model: Model | None = None
        if settings is None:
            return
        try:
            self.model = Model(settings.model, vocab_only=True)
        except (LlamaError, OSError) as exc:
            log.warning("the ingress cannot read %s (%s): requests are routed by their JSON", settings.model, exc)
            return
        self.settings = settings
        self.template = chat_template(self.model, settings.chat_format, settings.jinja)

    def key(self, path: str, body: bytes) -> str:
        """The request's routing key; may render a template, so run it off the event loop."""
        request = body_of(body)
        tokens = self._tokens(path, request) if self.model is not None and request is not None else None
        return request_key(request) if tokens is None else tokens_key(str(request.get("model") or ""), tokens)

    def _tokens(self, path: str, request: dict[str, Any]) -> Sequence[int] | None:
        if path in CHAT_PATHS:
            try:
                chat = ChatRequest.model_validate(request)
                return plan_chat(self.template, self.model.vocab,
                                 **chat_plan_arguments(chat, self.settings.thinking)).prompt_tokens
            except (ValidationError, ValueError, TypeError, LlamaError, RecursionError):
                return None  # media, or a request the replica will refuse
        if path in COMPLETION_PATHS:
            prompt = request.get("prompt")
            if isinstance(prompt, str):
                return self.model.vocab.tokenize(prompt, add_special=True, parse_special=True)
            if isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
                return prompt
        return None

    def close(self) -> None:
        if self.model is not None:
            self.model.close()
