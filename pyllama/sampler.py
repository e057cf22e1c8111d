"""Sampler: a llama.cpp sampler chain built from Python.

    sampler = Sampler().top_k(40).top_p(0.95).temp(0.8).dist(seed=1337)
    token = sampler.sample(context)

Each method appends one stage and returns the sampler. The chain runs in C; the
same seed gives the same tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._binding import checks
from ._binding import ffi, lib
from ._binding.native import NativeObject, owned
from .context import Context
from .errors import SamplingError
from .model import Model

DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: a random seed
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data


class Sampler(NativeObject):
    def __init__(self, *, perf: bool = False) -> None:
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = not perf
        self._parents: list[Any] = []  # native models the stages read their vocab from
        self._handle = owned(lib.llama_sampler_chain_init(params), lib.llama_sampler_free, self._parents)
        self._stages: list[str] = []
        self._keep = False
        self.candidates: np.ndarray | None = None  # TOKEN_DATA of the last draw, with keep_candidates()

    def _add(self, pointer: Any, what: str, model: Model | None = None) -> Sampler:
        checks.check_pointer(pointer, ValueError, f"invalid {what} sampler", guarded=what.startswith("grammar"))
        if model is not None:
            self._parents.append(model._ptr)
        lib.llama_sampler_chain_add(self._ptr, pointer)  # the chain owns it now
        self._stages.append(what)
        return self

    # --- selection ------------------------------------------------------------------------
    def greedy(self) -> Sampler:
        """Always the most likely token."""
        return self._add(lib.llama_sampler_init_greedy(), "greedy")

    def dist(self, seed: int = DEFAULT_SEED) -> Sampler:
        """Draw from the distribution left by the stages before, with a seeded RNG."""
        return self._add(lib.llama_sampler_init_dist(seed & 0xFFFFFFFF), "dist")

    def mirostat(self, model: Model, seed: int = DEFAULT_SEED, tau: float = 5.0, eta: float = 0.1, m: int = 100) -> Sampler:
        return self._add(lib.llama_sampler_init_mirostat(model.vocab.n_tokens, seed & 0xFFFFFFFF, tau, eta, m), "mirostat")

    def mirostat_v2(self, seed: int = DEFAULT_SEED, tau: float = 5.0, eta: float = 0.1) -> Sampler:
        return self._add(lib.llama_sampler_init_mirostat_v2(seed & 0xFFFFFFFF, tau, eta), "mirostat_v2")

    def adaptive_p(self, target: float, decay: float = 0.9, seed: int = DEFAULT_SEED) -> Sampler:
        """Select tokens near a target probability over time (must come last, after min_p)."""
        return self._add(lib.llama_sampler_init_adaptive_p(target, decay, seed & 0xFFFFFFFF), "adaptive_p")

    # --- filters and transforms -----------------------------------------------------------
    def top_k(self, k: int) -> Sampler:
        return self._add(lib.llama_sampler_init_top_k(k), "top_k")

    def top_p(self, p: float, min_keep: int = 1) -> Sampler:
        return self._add(lib.llama_sampler_init_top_p(p, min_keep), "top_p")

    def min_p(self, p: float, min_keep: int = 1) -> Sampler:
        return self._add(lib.llama_sampler_init_min_p(p, min_keep), "min_p")

    def typical(self, p: float, min_keep: int = 1) -> Sampler:
        return self._add(lib.llama_sampler_init_typical(p, min_keep), "typical")

    def temp(self, t: float, delta: float = 0.0, exponent: float = 1.0) -> Sampler:
        """Temperature; with ``delta`` > 0, dynamic temperature in [t - delta, t + delta]."""
        if delta > 0:
            return self._add(lib.llama_sampler_init_temp_ext(t, delta, exponent), "temp_ext")
        return self._add(lib.llama_sampler_init_temp(t), "temp")

    def xtc(self, probability: float, threshold: float, min_keep: int = 1, seed: int = DEFAULT_SEED) -> Sampler:
        return self._add(lib.llama_sampler_init_xtc(probability, threshold, min_keep, seed & 0xFFFFFFFF), "xtc")

    def top_n_sigma(self, n: float) -> Sampler:
        return self._add(lib.llama_sampler_init_top_n_sigma(n), "top_n_sigma")

    def penalties(self, model: Model, last_n: int = 64, repeat: float = 1.0, frequency: float = 0.0,
                  presence: float = 0.0) -> Sampler:
        """Repetition, frequency and presence penalties over the last ``last_n`` accepted tokens."""
        return self._add(lib.llama_sampler_init_penalties(model.vocab.n_tokens, last_n, repeat, frequency, presence),
                         "penalties")

    def dry(self, model: Model, multiplier: float = 0.8, base: float = 1.75, allowed_length: int = 2,
            last_n: int = -1, sequence_breakers: Sequence[str] = ("\n", ":", '"', "*")) -> Sampler:
        breakers = [ffi.new("char[]", s.encode()) for s in sequence_breakers]
        array = ffi.new("const char *[]", breakers)
        return self._add(lib.llama_sampler_init_dry(model.vocab._ptr, multiplier, base, allowed_length, last_n,
                                                    array, len(breakers)), "dry", model)

    def logit_bias(self, model: Model, bias: Mapping[int, float]) -> Sampler:
        n_vocab = model.vocab.n_tokens
        for token in bias:
            if not 0 <= token < n_vocab:
                raise ValueError(f"logit_bias token {token} is outside the vocabulary (0..{n_vocab - 1})")
        array = ffi.new("llama_logit_bias[]", [(t, b) for t, b in bias.items()])
        return self._add(lib.llama_sampler_init_logit_bias(n_vocab, len(bias), array), "logit_bias")

    def grammar(self, model: Model, gbnf: str, root: str = "root") -> Sampler:
        """Constrain output to a GBNF grammar; a grammar that does not parse raises ValueError."""
        checks.before_call()
        return self._add(lib.pyllama_sampler_init_grammar(model.vocab._ptr, gbnf.encode(), root.encode()), "grammar",
                         model)

    def grammar_lazy(self, model: Model, gbnf: str, trigger_patterns: Sequence[str] = (),
                     trigger_tokens: Sequence[int] = (), root: str = "root") -> Sampler:
        """A grammar that applies only once a trigger pattern (regex) or token has appeared."""
        patterns = [ffi.new("char[]", p.encode()) for p in trigger_patterns]
        checks.before_call()
        pointer = lib.pyllama_sampler_init_grammar_lazy_patterns(
            model.vocab._ptr, gbnf.encode(), root.encode(), ffi.new("const char *[]", patterns), len(patterns),
            ffi.new("llama_token[]", list(trigger_tokens)), len(trigger_tokens))
        return self._add(pointer, "grammar_lazy", model)

    def infill(self, model: Model) -> Sampler:
        return self._add(lib.llama_sampler_init_infill(model.vocab._ptr), "infill", model)

    # --- use ------------------------------------------------------------------------------
    def keep_candidates(self) -> Sampler:
        """From now on each draw leaves in ``candidates`` the tokens the whole chain left with a
        probability, most likely first (llama-server's post-sampling probabilities). A chain that
        ends in greedy puts all of it on its choice, as llama-server's temperature 0 does. It costs
        a pass over the vocabulary in Python per token."""
        self._keep = True
        return self

    def sample(self, context: Context, i: int = -1) -> int:
        """Pick a token from the logits of batch token ``i`` of the context's last decode, and accept it."""
        with context._lock:
            context_handle = context._ptr
            logits = lib.llama_get_logits_ith(context_handle, i)
            if logits == ffi.NULL:
                checks.before_call()  # llama.cpp logged why; the message below says it
                raise IndexError(f"no logits for batch token {i}: the last decode did not request them")
            if self._keep:
                return self._draw_keeping(logits, context.n_vocab)
            if self._stages == ["greedy"]:  # the whole chain is an argmax: numpy does it ~15x faster
                return int(np.frombuffer(ffi.buffer(logits, 4 * context.n_vocab), dtype=np.float32).argmax())
            token = lib.pyllama_sampler_sample(self._ptr, context_handle, i)
        if token < 0:
            raise checks.failure(SamplingError, "sampling failed", guarded=True)
        return token

    def _draw_keeping(self, logits: Any, n_vocab: int) -> int:
        """What llama_sampler_sample does (apply the chain, take its choice, accept it), keeping
        the candidates the chain left."""
        data = np.empty(n_vocab, TOKEN_DATA)
        data["id"] = np.arange(n_vocab, dtype=np.int32)
        data["logit"] = np.frombuffer(ffi.buffer(logits, 4 * n_vocab), dtype=np.float32)
        data["p"] = 0.0
        buffer = ffi.from_buffer("llama_token_data[]", data)  # alive while the array points into it
        array = ffi.new("llama_token_data_array *")
        array.data, array.size, array.selected, array.sorted = buffer, n_vocab, -1, False
        if not lib.pyllama_sampler_apply(self._ptr, array):
            raise checks.failure(SamplingError, "sampling failed", guarded=True)
        if not 0 <= array.selected < array.size:
            raise SamplingError("the sampler chain selected no token")
        left = np.frombuffer(ffi.buffer(array.data, array.size * TOKEN_DATA.itemsize), dtype=TOKEN_DATA).copy()
        token = int(left["id"][array.selected])
        if self._stages[-1] == "greedy":  # it picks without probabilities
            left = left[array.selected:array.selected + 1]
            left["p"] = 1.0
        left = left[left["p"] > 0]
        self.candidates = left[np.argsort(-left["p"], kind="stable")]
        self.accept(token)
        return token

    def accept(self, token: int) -> None:
        """Tell stateful stages (penalties, grammar, mirostat) about a token chosen elsewhere."""
        if not lib.pyllama_sampler_accept(self._ptr, token):
            raise checks.failure(SamplingError, f"accepting token {token} failed", guarded=True)

    def reset(self) -> None:
        if not lib.pyllama_sampler_reset(self._ptr):
            raise checks.failure(SamplingError, "resetting the sampler failed", guarded=True)

    def clone(self) -> Sampler:
        twin = Sampler.__new__(Sampler)
        twin._parents = list(self._parents)
        twin._handle = owned(lib.llama_sampler_clone(self._ptr), lib.llama_sampler_free, twin._parents)
        twin._stages = list(self._stages)
        twin._keep, twin.candidates = self._keep, None
        return twin

    @property
    def seed(self) -> int:
        return lib.llama_sampler_get_seed(self._ptr)

    @property
    def stages(self) -> list[str]:
        return list(self._stages)

    def __len__(self) -> int:
        return lib.llama_sampler_chain_n(self._ptr)

    def __repr__(self) -> str:
        return f"<pyllama.Sampler {' -> '.join(self._stages) or 'empty'}>"
