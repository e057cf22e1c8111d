"""What this build of pyllama is and what it finds on the machine it runs on."""

from __future__ import annotations

import dataclasses

from ._binding import BUILD_FLAGS, LLAMA_CPP_COMMIT, ffi, lib
from ._version import __version__
from .enums import DeviceType


@dataclasses.dataclass(frozen=True)
class Device:
    """A compute device ggml found at run time (a GPU, the CPU, an RPC worker...)."""

    name: str
    description: str
    type: DeviceType
    backend: str
    memory_free: int
    memory_total: int


@dataclasses.dataclass(frozen=True)
class SystemInfo:
    version: str
    llama_cpp_commit: str
    build_flags: dict[str, str]
    backends: list[str]
    devices: list[Device]
    features: str
    gpu_offload: bool
    mmap: bool
    mlock: bool
    rpc: bool

    def __str__(self) -> str:
        lines = [
            f"pyllama {self.version} (llama.cpp {self.llama_cpp_commit})",
            f"build: {' '.join(f'{k}={v}' for k, v in self.build_flags.items())}",
            f"backends: {', '.join(self.backends) or 'none'}",
            "devices:",
        ]
        for device in self.devices:
            memory = f"{device.memory_free / 2**30:.1f} / {device.memory_total / 2**30:.1f} GiB free"
            lines.append(f"  {device.name} ({device.type.name}, {device.backend}): {device.description}, {memory}")
        if not self.devices:
            lines.append("  none")
        lines += [
            f"features: {self.features}",
            f"gpu offload: {_yes(self.gpu_offload)}, mmap: {_yes(self.mmap)}, "
            f"mlock: {_yes(self.mlock)}, rpc: {_yes(self.rpc)}",
        ]
        return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _text(pointer) -> str:
    return ffi.string(pointer).decode("utf-8", "replace") if pointer != ffi.NULL else ""


def backends() -> list[str]:
    """Names of the ggml backends registered in this build (``CPU``, ``CUDA``, ``BLAS``, ``RPC``...)."""
    return [_text(lib.ggml_backend_reg_name(lib.ggml_backend_reg_get(i))) for i in range(lib.ggml_backend_reg_count())]


def devices() -> list[Device]:
    """The devices found now, with their free and total memory."""
    found = []
    free, total = ffi.new("size_t *"), ffi.new("size_t *")
    for i in range(lib.ggml_backend_dev_count()):
        device = lib.ggml_backend_dev_get(i)
        lib.ggml_backend_dev_memory(device, free, total)
        found.append(Device(
            name=_text(lib.ggml_backend_dev_name(device)),
            description=_text(lib.ggml_backend_dev_description(device)),
            type=DeviceType(lib.ggml_backend_dev_type(device)),
            backend=_text(lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(device))),
            memory_free=free[0],
            memory_total=total[0],
        ))
    return found


def feature_line() -> str:
    """llama.cpp's feature line (``CPU : AVX2 = 1 | ...``), plus ``NAME = 1`` for each backend
    that lists no features of its own (BLAS, RPC), as older llama.cpp printed ``BLAS = 1``."""
    parts = [_text(lib.llama_print_system_info()).strip().rstrip("|").strip()]
    for i in range(lib.ggml_backend_reg_count()):
        reg = lib.ggml_backend_reg_get(i)
        if lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features") == ffi.NULL:
            parts.append(f"{_text(lib.ggml_backend_reg_name(reg))} = 1")
    return " | ".join(part for part in parts if part)


def system_info() -> SystemInfo:
    """Version, llama.cpp commit, compiled backends, devices and CPU features of this install."""
    return SystemInfo(
        version=__version__,
        llama_cpp_commit=LLAMA_CPP_COMMIT,
        build_flags=dict(BUILD_FLAGS),
        backends=backends(),
        devices=devices(),
        features=feature_line(),
        gpu_offload=bool(lib.llama_supports_gpu_offload()),
        mmap=bool(lib.llama_supports_mmap()),
        mlock=bool(lib.llama_supports_mlock()),
        rpc=bool(lib.llama_supports_rpc()),
    )
