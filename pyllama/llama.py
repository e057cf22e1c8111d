"""Llama: llama-cpp-python's high-level API on pyllama's core.

    llm = Llama(model_path="model.gguf", n_ctx=1024, seed=1337, n_gpu_layers=10)
    out = llm("Q: Name the planets in the solar system? A: ", max_tokens=32, stop=["Q:", "\\n"], echo=True)

Results are OpenAI-shaped dicts (``text_completion``, ``embedding``). One Llama serves one
call at a time: concurrent calls from several threads wait for each other.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Union

import numpy as np

from .batch import Batch
from .context import Context
from .enums import FlashAttnType, GGMLType, PoolingType, RopeScalingType, SplitMode
from .errors import ContextOverflowError
from .lora import LoraAdapter
from .model import KvValue, Model
from .sampler import DEFAULT_SEED
from .generation import core as _completion
from .generation.cache import LlamaState
from .generation.params import SamplingParams
from .generation.session import Session, common_prefix
from .generation.speculative import DraftModel

Prompt = Union[str, Sequence[int]]

# llama-cpp-python constructor arguments that have no effect here (kept so ported code runs)
_IGNORED = {"logits_all", "numa", "last_n_tokens_size", "offload_kqv_warned", "mul_mat_q", "f16_kv",
            "low_vram", "embd_normalize", "type_k_warned", "spm_infill", "swa_full", "no_perf"}


class Llama:
    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_gpu_layers: int = 0,
        split_mode: SplitMode | int = SplitMode.LAYER,
        main_gpu: int = 0,
        tensor_split: Sequence[float] | None = None,
        rpc_servers: str | Sequence[str] | None = None,
        vocab_only: bool = False,
        use_mmap: bool = True,
        use_mlock: bool = False,
        kv_overrides: Mapping[str, KvValue] | None = None,
        seed: int = DEFAULT_SEED,
        n_ctx: int = 512,
        n_batch: int = 512,
        n_ubatch: int = 512,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        rope_scaling_type: RopeScalingType | int | None = None,
        pooling_type: PoolingType | int | None = None,
        rope_freq_base: float = 0.0,
        rope_freq_scale: float = 0.0,
        yarn_ext_factor: float = -1.0,
        yarn_attn_factor: float = -1.0,
        yarn_beta_fast: float = -1.0,
        yarn_beta_slow: float = -1.0,
        yarn_orig_ctx: int = 0,
        embedding: bool = False,
        offload_kqv: bool = True,
        flash_attn: bool | FlashAttnType | None = None,
        type_k: GGMLType | int | None = None,
        type_v: GGMLType | int | None = None,
        lora_path: str | None = None,
        lora_scale: float = 1.0,
        context_shift_keep: int | None = None,
        chat_format: str | None = None,
        chat_handler: Any = None,
        draft_model: Any = None,
        verbose: bool = False,
        **ignored: Any,
    ) -> None:
        unknown = set(ignored) - _IGNORED
        if unknown:
            raise TypeError(f"Llama() got unexpected arguments: {', '.join(sorted(unknown))}")
        if isinstance(rpc_servers, str):
            rpc_servers = [s.strip() for s in rpc_servers.split(",") if s.strip()]
        self.model_path = os.fspath(model_path)
        self.verbose = verbose
        self.seed = seed
        self.chat_format = chat_format
        self.chat_handler = chat_handler
        self.model = Model(model_path, n_gpu_layers=n_gpu_layers, split_mode=split_mode, main_gpu=main_gpu,
                           tensor_split=tensor_split, rpc_servers=rpc_servers, use_mmap=use_mmap,
                           use_mlock=use_mlock, vocab_only=vocab_only, kv_overrides=kv_overrides, verbose=verbose)
        self.context: Context | None = None
        self._session: Session | None = None
        if not vocab_only:
            self.context = Context(
                self.model, n_ctx=n_ctx or self.model.n_ctx_train, n_batch=min(n_batch, n_ctx or n_batch),
                n_ubatch=n_ubatch, n_threads=n_threads, n_threads_batch=n_threads_batch, embeddings=embedding,
                pooling_type=pooling_type, flash_attn=flash_attn, type_k=type_k, type_v=type_v,
                offload_kqv=offload_kqv, rope_scaling_type=rope_scaling_type, rope_freq_base=rope_freq_base,
                rope_freq_scale=rope_freq_scale, yarn_ext_factor=yarn_ext_factor, yarn_attn_factor=yarn_attn_factor,
                yarn_beta_fast=yarn_beta_fast, yarn_beta_slow=yarn_beta_slow, yarn_orig_ctx=yarn_orig_ctx)
            self._session = Session(self.context, keep=context_shift_keep)
        self.draft_model = self._drafter(draft_model, n_ctx, n_threads)
        self.last_speculation = _completion.SpeculationStats()
        self._lock = threading.Lock()
        self.cache: Any = None
        self._adapters: dict[str, LoraAdapter] = {}
        self._active_loras: dict[str, float] = {}
        if lora_path:
            self._apply_loras({lora_path: lora_scale})

    def _drafter(self, draft_model: Any, n_ctx: int, n_threads: int | None) -> _completion.Drafter | None:
        """A GGUF path becomes a DraftModel; any ``draft(input_ids) -> ids`` callable is used as is."""
        if draft_model is None or callable(draft_model):
            return draft_model
        if isinstance(draft_model, (str, os.PathLike)):
            return DraftModel(draft_model, n_ctx=n_ctx or self.model.n_ctx_train, n_threads=n_threads)
        raise TypeError(f"draft_model must be a GGUF path or a callable drafter, not {type(draft_model).__name__}")

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str, *, cache_dir: str | os.PathLike[str] | None = None,
                        local_dir: str | os.PathLike[str] | None = None, local_files_only: bool = False,
                        **kwargs: Any) -> Llama:
        """Load a GGUF from a Hugging Face repository (``pip install pyllama-cffi[hf]``).

        ``filename`` may be a glob such as ``"*q4_0.gguf"``; exactly one file must match.
        """
        from ._hub import download

        path = download(repo_id, filename, cache_dir=cache_dir, local_dir=local_dir,
                        local_files_only=local_files_only)
        return cls(model_path=path, **kwargs)

    # --- sizes and vocabulary (llama-cpp-python names) ------------------------------------
    def n_ctx(self) -> int:
        return self._context().n_ctx

    def n_vocab(self) -> int:
        return self.model.vocab.n_tokens

    def n_embd(self) -> int:
        return self.model.n_embd

    def token_bos(self) -> int:
        return self.model.vocab.bos

    def token_eos(self) -> int:
        return self.model.vocab.eos

    def tokenize(self, text: bytes | str, add_bos: bool = True, special: bool = False) -> list[int]:
        return self.model.tokenize(text, add_special=add_bos, parse_special=special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        """Bytes of ``tokens``; with ``prev_tokens``, only the bytes they add after those."""
        vocab = self.model.vocab
        if prev_tokens is None:
            return vocab.detokenize_bytes(tokens, unparse_special=special)
        before = vocab.detokenize_bytes(prev_tokens, unparse_special=special)
        return vocab.detokenize_bytes(list(prev_tokens) + list(tokens), unparse_special=special)[len(before):]

    @property
    def n_tokens(self) -> int:
        """Tokens currently held in the context (the reusable prefix)."""
        return len(self._session.tokens) if self._session else 0

    @property
    def last_prompt_evaluated(self) -> int:
        """How many prompt tokens the last call evaluated (the rest came from the cache)."""
        return self._session.last_prompt_evaluated if self._session else 0

    def _context(self) -> Context:
        if self.context is None:
            raise ValueError("this Llama was loaded with vocab_only=True; it has no context")
        return self.context

    # --- completions ----------------------------------------------------------------------
    def create_completion(
        self,
        prompt: Prompt,
        suffix: str | None = None,
        max_tokens: int | None = 16,
        temperature: float = 0.8,
        top_p: float = 0.95,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        logprobs: int | None = None,
        echo: bool = False,
        stop: str | Sequence[str] | None = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        top_k: int = 40,
        stream: bool = False,
        seed: int | None = None,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        model: str | None = None,
        grammar: Any = None,
        logit_bias: Mapping[int | str, float] | None = None,
        loras: Mapping[str, float] | None = None,
        grammar_triggers: Sequence[str] = (),
        **ignored: Any,
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Complete ``prompt``; a dict, or with ``stream=True`` an iterator of chunks."""
        unknown = set(ignored) - {"tfs_z", "stopping_criteria", "logits_processor"}
        if unknown:
            raise TypeError(f"create_completion() got unexpected arguments: {', '.join(sorted(unknown))}")
        params = SamplingParams(
            temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
            repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
            mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta, seed=seed,
            logit_bias={int(k): v for k, v in logit_bias.items()} if logit_bias else None,
            grammar=str(grammar) if grammar is not None else None, grammar_triggers=tuple(grammar_triggers))
        prompt_tokens = self._prompt_tokens(prompt, suffix)
        request = _completion.Request(
            prompt_tokens=prompt_tokens,
            params=params,
            max_tokens=max_tokens,
            stops=[stop] if isinstance(stop, str) else list(stop or ()),
            echo=echo,
            echo_text=prompt if isinstance(prompt, str) else self.model.detokenize(prompt_tokens, remove_special=True),
            logprobs=logprobs,
            loras=dict(loras or {}),
        )
        header = {"id": f"cmpl-{uuid.uuid4()}", "object": "text_completion", "created": int(time.time()),
                  "model": model or self.model_path}
        if stream:
            return self._stream(request, header)
        with self._lock:
            result = _completion.collect(self._run(request), logprobs is not None)
        return {**header, "choices": [{"text": result.text, "index": 0, "logprobs": result.logprobs,
                                       "finish_reason": result.finish_reason}],
                "usage": result.usage}

    __call__ = create_completion

    def create_chat_completion(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any):
        """An OpenAI ``chat.completion`` (or, with ``stream=True``, its chunks) for ``messages``.

        Takes tools/tool_choice (and legacy functions/function_call), response_format
        (json_object, json_schema), stop, max_tokens, seed, logprobs/top_logprobs,
        ``reasoning=True`` (``<think>`` text into ``reasoning_content``) and the sampling
        arguments of create_completion. See pyllama.chat.
        """
        from .chat.completion import create_chat_completion

        return create_chat_completion(self, messages, **kwargs)

    def _stream(self, request: _completion.Request, header: dict[str, Any]) -> Iterator[dict[str, Any]]:
        with self._lock:
            events = self._run(request)
            try:
                for chunk in _completion.chunks(events, request.logprobs is not None):
                    yield {**header, "choices": [{"index": 0, **chunk}]}
            finally:
                events.close()

    def _run(self, request: _completion.Request) -> Iterator[_completion.Event]:
        session = self._session
        if session is None:
            raise ValueError("this Llama was loaded with vocab_only=True; it cannot generate")
        self._apply_loras(request.loras)
        self.last_speculation = _completion.SpeculationStats()
        if self.cache is not None:
            self._resume_from_cache(request.prompt_tokens)
        events = _completion.generate(self.model, session, request, self.seed, self.verbose, self.draft_model,
                                      self.last_speculation)
        return events if self.cache is None else self._cached(events)

    def set_cache(self, cache: Any) -> None:
        """Keep prompt states in ``cache`` (``pyllama.cache.RAMCache``/``DiskCache``); None turns it off."""
        self.cache = cache

    def _resume_from_cache(self, prompt: list[int]) -> None:
        session = self._session
        state = self.cache.best_match(tuple(prompt))
        if state is not None and common_prefix(state.tokens, prompt) > common_prefix(session.tokens, prompt):
            self._context().load_state_bytes(state.state)
            session.tokens = list(state.tokens)

    def _cached(self, events: Iterator[_completion.Event]) -> Iterator[_completion.Event]:
        for event in events:
            if event.finish_reason is not None:  # store before the last event: callers stop reading there
                self.cache.put(LlamaState(tuple(self._session.tokens), self._context().state_bytes(), self.seed))
            yield event

    def _prompt_tokens(self, prompt: Prompt, suffix: str | None) -> list[int]:
        vocab = self.model.vocab
        if suffix is not None:
            fim = [vocab.fim_prefix, vocab.fim_suffix, vocab.fim_middle]
            if -1 in fim:
                raise ValueError("suffix needs a model with fill-in-the-middle tokens; this one has none")
            text = prompt if isinstance(prompt, str) else vocab.detokenize(prompt)
            tokens = ([vocab.bos] if vocab.add_bos else []) + [fim[0]] + self.tokenize(text, False, True) + \
                [fim[1]] + self.tokenize(suffix, False, True) + [fim[2]]
        elif isinstance(prompt, str):
            tokens = self.tokenize(prompt, add_bos=True, special=True)
        else:
            tokens = [int(t) for t in prompt]
            if any(not 0 <= t < vocab.n_tokens for t in tokens):
                raise ValueError(f"prompt token ids must be in 0..{vocab.n_tokens - 1}")
        if not tokens:
            raise ValueError("the prompt is empty")
        n_ctx = self.n_ctx()
        if len(tokens) > n_ctx:
            raise ContextOverflowError(f"the prompt has {len(tokens)} tokens but the context holds {n_ctx} (n_ctx)")
        return tokens

    def _apply_loras(self, wanted: dict[str, float]) -> None:
        """Switch adapters without reloading; a change invalidates the cached prefix."""
        if wanted == self._active_loras:
            return
        for path in wanted:
            if path not in self._adapters:
                self._adapters[path] = LoraAdapter(self.model, path)
        self._context().set_loras({self._adapters[path]: scale for path, scale in wanted.items()})
        self._active_loras = dict(wanted)
        if self._session is not None:
            self._session.reset()

    # --- embeddings -----------------------------------------------------------------------
    def embed(self, input: str | Sequence[str], normalize: bool = True, truncate: bool = True,
              return_count: bool = False) -> Any:
        """Embedding of each input: a pooled vector, or one vector per token when pooling is NONE."""
        context = self._context()
        texts = [input] if isinstance(input, str) else list(input)
        results, count = [], 0
        with self._lock:
            if self._session is not None:
                self._session.reset()
            for text in texts:
                tokens = self.tokenize(text, add_bos=True, special=True)
                if len(tokens) > context.n_batch:
                    if not truncate:
                        raise ContextOverflowError(f"the input has {len(tokens)} tokens but n_batch is {context.n_batch}")
                    tokens = tokens[: context.n_batch]
                count += len(tokens)
                context.kv_clear()
                batch = Batch.of(tokens, output=True)
                if self.model.has_encoder or not self.model.has_decoder or context.pooling_type != PoolingType.NONE:
                    context.encode(batch)
                else:
                    context.decode(batch)
                if context.pooling_type == PoolingType.NONE:
                    vectors = np.stack([np.array(context.embeddings(i)) for i in range(len(tokens))])
                else:
                    vectors = np.array(context.sequence_embeddings(0))
                if normalize:
                    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
                results.append(vectors.tolist())
            context.kv_clear()
        output = results[0] if isinstance(input, str) else results
        return (output, count) if return_count else output

    def create_embedding(self, input: str | Sequence[str], model: str | None = None) -> dict[str, Any]:
        embeddings, count = self.embed(input, return_count=True)
        if isinstance(input, str):
            embeddings = [embeddings]
        return {"object": "list", "model": model or self.model_path,
                "data": [{"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(embeddings)],
                "usage": {"prompt_tokens": count, "total_tokens": count}}

    # --- state ----------------------------------------------------------------------------
    def save_state(self) -> LlamaState:
        with self._lock:
            return LlamaState(tuple(self._session.tokens), self._context().state_bytes(), self.seed)

    def load_state(self, state: LlamaState) -> None:
        with self._lock:
            self._context().load_state_bytes(state.state)
            self._session.tokens = list(state.tokens)
            self.seed = state.seed

    def reset(self) -> None:
        """Forget the cached prefix."""
        with self._lock:
            if self._session is not None:
                self._session.reset()

    def set_seed(self, seed: int) -> None:
        self.seed = seed

    def timings(self):
        """llama.cpp's counters: load, prompt eval and eval tokens and times."""
        return self._context().perf()

    def close(self) -> None:
        """Free the context and the model now (GPU memory included)."""
        if self.context is not None:
            self.context.close()
        if isinstance(self.draft_model, DraftModel):
            self.draft_model.close()
        self._adapters.clear()
        self.model.close()

    def __enter__(self) -> Llama:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pyllama.Llama {self.model_path!r}>"
