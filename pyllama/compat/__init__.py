"""What frameworks import from llama-cpp-python, answered by pyllama's own objects.

    import pyllama.compat; pyllama.compat.enable()    # once, before the framework imports llama_cpp
    python -m pyllama.compat app.py [args]           # or run a program as it is

After :func:`enable`, ``import llama_cpp`` anywhere in the process (your code, LangChain,
LlamaIndex, outlines, Haystack, instructor) gives :mod:`pyllama.compat.llama_cpp`, whose
``Llama`` is :class:`pyllama.Llama`. pyllama puts no ``llama_cpp`` folder on disk: a real
llama-cpp-python installed beside it is never shadowed nor overwritten, and ``enable()`` then
changes nothing and warns that the real one stays in use (pyllama.compat.alias).
"""

from __future__ import annotations

from .alias import enable, enabled

__all__ = ["enable", "enabled"]
