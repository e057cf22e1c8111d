"""llama-cpp-python keyword arguments that ``Llama`` ignores, refuses or translates.

The ignored ones are accepted, so ported code and frameworks (LangChain passes ``n_parts`` and
``lora_base`` on every load) run unchanged; one warning names those given a value that asks for
something. A keyword that is not in these tables still raises TypeError, as a misspelling should
(llama-cpp-python itself swallows any keyword).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from .errors import IgnoredArgumentWarning

ANY_VALUE = None  # marks arguments whose every value is harmless here

# Llama(): each with the values that ask for nothing
LLAMA_ARGUMENTS: Mapping[str, Collection[Any] | None] = {
    "logits_all": ANY_VALUE,  # logprobs work without it
    "no_perf": ANY_VALUE,  # timing counters only
    "offload_kqv_warned": ANY_VALUE, "type_k_warned": ANY_VALUE, "embd_normalize": ANY_VALUE,
    "mul_mat_q": (True,), "low_vram": (False,),  # switches of old releases
    "f16_kv": (True,),  # llama-cpp-python drops it too: its KV cache is F16 (type_k/type_v choose another)
    "last_n_tokens_size": (64,),  # the penalties' window: pyllama's is 64
    "numa": (False, 0),
    "spm_infill": (False,),
    "op_offload": (None, True),
    "lora_base": (None,),
    "n_parts": (-1, None),
    "device": (None,),  # LangChain's LlamaCppEmbeddings passes it; llama-cpp-python drops it too
}

# Llama() arguments llama-cpp-python honours and pyllama cannot: refused unless left at None
LLAMA_REFUSED: Mapping[str, str] = {
    "tokenizer": "pyllama tokenizes with the GGUF's own vocabulary; a replacement tokenizer is not supported",
}

# create_completion() and create_chat_completion()
COMPLETION_ARGUMENTS: Mapping[str, Collection[Any] | None] = {
    "tfs_z": (1.0,),  # tail-free sampling left llama.cpp in 2024
}


def check_ignored(function: str, given: Mapping[str, Any], ignored: Mapping[str, Collection[Any] | None],
                  refused: Mapping[str, str] | None = None) -> None:
    """Raise for keywords ``function`` does not know or cannot honour; warn once about ignored
    ones that ask for something."""
    refused = refused or {}
    for name, why in refused.items():
        if given.get(name) is not None:
            raise ValueError(f"{function}(): {name}= is not supported: {why}")
    unknown = sorted(set(given) - set(ignored) - set(refused))
    if unknown:
        raise TypeError(f"{function}() got unexpected arguments: {', '.join(unknown)}")
    asking = sorted(name for name, value in given.items() if name in ignored and ignored[name] is not ANY_VALUE
                    and not any(value == noop for noop in ignored[name]))
    if asking:
        warnings.warn(f"{function}() ignores {', '.join(asking)}: llama-cpp-python arguments that have no effect "
                      "in pyllama", IgnoredArgumentWarning, stacklevel=3)


def rpc_server_list(rpc_servers: str | Sequence[str] | None) -> Sequence[str] | None:
    """llama-cpp-python takes the RPC servers as one comma-separated string; Model takes a list."""
    if isinstance(rpc_servers, str):
        return [server.strip() for server in rpc_servers.split(",") if server.strip()]
    return rpc_servers


def projector_of(chat_handler: Any) -> str | None:
    """The mmproj a llama-cpp-python vision chat handler carries (pyllama.compat.llama_cpp.llama_chat_format)."""
    if chat_handler is None:
        return None
    path = getattr(chat_handler, "clip_model_path", None)
    if path is None:
        raise TypeError("chat_handler: pyllama renders chats with the model's own template or chat_format=, so "
                        "custom chat handlers are not supported; llama-cpp-python's vision handlers "
                        "(llama_chat_format.Llava15ChatHandler, ...) are, as mmproj=")
    return os.fspath(path)
