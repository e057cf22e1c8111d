"""Where a model's weights go: the devices it is spread over, and tensors pinned to a buffer type.

llama-server's ``-dev``, ``-ot PATTERN=BUFTYPE``, ``--cpu-moe`` and ``--n-cpu-moe N`` as typed
arguments of :class:`~pyllama.model.Model`. The usual use: a Mixture-of-Experts model on a small
GPU, every layer offloaded but the experts' weights (most of the model, little of the compute per
token) kept in system memory::

    Model(path, n_gpu_layers=-1, cpu_moe=True)
    Model(path, n_gpu_layers=-1, tensor_overrides={r"blk\\.(1[6-9]|2\\d)\\.ffn_.*_exps": "CPU"})

Patterns are searched in tensor names (``blk.3.ffn_up_exps.weight``), the first that matches wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Union

from ._binding import checks
from ._binding import ffi, lib
from .enums import SplitMode
from .errors import ModelLoadError

TensorOverrides = Union[Mapping[str, str], Sequence[tuple[str, str]]]

# llama.cpp's LLM_FFN_EXPS_REGEX (common.h): the experts' up, down and gate weights
MOE_EXPERTS = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"
CPU = "CPU"
SPLIT_MODES = {mode.name.lower(): mode for mode in sorted(SplitMode)}  # llama-server's -sm names
# (?P<name>...), (?i), (?<=...): Python's, not ECMAScript's (std::regex, which llama.cpp matches with)
_PYTHON_ONLY_GROUP = re.compile(r"(?<!\\)\(\?(?![:=!])")


def _text(pointer: Any) -> str:
    return ffi.string(pointer).decode("utf-8", "replace")


def buffer_types() -> dict[str, Any]:
    """The buffer types an override may name, by name: each device's own (``CPU``, ``CUDA0``,
    ``Vulkan0``, ``RPC0[host:port]`` once that server is added), as llama-server lists them."""
    found = {}
    for i in range(lib.ggml_backend_dev_count()):
        buffer_type = lib.ggml_backend_dev_buffer_type(lib.ggml_backend_dev_get(i))
        if buffer_type != ffi.NULL:
            found.setdefault(_text(lib.ggml_backend_buft_name(buffer_type)), buffer_type)
    return found


def buffer_type_of(device_name: str) -> str:
    """The name of a device's own buffer type (``CUDA0`` for the device ``CUDA0``)."""
    device = lib.ggml_backend_dev_by_name(device_name.encode())
    if device == ffi.NULL:
        raise ValueError(f"unknown device {device_name!r}")
    return _text(lib.ggml_backend_buft_name(lib.ggml_backend_dev_buffer_type(device)))


def offload_devices() -> dict[str, Any]:
    """Devices a model may be spread over, by name: every device but the CPU (which always holds
    what no device takes), as llama-server's ``-dev`` accepts them."""
    found = {}
    for i in range(lib.ggml_backend_dev_count()):
        device = lib.ggml_backend_dev_get(i)
        if lib.ggml_backend_dev_type(device) != lib.GGML_BACKEND_DEVICE_TYPE_CPU:
            found[_text(lib.ggml_backend_dev_name(device))] = device
    return found


def moe_overrides(cpu_moe: bool = False, n_cpu_moe: int = 0) -> list[tuple[str, str]]:
    """``--cpu-moe``: every layer's experts on the CPU; ``--n-cpu-moe N``: those of layers 0..N-1."""
    if isinstance(n_cpu_moe, bool) or not isinstance(n_cpu_moe, int) or n_cpu_moe < 0:
        raise ValueError(f"n_cpu_moe must be a whole number of layers, 0 or more, not {n_cpu_moe!r}")
    if cpu_moe:
        return [(MOE_EXPERTS, CPU)]
    return [(rf"blk\.{layer}{MOE_EXPERTS}", CPU) for layer in range(n_cpu_moe)]


def parse_overrides(text: str) -> list[tuple[str, str]]:
    """llama-server's ``-ot`` value, ``PATTERN=BUFTYPE[,PATTERN=BUFTYPE...]``, as pairs."""
    pairs = []
    for item in text.split(","):
        pattern, equals, buffer_type = item.partition("=")
        if not equals or not pattern or not buffer_type:
            raise ValueError(f"tensor override {item!r} is not PATTERN=BUFTYPE (e.g. 'ffn_.*_exps=CPU')")
        pairs.append((pattern, buffer_type))
    return pairs


def parse_devices(text: str) -> list[str]:
    """llama-server's ``-dev`` value: comma-separated device names, or ``none`` (no offloading)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"expected device names or none, not {text!r}")
    return [] if names == ["none"] else names


def parse_split(text: str) -> list[float]:
    """llama-server's ``-ts`` value: each GPU's share, ``3,1`` or ``3/1``."""
    try:
        return [float(part) for part in re.split(r"[,/]+", text.strip())]
    except ValueError:
        raise ValueError(f"expected proportions such as 3,1, not {text!r}") from None


def check_split(split: Sequence[float]) -> list[float]:
    """``tensor_split``: one share per device, at most as many as llama.cpp takes."""
    if len(split) > lib.llama_max_devices():
        raise ValueError(f"tensor_split has {len(split)} entries, llama.cpp takes at most {lib.llama_max_devices()} "
                         "devices")
    return [float(share) for share in split]


def parse_split_mode(name: str) -> SplitMode:
    """llama-server's ``-sm`` value."""
    try:
        return SPLIT_MODES[name]
    except (KeyError, TypeError):
        raise ValueError(f"split mode must be one of {', '.join(SPLIT_MODES)}, not {name!r}") from None


