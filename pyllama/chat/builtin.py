"""llama.cpp's built-in chat templates, chosen by name (``command-r``, ``llama2-sys``, ``deepseek3``...).

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


class BuiltinTemplate(ChatTemplate):
    """A template llama.cpp implements itself, by name."""

    def __init__(self, name: str, bos_token: str = "", eos_token: str = "") -> None:
        if name not in builtin_names():
            raise ValueError(f"{name!r} is not one of llama.cpp's built-in chat templates")
        super().__init__("", bos_token, eos_token, stop=[eos_token] if eos_token else [], format=name)

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
               tools: Sequence[Mapping[str, Any]] | None = None,
               documents: Sequence[Mapping[str, Any]] | None = None, **extra: Any) -> str:
        if tools or documents:
            raise ChatTemplateError(f"the built-in chat template {self.format!r} takes no tools or documents")
        keep = [(ffi.new("char[]", str(m["role"]).encode()), ffi.new("char[]", str(m.get("content") or "").encode()))
                for m in messages]  # alive until the call returns
        chat = ffi.new("struct llama_chat_message[]", len(keep))
        for entry, (role, content) in zip(chat, keep):
            entry.role, entry.content = role, content
        size = 2 * sum(len(ffi.string(content)) for _, content in keep) + 256
        for _ in range(2):  # the first answer may be only the size it needs
            buffer = ffi.new("char[]", size)
            n = lib.llama_chat_apply_template(self.format.encode(), chat, len(keep), add_generation_prompt, buffer,
                                              size)
            if n < 0:
                raise ChatTemplateError(f"llama.cpp could not apply the chat template {self.format!r}")
            if n <= size:
                return ffi.unpack(buffer, n).decode("utf-8", errors="replace")
            size = n
        raise ChatTemplateError(f"llama.cpp's chat template {self.format!r} did not settle on a size")
