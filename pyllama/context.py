"""Context: a Model's KV memory and compute state; decodes batches, hands out logits."""

from __future__ import annotations

import dataclasses
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._binding import checks
from ._binding.callbacks import CallbackSlot
from ._binding import ffi, lib
from ._binding.native import NativeObject, owned
from .batch import Batch
from .enums import AttentionType, FlashAttnType, GGMLType, PoolingType, RopeScalingType
from .errors import ContextCreationError, LlamaError, StaleViewError
from .lora import LoraAdapter
from .model import Model


@dataclasses.dataclass(frozen=True)
class Perf:
    """llama.cpp's timing counters for a context (milliseconds)."""

    load_ms: float
    prompt_ms: float
    prompt_tokens: int
    eval_ms: float
    eval_tokens: int

    @property
    def prompt_tokens_per_s(self) -> float:
        return 1e3 * self.prompt_tokens / self.prompt_ms if self.prompt_ms > 0 else 0.0

    @property
    def eval_tokens_per_s(self) -> float:
        return 1e3 * self.eval_tokens / self.eval_ms if self.eval_ms > 0 else 0.0

    def __str__(self) -> str:
        return (f"load time = {self.load_ms:.2f} ms\n"
                f"prompt eval time = {self.prompt_ms:.2f} ms / {self.prompt_tokens} tokens "
                f"({self.prompt_tokens_per_s:.2f} tokens per second)\n"
                f"eval time = {self.eval_ms:.2f} ms / {self.eval_tokens} runs "
                f"({self.eval_tokens_per_s:.2f} tokens per second)")


class _OutputRows:
    """numpy's ``base`` for views into the context's output buffer: keeps the native context
    alive for as long as a view exists, so a view never reads freed memory."""

    def __init__(self, handle: Any, address: int, shape: tuple[int, ...], writable: bool = False) -> None:
        self._handle = handle
        self.__array_interface__ = {"shape": shape, "typestr": "<f4", "data": (address, not writable), "version": 3}


