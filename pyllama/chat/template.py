"""Chat templates: the jinja programs that turn a list of messages into a prompt.

A GGUF carries its model's template (``tokenizer.chat_template``), written for Hugging Face
``transformers``. Templates from the Hub are untrusted code, so they run in jinja's
immutable sandbox with the same extras transformers offers (``raise_exception``,
``strftime_now``, a ``tojson`` that keeps non-ASCII text), and the same whitespace
settings, so a template renders here exactly as ``apply_chat_template`` renders it. What a
template may make (text sizes) and take (time) is bounded too (chat/sandbox.py).
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import jinja2.ext

from ..errors import ChatTemplateError
from .fallback import Fallback
from .sandbox import BoundedEnvironment, render


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.datetime.now().strftime(format)


@functools.lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    environment = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    environment.set_filter("tojson", _tojson)
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    try:
        return environment.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise ChatTemplateError(f"the chat template does not parse: {exc} (line {exc.lineno})") from exc


class ChatTemplate:
    """A jinja chat template plus the special tokens it refers to."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "", stop: Sequence[str] = (),
                 format: str | None = None, fallback: Fallback | None = None) -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.stop = list(stop)  # strings that end an assistant turn in this format
        self.format = format  # the named format it came from, if any
        self.fallback = fallback  # set when it stands in for a template the model lacks
        self._template = _compile(source)

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
               tools: Sequence[Mapping[str, Any]] | None = None,
               documents: Sequence[Mapping[str, Any]] | None = None, **extra: Any) -> str:
        try:
            return render(self._template, messages=list(messages), tools=tools, documents=documents,
                          add_generation_prompt=add_generation_prompt, bos_token=self.bos_token,
                          eos_token=self.eos_token, **extra)
        except jinja2.exceptions.TemplateError as exc:
            raise ChatTemplateError(f"the chat template failed: {exc}") from exc
