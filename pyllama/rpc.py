"""llama.cpp's RPC backend: serve this machine's devices to a Model on another machine.

Workers run ``pyllama rpc-server --host H --port P``; a client loads
``Model(path, rpc_servers=["H:P", ...], n_gpu_layers=-1)`` and llama.cpp spreads the
layers over the workers' devices.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

from ._binding import ffi, lib
from .errors import LlamaError


def _devices(names: Sequence[str] | None) -> list:
    available = {}
    for i in range(lib.ggml_backend_dev_count()):
        device = lib.ggml_backend_dev_get(i)
        if ffi.string(lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(device))) != b"RPC":
            available[ffi.string(lib.ggml_backend_dev_name(device)).decode()] = device
    if names:
        missing = [name for name in names if name not in available]
        if missing:
            raise LlamaError(f"no device named {', '.join(missing)}; this machine has {', '.join(available)}")
        return [available[name] for name in names]
    gpus = [d for d in available.values() if lib.ggml_backend_dev_type(d) == lib.GGML_BACKEND_DEVICE_TYPE_GPU]
    cpus = [d for d in available.values() if lib.ggml_backend_dev_type(d) == lib.GGML_BACKEND_DEVICE_TYPE_CPU]
    return gpus or cpus


def serve(host: str = "127.0.0.1", port: int = 50052, *, devices: Sequence[str] | None = None,
          threads: int | None = None, cache_dir: str | os.PathLike[str] | None = None) -> None:
    """Serve devices over RPC until the process is killed (Ctrl-C ends it).

    The protocol has no authentication: bind to a trusted network only.
    """
    rpc = lib.ggml_backend_reg_by_name(b"RPC")
    if rpc == ffi.NULL:
        raise LlamaError("this build has no RPC backend (built with -DGGML_RPC=OFF)")
    # from the registry: a prebuilt wheel loads the RPC backend at run time instead of linking it
    start_server = ffi.cast("void (*)(const char *, const char *, size_t, size_t, ggml_backend_dev_t *)",
                            lib.ggml_backend_reg_get_proc_address(rpc, b"ggml_backend_rpc_start_server"))
    chosen = _devices(devices)
    array = ffi.new("ggml_backend_dev_t[]", chosen)
    cache = os.fsencode(cache_dir) if cache_dir else ffi.NULL
    # the server loop runs in C; let Ctrl-C end the process instead of waiting for Python
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    start_server(f"{host}:{port}".encode(), cache, threads or os.cpu_count() or 1, len(chosen), array)