class Context(NativeObject):
    """KV memory and compute state for a :class:`Model`.

    Views from :meth:`logits` and :meth:`embeddings` read llama.cpp's buffer without a
    copy; their values are those of the last decode. All methods take a lock, so one
    Context shared by threads serializes instead of corrupting its state.
    """

    def __init__(
        self,
        model: Model,
        *,
        n_ctx: int = 512,
        n_batch: int = 2048,
        n_ubatch: int = 512,
        n_seq_max: int = 1,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        embeddings: bool = False,
        pooling_type: PoolingType | int | None = None,
        attention_type: AttentionType | int | None = None,
        flash_attn: FlashAttnType | int | bool | None = None,
        type_k: GGMLType | int | None = None,
        type_v: GGMLType | int | None = None,
        offload_kqv: bool = True,
        kv_unified: bool | None = None,
        swa_full: bool | None = None,
        rope_scaling_type: RopeScalingType | int | None = None,
        rope_freq_base: float = 0.0,
        rope_freq_scale: float = 0.0,
        yarn_ext_factor: float = -1.0,
        yarn_attn_factor: float = -1.0,
        yarn_beta_fast: float = -1.0,
        yarn_beta_slow: float = -1.0,
        yarn_orig_ctx: int = 0,
        no_perf: bool = False,
    ) -> None:
        for name, value, least in (("n_ctx", n_ctx, 0), ("n_batch", n_batch, 1), ("n_ubatch", n_ubatch, 1),
                                   ("n_seq_max", n_seq_max, 1), ("n_threads", n_threads or 1, 1),
                                   ("n_threads_batch", n_threads_batch or 1, 1)):
            if not least <= value < 2**31:
                raise ValueError(f"{name} must be in {least}..{2**31 - 1}, got {value}")
        params = lib.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = n_ctx, n_batch, n_ubatch, n_seq_max
        params.n_threads = n_threads or params.n_threads
        params.n_threads_batch = n_threads_batch or n_threads or params.n_threads_batch
        params.embeddings, params.offload_kqv, params.no_perf = embeddings, offload_kqv, no_perf
        if kv_unified is not None:
            params.kv_unified = kv_unified
        if swa_full is not None:
            params.swa_full = swa_full
        for field, value in (("pooling_type", pooling_type), ("attention_type", attention_type),
                             ("type_k", type_k), ("type_v", type_v), ("rope_scaling_type", rope_scaling_type)):
            if value is not None:
                setattr(params, field, int(value))
        if flash_attn is not None:
            params.flash_attn_type = int(FlashAttnType.ENABLED if flash_attn is True else
                                         FlashAttnType.DISABLED if flash_attn is False else flash_attn)
        params.rope_freq_base, params.rope_freq_scale = rope_freq_base, rope_freq_scale
        for field, value in (("yarn_ext_factor", yarn_ext_factor), ("yarn_attn_factor", yarn_attn_factor),
                             ("yarn_beta_fast", yarn_beta_fast), ("yarn_beta_slow", yarn_beta_slow)):
            if value >= 0:  # negative: llama.cpp's default for the model
                setattr(params, field, value)
        params.yarn_orig_ctx = yarn_orig_ctx

        model_handle = model._ptr
        checks.before_call()
        pointer = checks.check_pointer(lib.pyllama_context_init(model_handle, params), ContextCreationError,
                                       f"could not create a context (n_ctx={n_ctx}, n_batch={n_batch})", guarded=True)
        self._handle = owned(pointer, lib.llama_free, model_handle)
        self.model = model
        self._lock = threading.RLock()
        self._views: weakref.WeakSet[_OutputRows] = weakref.WeakSet()
        self._reserved_outputs = max(1, n_seq_max)
        self._abort: CallbackSlot | None = None
        self._loras: dict[LoraAdapter, float] = {}
        # fixed for the context's life; read once so the hot path and a closed Model need no lookups
        self.n_vocab = model.vocab.n_tokens
        self.n_embd = model.n_embd
        self._n_embd_out = lib.llama_model_n_embd_out(model_handle)
        self._n_cls_out = max(1, lib.llama_model_n_cls_out(model_handle))
        self._n_layer = model.n_layer
        self._n_batch = lib.llama_n_batch(pointer)
        self._embeddings = embeddings
        self._can_encode = model.has_encoder or lib.llama_get_memory(pointer) == ffi.NULL

    # --- sizes ----------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return lib.llama_n_ctx(self._ptr)

    @property
    def n_ctx_seq(self) -> int:
        """Positions one sequence may hold (n_ctx with a unified KV cache, else n_ctx / n_seq_max)."""
        return lib.llama_n_ctx_seq(self._ptr)

    @property
    def n_batch(self) -> int:
        self._ptr  # raises when closed
        return self._n_batch

    @property
    def n_ubatch(self) -> int:
        return lib.llama_n_ubatch(self._ptr)

    @property
    def n_seq_max(self) -> int:
        return lib.llama_n_seq_max(self._ptr)

    @property
    def n_threads(self) -> tuple[int, int]:
        pointer = self._ptr
        return lib.llama_n_threads(pointer), lib.llama_n_threads_batch(pointer)

    def set_n_threads(self, n_threads: int, n_threads_batch: int | None = None) -> None:
        lib.llama_set_n_threads(self._ptr, n_threads, n_threads_batch or n_threads)

    @property
    def pooling_type(self) -> PoolingType:
        return PoolingType(lib.llama_pooling_type(self._ptr))

    def set_embeddings(self, enabled: bool) -> None:
        with self._lock:
            lib.llama_set_embeddings(self._ptr, enabled)
            self._embeddings = enabled

    def set_causal_attention(self, causal: bool) -> None:
        lib.llama_set_causal_attn(self._ptr, causal)

    # --- decoding -------------------------------------------------------------------------
    def decode(self, batch: Batch) -> None:
        """Run the model on ``batch`` (KV memory is updated).

        Raises KVCacheFullError when no KV slot is left, DecodeAbortedError when the
        abort callback stopped it, DecodeError on other failures.
        """
        # an embedding context outputs every token, whatever the batch asks for
        self._run(batch, lib.llama_decode, "llama_decode", every_token=self._embeddings)

    def encode(self, batch: Batch) -> None:
        """Run the encoder of an encoder-decoder model (or a non-causal embedding model)."""
        if not self._can_encode:  # llama_encode on a decoder's KV memory crashes the process
            raise ValueError("encode() needs an encoder-decoder model (T5) or an embedding model without KV memory "
                             "(BERT); use decode() for this model")
        self._run(batch, lib.llama_encode, "llama_encode", every_token=True)  # the encoder outputs every token

    def _run(self, batch: Batch, function: Callable[[Any, Any], int], name: str, every_token: bool) -> None:
        if batch.n_tokens == 0:
            raise ValueError(f"{name}: the batch is empty")
        with self._lock:
            pointer = self._ptr
            if batch.n_tokens > self._n_batch:
                raise ValueError(f"{name}: the batch has {batch.n_tokens} tokens but n_batch is "
                                 f"{self._n_batch}; split it or create the Context with a larger n_batch")
            if batch._c.n_tokens > self._reserved_outputs:  # only then can the outputs outgrow the buffer
                self._before_output_change(batch.n_tokens if every_token else batch.n_outputs)
            checks.before_call()
            code = function(pointer, batch._c[0])
            if self._abort is not None:
                self._abort.reraise()
            checks.check_decode(code, name)
            # waits for the backend, and books the batch as prompt or generation in the perf counters
            lib.llama_synchronize(pointer)

    def _before_output_change(self, n_outputs: int) -> None:
        """llama.cpp reallocates its output buffer when a batch wants more rows than ever before."""
        if n_outputs > self._reserved_outputs:
            self._refuse_while_viewed(f"this decode needs {n_outputs} output rows, more than the "
                                      f"{self._reserved_outputs} the output buffer holds")
            self._reserved_outputs = n_outputs

    def _refuse_while_viewed(self, why: str) -> None:
        """A view of a buffer llama.cpp is about to move would dangle: refuse while one is referenced."""
        if len(self._views):
            raise StaleViewError(
                f"{why}, and llama.cpp will move it; numpy views from logits()/embeddings() are still "
                "referenced. Copy them (np.array(view)) or drop them first.")

    def _view(self, pointer: Any, shape: tuple[int, ...], writable: bool = False) -> np.ndarray:
        rows = _OutputRows(self._handle, int(ffi.cast("uintptr_t", pointer)), shape, writable)
        self._views.add(rows)
        return np.asarray(rows)

    def logits(self, i: int = -1, writable: bool = False) -> np.ndarray:
        """Logits for token ``i`` of the last decoded batch (it must have asked for output;
        negative ``i`` counts outputs from the end), a float32 view of length n_vocab whose
        values the next decode overwrites. Read-only unless ``writable``: what is written there
        is what samplers then draw from (a logits processor's result)."""
        with self._lock:
            pointer = lib.llama_get_logits_ith(self._ptr, i)
            if pointer == ffi.NULL:
                checks.before_call()  # llama.cpp logged why; the message below says it
                raise IndexError(f"no logits for batch token {i}: the last decode did not request them")
            return self._view(pointer, (self.n_vocab,), writable)

    def embeddings(self, i: int = -1) -> np.ndarray:
        """Embedding for token ``i`` of the last batch (needs ``embeddings=True``), a read-only view."""
        with self._lock:
            pointer = lib.llama_get_embeddings_ith(self._ptr, i)
            if pointer == ffi.NULL:
                checks.before_call()  # llama.cpp logged why; the message below says it
                raise IndexError(f"no embedding for batch token {i} (was the Context made with embeddings=True?)")
            return self._view(pointer, (self._n_embd_out,))

    def sequence_embeddings(self, seq_id: int = 0) -> np.ndarray:
        """Pooled embedding of a sequence (pooling_type other than NONE); for RANK pooling, the scores."""
        with self._lock:
            pointer = lib.llama_get_embeddings_seq(self._ptr, seq_id)
            if pointer == ffi.NULL:
                checks.before_call()  # llama.cpp logged why; the message below says it
                raise IndexError(f"no pooled embedding for sequence {seq_id} (pooling_type={self.pooling_type.name})")
            n = self._n_cls_out if self.pooling_type == PoolingType.RANK else self._n_embd_out
            return self._view(pointer, (n,))

    # --- KV memory ------------------------------------------------------------------------
    @property
    def _memory(self) -> Any:
        return lib.llama_get_memory(self._ptr)

    def kv_clear(self) -> None:
        with self._lock:
            lib.llama_memory_clear(self._memory, True)

    def kv_remove(self, seq_id: int = -1, p0: int = -1, p1: int = -1) -> bool:
        """Forget positions [p0, p1) of a sequence (-1: all sequences / unbounded)."""
        with self._lock:
            return lib.llama_memory_seq_rm(self._memory, seq_id, p0, p1)

    def kv_copy(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        with self._lock:
            lib.llama_memory_seq_cp(self._memory, src, dst, p0, p1)

    def kv_keep(self, seq_id: int) -> None:
        with self._lock:
            lib.llama_memory_seq_keep(self._memory, seq_id)

    def kv_shift(self, seq_id: int, p0: int, p1: int, delta: int) -> None:
        """Add ``delta`` to the positions [p0, p1) of a sequence (context shifting)."""
        with self._lock:
            if not lib.llama_memory_can_shift(self._memory):
                raise LlamaError("this model's memory cannot shift positions")
            lib.llama_memory_seq_add(self._memory, seq_id, p0, p1, delta)

    def kv_divide(self, seq_id: int, p0: int, p1: int, d: int) -> None:
        with self._lock:
            lib.llama_memory_seq_div(self._memory, seq_id, p0, p1, d)

    def kv_pos_min(self, seq_id: int = 0) -> int:
        with self._lock:
            return lib.llama_memory_seq_pos_min(self._memory, seq_id)

    def kv_pos_max(self, seq_id: int = 0) -> int:
        """Largest position stored for the sequence, -1 when empty."""
        with self._lock:
            return lib.llama_memory_seq_pos_max(self._memory, seq_id)

    # --- state ----------------------------------------------------------------------------
    def state_bytes(self, seq_id: int | None = None) -> bytes:
        """The whole state (logits, embeddings, KV memory), or one sequence's KV state."""
        with self._lock:
            pointer = self._ptr
            if seq_id is None:
                size = lib.llama_state_get_size(pointer)
                buf = ffi.new("uint8_t[]", size)
                written = lib.llama_state_get_data(pointer, buf, size)
            else:
                size = lib.llama_state_seq_get_size(pointer, seq_id)
                buf = ffi.new("uint8_t[]", size)
                written = lib.llama_state_seq_get_data(pointer, buf, size, seq_id)
            return ffi.buffer(buf, written)[:]

    def load_state_bytes(self, data: bytes, seq_id: int | None = None) -> None:
        with self._lock:
            pointer = self._ptr
            if seq_id is None:  # a whole state brings its own outputs
                self._refuse_while_viewed("restoring a state replaces the output buffer")
            checks.before_call()
            if seq_id is None:
                read = lib.llama_state_set_data(pointer, data, len(data))
            else:
                read = lib.llama_state_seq_set_data(pointer, data, len(data), seq_id)
            if read == 0:
                raise checks.failure(LlamaError, "the state could not be restored", default="invalid data")

    def save_state(self, path: str | os.PathLike[str], tokens: Sequence[int] = (), seq_id: int | None = None) -> None:
        """Write the state (and the tokens it holds) to a file, whole or for one sequence."""
        array = ffi.new("llama_token[]", list(tokens))
        with self._lock:
            pointer, name = self._ptr, os.fsencode(path)
            if seq_id is None:
                ok = lib.llama_state_save_file(pointer, name, array, len(tokens))
            else:
                ok = lib.llama_state_seq_save_file(pointer, name, seq_id, array, len(tokens)) > 0
            if not ok:
                raise LlamaError(f"could not write the state to {os.fspath(path)}")

    def load_state(self, path: str | os.PathLike[str], seq_id: int | None = None) -> list[int]:
        """Restore a state written by :meth:`save_state`; returns its tokens."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"state file not found: {os.fspath(path)}")
        capacity = self.n_ctx
        tokens, count = ffi.new("llama_token[]", capacity), ffi.new("size_t *")
        with self._lock:
            pointer, name = self._ptr, os.fsencode(path)
            if seq_id is None:  # a whole state brings its own outputs
                self._refuse_while_viewed("restoring a state replaces the output buffer")
            checks.before_call()
            if seq_id is None:
                ok = lib.llama_state_load_file(pointer, name, tokens, capacity, count)
            else:
                ok = lib.llama_state_seq_load_file(pointer, name, seq_id, tokens, capacity, count) > 0
            if not ok:
                raise checks.failure(LlamaError, f"could not restore the state from {os.fspath(path)}",
                                     default="invalid file")
            return ffi.unpack(tokens, count[0])

    # --- abort, adapters, counters --------------------------------------------------------
    def set_abort(self, should_abort: Callable[[], bool] | None) -> None:
        """``should_abort()`` is polled during decode (possibly from a worker thread); returning
        True makes the decode raise DecodeAbortedError. None removes it."""
        with self._lock:
            if should_abort is None:
                lib.llama_set_abort_callback(self._ptr, ffi.NULL, ffi.NULL)
                self._abort = None
            else:
                self._abort = CallbackSlot(should_abort)
                lib.llama_set_abort_callback(self._ptr, lib._pyllama_on_abort, self._abort.handle)

    def set_loras(self, adapters: dict[LoraAdapter, float]) -> None:
        """Apply exactly these LoRA adapters with these scales (an empty dict removes all)."""
        with self._lock:
            pointer = self._ptr
            handles = [adapter._ptr for adapter in adapters]
            code = lib.llama_set_adapters_lora(pointer, ffi.new("struct llama_adapter_lora *[]", handles),
                                               len(handles), ffi.new("float[]", list(adapters.values())))
            if code != 0:
                raise LlamaError(f"could not apply the LoRA adapters (code {code})")
            self._loras = dict(adapters)  # they must outlive their use here

    def set_control_vector(self, data: np.ndarray | None, layer_start: int = 1, layer_end: int = -1) -> None:
        """Add a control vector to the output of layers [layer_start, layer_end]; None clears it.

        ``data`` holds one row of n_embd floats per layer starting at layer 1 (layer 0 has none),
        as llama.cpp's control-vector files do."""
        with self._lock:
            pointer = self._ptr
            checks.before_call()
            if data is None:
                code = lib.llama_set_adapter_cvec(pointer, ffi.NULL, 0, self.n_embd, 0, 0)
            else:
                array = np.ascontiguousarray(data, dtype=np.float32).ravel()
                if array.size % self.n_embd:
                    raise ValueError(f"a control vector has a multiple of n_embd={self.n_embd} values, got {array.size}")
                end = layer_end if layer_end >= 0 else self._n_layer
                code = lib.llama_set_adapter_cvec(pointer, ffi.from_buffer("float[]", array), array.size,
                                                  self.n_embd, layer_start, end)
            if code != 0:
                raise checks.failure(LlamaError, f"could not apply the control vector (code {code})")

    def perf(self) -> Perf:
        data = lib.llama_perf_context(self._ptr)
        return Perf(data.t_load_ms, data.t_p_eval_ms, data.n_p_eval, data.t_eval_ms, data.n_eval)

    def reset_perf(self) -> None:
        lib.llama_perf_context_reset(self._ptr)

    def close(self) -> None:
        with self._lock:
            self._abort = None
            super().close()

    def __repr__(self) -> str:
        return "<pyllama.Context closed>" if self.closed else f"<pyllama.Context n_ctx={self.n_ctx}>"
