"""llama.cpp's built-in chat templates, chosen by name (``command-r``, ``llama2-sys``, ``deepseek3``...)
or recognized from a template's jinja source (llama-server's ``--no-jinja``).

llama.cpp formats these in C++ (``llama_chat_apply_template``) instead of running jinja, so a
name llama-server users pass with ``--chat-template`` gives the prompt llama-server gives. They
take plain text turns: no tools, no template variables.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from .._binding.library import ffi, lib
from .template import ChatTemplate, ChatTemplateError


@functools.cache
def builtin_names() -> frozenset[str]:
    count = lib.llama_chat_builtin_templates(ffi.NULL, 0)
    names = ffi.new("const char *[]", count)
    lib.llama_chat_builtin_templates(names, count)
    return frozenset(ffi.string(name).decode() for name in names)


def builtin_supports(template: str) -> bool:
    """Whether llama.cpp formats ``template`` (a built-in name, or a jinja source it recognizes by
    its markers) itself; the check llama-server makes of ``--chat-template`` under ``--no-jinja``."""
    if template in builtin_names():
        return True
    keep = (ffi.new("char[]", b"user"), ffi.new("char[]", b"test"))
    chat = ffi.new("struct llama_chat_message[]", 1)
    chat[0].role, chat[0].content = keep
    return lib.llama_chat_apply_template(template.encode(), chat, 1, True, ffi.NULL, 0) >= 0


class BuiltinTemplate(ChatTemplate):
    """A template llama.cpp implements itself: by name, or by recognizing a jinja ``source``
    (``name`` is then None; a source it does not recognize fails when rendered, as llama-server's)."""

    def __init__(self, name: str | None, bos_token: str = "", eos_token: str = "", source: str = "") -> None:
        if name is not None and name not in builtin_names():
            raise ValueError(f"{name!r} is not one of llama.cpp's built-in chat templates")
        super().__init__("", bos_token, eos_token, stop=[eos_token] if eos_token else [], format=name)
        self.source = source  # shown as the template (/props); llama.cpp reads it, jinja never does
        self._spec = (name or source).encode()

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
               tools: Sequence[Mapping[str, Any]] | None = None,
               documents: Sequence[Mapping[str, Any]] | None = None, **extra: Any) -> str:
        if tools or documents:
            raise ChatTemplateError(f"{self._shown} takes no tools or documents (tools need jinja templates)")
        keep = [(ffi.new("char[]", str(m["role"]).encode()), ffi.new("char[]", str(m.get("content") or "").encode()))
                for m in messages]  # alive until the call returns
        chat = ffi.new("struct llama_chat_message[]", len(keep))
        for entry, (role, content) in zip(chat, keep):
            entry.role, entry.content = role, content
        size = 2 * sum(len(ffi.string(content)) for _, content in keep) + 256
        for _ in range(2):  # the first answer may be only the size it needs
            buffer = ffi.new("char[]", size)
            n = lib.llama_chat_apply_template(self._spec, chat, len(keep), add_generation_prompt, buffer, size)
            if n < 0:
                raise ChatTemplateError(f"llama.cpp could not apply {self._shown}: it is not one of the commonly used "
                                        "templates its built-in handling knows (try jinja: without --no-jinja)")
            if n <= size:
                return ffi.unpack(buffer, n).decode("utf-8", errors="replace")
            size = n
        raise ChatTemplateError(f"{self._shown} did not settle on a size")

    @property
    def _shown(self) -> str:
        return f"the built-in chat template {self.format!r}" if self.format else "the chat template (--no-jinja)"
