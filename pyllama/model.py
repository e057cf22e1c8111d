"""Model: a GGUF file loaded by llama.cpp, its metadata and its vocabulary."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from ._binding import checks
from ._binding.callbacks import CallbackSlot
from ._progress import progress_bar
from ._binding import ffi, lib
from ._binding.native import NativeObject, owned
from .enums import FileType, RopeType, SplitMode
from .errors import ModelLoadError
from .gguf_check import check_gguf
from .placement import Placement, TensorOverrides, check_split
from .vocab import Vocab

KvValue = Union[bool, int, float, str]
ProgressCallback = Callable[[float], Union[bool, None]]


def _text_from(fill: Callable[[Any, int], int], size: int = 256) -> str:
    """Call a llama.cpp ``(buf, buf_size) -> length`` getter, growing the buffer as needed."""
    while True:
        buf = ffi.new("char[]", size)
        n = fill(buf, size)
        if n < 0:
            return ""
        if n < size:
            return ffi.string(buf, n).decode("utf-8", "replace")
        size = n + 1


def _kv_overrides(overrides: Mapping[str, KvValue]) -> Any:
    array = ffi.new("struct llama_model_kv_override[]", len(overrides) + 1)  # zeroed end marker
    for item, (key, value) in zip(array, overrides.items()):
        encoded = key.encode()
        if len(encoded) >= 128:
            raise ValueError(f"kv_overrides key {key!r} is longer than 127 bytes")
        item.key = encoded
        if isinstance(value, bool):
            item.tag, item.val_bool = lib.LLAMA_KV_OVERRIDE_TYPE_BOOL, value
        elif isinstance(value, int):
            item.tag, item.val_i64 = lib.LLAMA_KV_OVERRIDE_TYPE_INT, value
        elif isinstance(value, float):
            item.tag, item.val_f64 = lib.LLAMA_KV_OVERRIDE_TYPE_FLOAT, value
        elif isinstance(value, str):
            raw = value.encode()
            if len(raw) >= 128:
                raise ValueError(f"kv_overrides value for {key!r} is longer than 127 bytes")
            item.tag, item.val_str = lib.LLAMA_KV_OVERRIDE_TYPE_STR, raw
        else:
            raise TypeError(f"kv_overrides[{key!r}] must be bool, int, float or str, not {type(value).__name__}")
    return array


class Model(NativeObject):
    """A llama.cpp model loaded from a GGUF file.

    ``n_gpu_layers=-1`` offloads every layer. ``devices`` names the devices to offload to
    (``[]``: none), ``tensor_overrides`` pins tensors whose names match a pattern to a buffer
    type (``{r"ffn_.*_exps": "CPU"}``), ``cpu_moe``/``n_cpu_moe`` keep the experts of every
    layer/the first N layers on the CPU (see pyllama.placement). ``progress`` is called with a fraction
    while loading; returning ``False`` cancels the load. ``verbose`` on a terminal, with
    no ``progress`` given, draws a progress bar on stderr. Bad files raise
    FileNotFoundError or ModelLoadError; they never take the process down.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_gpu_layers: int = 0,
        split_mode: SplitMode | int = SplitMode.LAYER,
        main_gpu: int = 0,
        tensor_split: Sequence[float] | None = None,
        rpc_servers: Sequence[str] | None = None,
        devices: Sequence[str] | None = None,
        tensor_overrides: TensorOverrides | None = None,
        cpu_moe: bool = False,
        n_cpu_moe: int = 0,
        use_mmap: bool = True,
        use_mlock: bool = False,
        vocab_only: bool = False,
        check_tensors: bool = False,
        kv_overrides: Mapping[str, KvValue] | None = None,
        progress: ProgressCallback | None = None,
        verbose: bool = False,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        check_gguf(self.path)

        params = lib.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.split_mode = int(split_mode)
        params.main_gpu = main_gpu
        params.vocab_only = vocab_only
        params.check_tensors = check_tensors
        params.load_mode = (lib.LLAMA_LOAD_MODE_MMAP if use_mmap else lib.LLAMA_LOAD_MODE_NONE) | (
            lib.LLAMA_LOAD_MODE_MLOCK if use_mlock else 0)
        keep = []  # C arrays the params point into, alive until the load returns
        if tensor_split is not None:
            shares = check_split(tensor_split)
            keep.append(ffi.new("float[]", shares + [0.0] * (lib.llama_max_devices() - len(shares))))
            params.tensor_split = keep[-1]
        self.placement = Placement(tensor_overrides=tensor_overrides, cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe,
                                   devices=devices, rpc_servers=rpc_servers)
        self.placement.apply(params)
        if kv_overrides:
            keep.append(_kv_overrides(kv_overrides))
            params.kv_overrides = keep[-1]
        if progress is None and verbose and sys.stderr.isatty():
            progress = progress_bar(sys.stderr, f"loading {self.path.name}")
        slot = CallbackSlot(progress) if progress is not None else None
        if slot is not None:
            params.progress_callback = lib._pyllama_on_progress
            params.progress_callback_user_data = slot.handle

        checks.before_call()
        pointer = lib.pyllama_model_load(os.fsencode(self.path), params)
        if slot is not None:
            slot.reraise()
            if slot.cancelled and pointer == ffi.NULL:
                raise ModelLoadError(f"{self.path}: could not load the model: loading was cancelled by the "
                                     "progress callback")
        checks.check_pointer(pointer, ModelLoadError, f"{self.path}: could not load the model", guarded=True)
        self._handle = owned(pointer, lib.llama_model_free)
        self.n_gpu_layers = n_gpu_layers
        self._vocab = Vocab(self)

    # --- vocabulary -----------------------------------------------------------------------
    @property
    def vocab(self) -> Vocab:
        self._ptr  # raises when closed
        return self._vocab

    @property
    def uses_gpu(self) -> bool:
        """Whether it was loaded with layers to offload: what runs beside it (a projector) goes to the GPU too."""
        return self.n_gpu_layers != 0

    def tokenize(self, text: str | bytes, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return self.vocab.tokenize(text, add_special, parse_special)

    def detokenize(self, tokens: Sequence[int], remove_special: bool = False, unparse_special: bool = False) -> str:
        return self.vocab.detokenize(tokens, remove_special, unparse_special)

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        return self.vocab.token_to_piece(token, special)

    # --- what the model is ----------------------------------------------------------------
    @property
    def n_params(self) -> int:
        return lib.llama_model_n_params(self._ptr)

    @property
    def size(self) -> int:
        """Bytes of all weight tensors."""
        return lib.llama_model_size(self._ptr)

    @property
    def n_ctx_train(self) -> int:
        return lib.llama_model_n_ctx_train(self._ptr)

    @property
    def n_embd(self) -> int:
        return lib.llama_model_n_embd(self._ptr)

    @property
    def n_layer(self) -> int:
        return lib.llama_model_n_layer(self._ptr)

    @property
    def n_head(self) -> int:
        return lib.llama_model_n_head(self._ptr)

    @property
    def n_head_kv(self) -> int:
        return lib.llama_model_n_head_kv(self._ptr)

    @property
    def rope_type(self) -> RopeType:
        return RopeType(lib.llama_model_rope_type(self._ptr))

    @property
    def file_type(self) -> FileType:
        return FileType(lib.llama_model_ftype(self._ptr))

    @property
    def architecture(self) -> str:
        return self.metadata.get("general.architecture", "")

    @property
    def description(self) -> str:
        """llama.cpp's one-line description, e.g. ``llama ?B all F32``."""
        pointer = self._ptr
        return _text_from(lambda buf, size: lib.llama_model_desc(pointer, buf, size))

    @functools.cached_property
    def metadata(self) -> dict[str, str]:
        """All GGUF key/value metadata, values as llama.cpp renders them to text."""
        pointer = self._ptr
        result = {}
        for i in range(lib.llama_model_meta_count(pointer)):
            key = _text_from(lambda buf, size: lib.llama_model_meta_key_by_index(pointer, i, buf, size))
            result[key] = _text_from(lambda buf, size: lib.llama_model_meta_val_str_by_index(pointer, i, buf, size), 1024)
        return result

    def chat_template(self, name: str | None = None) -> str | None:
        """The embedded chat template (``tokenizer.chat_template``, or a named one), if any."""
        pointer = lib.llama_model_chat_template(self._ptr, name.encode() if name else ffi.NULL)
        return None if pointer == ffi.NULL else ffi.string(pointer).decode("utf-8", "replace")

    @property
    def chat_templates(self) -> dict[str, str]:
        """Every embedded template: ``default`` plus named ones (``tokenizer.chat_template.NAME``)."""
        prefix = "tokenizer.chat_template."
        names = [None] + [key[len(prefix):] for key in self.metadata if key.startswith(prefix)]
        templates = {name or "default": self.chat_template(name) for name in names}
        return {name: template for name, template in templates.items() if template}

    @property
    def has_encoder(self) -> bool:
        return lib.llama_model_has_encoder(self._ptr)

    @property
    def has_decoder(self) -> bool:
        return lib.llama_model_has_decoder(self._ptr)

    @property
    def decoder_start_token(self) -> int:
        return lib.llama_model_decoder_start_token(self._ptr)

    @property
    def is_recurrent(self) -> bool:
        return lib.llama_model_is_recurrent(self._ptr)

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.description
        return f"<pyllama.Model {str(self.path)!r} {state}>"
