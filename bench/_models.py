"""Random-weight llama models for the benchmarks, built once and kept in bench/.models/."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from models import Shape, write_llama  # noqa: E402

from pyllama._binding import ffi, lib  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".models"

# name: (shape, quantization or None for F32)
MODELS = {
    "tiny-f32": (Shape(n_vocab_extra=31_600), None),
    "small-q8_0": (Shape(n_embd=512, n_head=8, n_head_kv=4, n_layer=8, n_ff=1536, n_vocab_extra=31_600),
                   lib.LLAMA_FTYPE_MOSTLY_Q8_0),
    "110m-q8_0": (Shape(n_embd=768, n_head=12, n_head_kv=12, n_layer=12, n_ff=2048, n_ctx_train=2048,
                        n_vocab_extra=31_600), lib.LLAMA_FTYPE_MOSTLY_Q8_0),
    "1b-q4_0": (Shape(n_embd=2048, n_head=32, n_head_kv=8, n_layer=16, n_ff=5632, n_ctx_train=2048,
                      n_vocab_extra=31_600), lib.LLAMA_FTYPE_MOSTLY_Q4_0),
}


def model_file(name: str) -> Path:
    """The GGUF for ``name``, generating (and quantizing) it the first time."""
    shape, ftype = MODELS[name]
    path = CACHE / f"{name}.gguf"
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
    source = path if ftype is None else CACHE / f"{name}.f32.gguf"
    print(f"bench: generating {name}", file=sys.stderr, flush=True)
    write_llama(source, "spm", shape=shape, seed=0)
    if ftype is not None:
        params = ffi.new("llama_model_quantize_params *", lib.llama_model_quantize_default_params())
        params.ftype = ftype
        if lib.llama_model_quantize(str(source).encode(), str(path).encode(), params) != 0:
            raise RuntimeError(f"quantizing {source} failed")
        source.unlink()
    return path