def check_overrides(overrides: TensorOverrides) -> list[tuple[str, str]]:
    """The overrides as (pattern, buffer type name) pairs, each checked: a pattern that does not
    compile, or a buffer type this machine does not have, is a ValueError naming the choices."""
    if not isinstance(overrides, (Mapping, list, tuple)):
        raise ValueError(f"tensor_overrides must be {{pattern: buffer type}} or [(pattern, buffer type), ...], "
                         f"not {overrides!r}")
    known = buffer_types()
    checked = []
    for pair in overrides.items() if isinstance(overrides, Mapping) else overrides:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(part, str) for part in pair):
            raise ValueError(f"a tensor override is a (pattern, buffer type) pair of strings, not {pair!r}")
        pattern, buffer_type = pair
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"tensor override pattern {pattern!r} is not a valid regular expression: {exc}") from None
        if _PYTHON_ONLY_GROUP.search(pattern):
            raise ValueError(f"tensor override pattern {pattern!r} uses a (?...) group that llama.cpp's regular "
                             "expressions (ECMAScript) lack; they have (?:...), (?=...) and (?!...)")
        if buffer_type not in known:
            raise ValueError(f"unknown buffer type {buffer_type!r} for tensors matching {pattern!r}; "
                             f"this machine has: {', '.join(known)}")
        checked.append((pattern, buffer_type))
    return checked


def check_devices(names: Sequence[str]) -> list[str]:
    """Device names for ``devices=``: each one this machine has; none at all means no offloading."""
    if isinstance(names, str):
        raise ValueError(f"devices is a list of device names, not the string {names!r}")
    known = offload_devices()
    for name in names:
        if name not in known:
            raise ValueError(f"unknown device {name!r}; this machine has: {', '.join(known) or 'none but the CPU'}")
    return list(names)


def _rpc_devices(servers: Sequence[str]) -> list[Any]:
    devices = []
    for endpoint in servers:
        checks.before_call()
        reg = checks.check_pointer(lib.pyllama_rpc_add_server(endpoint.encode()), ModelLoadError,
                                   f"could not reach the RPC server {endpoint!r}", guarded=True)
        devices += [lib.ggml_backend_reg_dev_get(reg, i) for i in range(lib.ggml_backend_reg_dev_count(reg))]
    return devices


def _local_devices() -> list[Any]:
    """GPU-like devices of this machine; llama.cpp's default list when no RPC server is given."""
    found = []
    for device in offload_devices().values():
        if lib.ggml_backend_dev_type(device) in (lib.GGML_BACKEND_DEVICE_TYPE_GPU, lib.GGML_BACKEND_DEVICE_TYPE_IGPU):
            if _text(lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(device))) != "RPC":
                found.append(device)
    return found


class Placement:
    """The C arrays of one model load: the device list and the tensor overrides.

    Checked when made (bad values raise ValueError before anything loads; RPC servers are
    added first, so that their devices and buffer types can be named). ``apply`` points the
    load's params at arrays this object owns, so it must outlive the load (Model keeps it).
    """

    def __init__(self, *, tensor_overrides: TensorOverrides | None = None, cpu_moe: bool = False,
                 n_cpu_moe: int = 0, devices: Sequence[str] | None = None,
                 rpc_servers: Sequence[str] | None = None) -> None:
        moe = moe_overrides(cpu_moe, n_cpu_moe)
        chosen = _rpc_devices(rpc_servers) + _local_devices() if rpc_servers else None
        if devices is not None:
            known = offload_devices()
            chosen = [known[name] for name in check_devices(devices)]
        self.overrides = check_overrides(tensor_overrides or ()) + moe
        if len(self.overrides) > lib.llama_max_tensor_buft_overrides():
            raise ValueError(f"{len(self.overrides)} tensor overrides; llama.cpp takes at most "
                             f"{lib.llama_max_tensor_buft_overrides()}")
        self._keep: list[Any] = []
        self._devices = None if chosen is None else self._own(ffi.new("ggml_backend_dev_t[]", chosen + [ffi.NULL]))
        self._overrides = None
        if self.overrides:
            by_name = buffer_types()
            # one more, zeroed: its NULL pattern ends the list
            array = ffi.new("struct llama_model_tensor_buft_override[]", len(self.overrides) + 1)
            for item, (pattern, buffer_type) in zip(array, self.overrides):
                item.pattern, item.buft = self._own(ffi.new("char[]", pattern.encode())), by_name[buffer_type]
            self._overrides = self._own(array)

    def _own(self, cdata: Any) -> Any:
        self._keep.append(cdata)
        return cdata

    def apply(self, params: Any) -> None:
        """Point a model's load params at the device list and the overrides, where given."""
        if self._devices is not None:
            params.devices = self._devices
        if self._overrides is not None:
            params.tensor_buft_overrides = self._overrides
