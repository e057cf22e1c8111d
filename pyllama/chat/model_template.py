"""Which chat template a model gets: a name or template string given, else the GGUF's own, else
a fallback by vocabulary family. Here, above both :mod:`.template` and :mod:`.builtin` (a subclass
of its ``ChatTemplate``), so neither needs the other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .builtin import BuiltinTemplate, builtin_names
from .fallback import fallback_for
from .formats import FORMATS, get_format
from .template import ChatTemplate

if TYPE_CHECKING:
    from ..model import Model


def chat_template(model: Model, chat_format: str | None = None, jinja: bool = True) -> ChatTemplate:
    """The template for ``model``: ``chat_format`` (a named format, one of llama.cpp's built-in
    names, or a template string of your own), else the GGUF's own, else the format of the
    family its vocabulary belongs to (chatml when none), marked as a :class:`Fallback`.
    ``jinja=False`` (llama-server's ``--no-jinja``): llama.cpp formats the chat itself, from
    ``chat_format`` or the GGUF's template (chatml when neither), recognized by its markers."""
    vocab = model.vocab
    bos = vocab.text(vocab.bos) if vocab.bos >= 0 else ""
    eos = vocab.text(vocab.eos) if vocab.eos >= 0 else ""
    if not jinja:
        spec = chat_format or model.chat_template() or "chatml"
        return BuiltinTemplate(spec, bos, eos) if spec in builtin_names() else BuiltinTemplate(None, bos, eos, spec)
    if chat_format is not None and ("{{" in chat_format or "{%" in chat_format):
        return ChatTemplate(chat_format, bos, eos, stop=[eos] if eos else [])
    embedded = model.chat_template() if chat_format is None else None
    if embedded:
        return ChatTemplate(embedded, bos, eos, stop=[eos] if eos else [])
    if chat_format is not None and chat_format not in FORMATS and chat_format in builtin_names():
        return BuiltinTemplate(chat_format, bos, eos)
    if chat_format is not None:
        named = get_format(chat_format)
        return ChatTemplate(named.template, bos, eos, stop=named.stops, format=chat_format)
    fallback = fallback_for(vocab)
    named = get_format(fallback.format)
    return ChatTemplate(named.template, bos, eos, stop=named.stops, format=fallback.format, fallback=fallback)
