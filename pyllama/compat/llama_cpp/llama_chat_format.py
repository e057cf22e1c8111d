"""``llama_cpp.llama_chat_format``: the names frameworks import from it.

pyllama renders chats with the model's own template or ``chat_format=`` (pyllama.chat), so
a custom chat handler has nothing to plug into and ``Llama(chat_handler=...)`` refuses one.
The vision handlers are the exception: what they carry is the projector, so
``Llama(chat_handler=Llava15ChatHandler(clip_model_path="mmproj.gguf"))`` loads it as
``Llama(mmproj="mmproj.gguf")`` does, whatever the model family (libmtmd reads them all).
"""

from __future__ import annotations

import os
from typing import Any, Protocol


class LlamaChatCompletionHandler(Protocol):
    def __call__(self, *, llama: Any, messages: Any, **kwargs: Any) -> Any:
        ...


class ProjectorChatHandler:
    """A multimodal projector (``mmproj`` GGUF) for Llama, under llama-cpp-python's handler names."""

    def __init__(self, clip_model_path: str | os.PathLike[str], verbose: bool = True) -> None:
        self.clip_model_path = os.fspath(clip_model_path)
        self.verbose = verbose


Llava15ChatHandler = ProjectorChatHandler
Llava16ChatHandler = ProjectorChatHandler
ObsidianChatHandler = ProjectorChatHandler
MoondreamChatHandler = ProjectorChatHandler
NanoLlavaChatHandler = ProjectorChatHandler
Llama3VisionAlphaChatHandler = ProjectorChatHandler
MiniCPMv26ChatHandler = ProjectorChatHandler
Qwen25VLChatHandler = ProjectorChatHandler
MTMDChatHandler = ProjectorChatHandler
Gemma4ChatHandler = ProjectorChatHandler
