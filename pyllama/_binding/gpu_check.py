"""Say, once at import, when a GPU backend this build was made for cannot run here.

A prebuilt CUDA wheel installed on a machine without a GPU or driver (or without NVIDIA's
runtime wheels) still imports and runs on the CPU; that must not happen silently, because a
user who asked for ``n_gpu_layers=99`` would otherwise only notice by the speed.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from typing import Mapping

# build flag -> (the name the backend registers under, its library's stem)
GPU_BACKENDS = {
    "GGML_CUDA": ("CUDA", "ggml-cuda"),
    "GGML_HIP": ("ROCm", "ggml-hip"),
    "GGML_VULKAN": ("Vulkan", "ggml-vulkan"),
    "GGML_METAL": ("Metal", "ggml-metal"),
    "GGML_SYCL": ("SYCL", "ggml-sycl"),
    "GGML_OPENCL": ("OpenCL", "ggml-opencl"),
}


def flag_on(value: str | None) -> bool:
    return (value or "").upper() in ("ON", "1", "TRUE", "YES")


def backend_module(library_dir: Path, stem: str) -> Path:
    """Where a dynamically loaded backend lives (ggml's own naming, see ggml_backend_load_best)."""
    return library_dir / (f"{stem}.dll" if sys.platform == "win32" else f"lib{stem}.so")


def _load_error(module: Path) -> str:
    if not module.exists():
        return f"{module.name} is not installed next to the bindings"
    try:
        ctypes.CDLL(str(module))
    except OSError as exc:  # names the missing dependency, e.g. libcublas.so.13
        return str(exc)
    return f"{module.name} loads but did not register a backend"


def unusable_gpu_backends(build_flags: Mapping[str, str], device_counts: Mapping[str, int],
                          library_dir: Path, errors: list[str]) -> list[str]:
    """One message per GPU backend the build enabled that has no device to run on here.

    ``device_counts`` maps each registered backend to its number of devices; ``errors`` are
    the error lines llama.cpp logged while loading (they say why a driver was not found).
    """
    messages = []
    for flag, (name, stem) in GPU_BACKENDS.items():
        if not flag_on(build_flags.get(flag)):
            continue
        if name not in device_counts:
            if flag_on(build_flags.get("GGML_BACKEND_DL")):
                reason = _load_error(backend_module(library_dir, stem))
            else:
                reason = "it did not register"
            if name == "CUDA" and "libcu" in reason:
                reason += "; NVIDIA's pip wheels nvidia-cuda-runtime and nvidia-cublas (-cu12 for CUDA 12) have it"
            messages.append(f"pyllama was built for {name}, but its {name} backend could not be loaded "
                            f"({reason}); everything will run on the CPU")
        elif device_counts[name] == 0:
            said = f" (llama.cpp: {'; '.join(errors)})" if errors else ""
            messages.append(f"pyllama was built for {name}, but no {name} device was found{said}; "
                            "everything will run on the CPU. Check the GPU driver "
                            + ("and CUDA_VISIBLE_DEVICES" if name == "CUDA" else "and its devices"))
    return messages
