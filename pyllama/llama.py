"""Llama: llama-cpp-python's high-level API on pyllama's core.

    llm = Llama(model_path="model.gguf", n_ctx=1024, seed=1337, n_gpu_layers=10)
    out = llm("Q: Name the planets in the solar system? A: ", max_tokens=32, stop=["Q:", "\\n"], echo=True)

Results are OpenAI-shaped dicts (``text_completion``, ``embedding``). One Llama serves one
call at a time: concurrent calls from several threads wait for each other, and a stream left
open is ended by the next call from its own thread (pyllama.turns).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Union

from .chat import ChatTemplate, chat_chunks, chat_header, chat_response, chat_template, plan_chat
from .chat.media import MediaReader
from .context import Context
from .embedding import embed
from .enums import AttentionType, FlashAttnType, GGMLType, PoolingType, RopeScalingType, SplitMode
from .errors import ContextOverflowError
from .generation.cache import LlamaState
from .generation.generator import Event, Request, generate, infill_prompt, prompt_infos
from .generation.draft_policy import DecodeCost, DraftPolicy, SpeculationStats
from .generation.hooks import LogitsProcessor, StoppingCriterion
from .generation.params import SamplingParams
from .generation.kv_sequence import KVSequence, common_prefix
from .generation.speculative import DraftModel, Drafter
from .llama_cpp_arguments import (COMPLETION_ARGUMENTS, LLAMA_ARGUMENTS, LLAMA_REFUSED, check_ignored, projector_of,
                                  rpc_server_list)
from .llama_tokenizer import LlamaTokenizer
from .lora import LoraAdapter
from .model import KvValue, Model
from .multimodal import MediaPrompt, Projector
from .placement import TensorOverrides
from .rerank import ranking, score
from .text_completion import collect, completion_chunks, logprobs_dict
from .sampler import DEFAULT_SEED
from .turns import Turns

Prompt = Union[str, Sequence[int], MediaPrompt]  # a MediaPrompt: text with images/audio (Llama.projector)


@dataclasses.dataclass(frozen=True)
class ContextParams:
    """The settings the context was made with, as llama-cpp-python's ``llm.context_params`` has them."""

    n_ctx: int
    n_batch: int
    n_ubatch: int
    n_seq_max: int
    n_threads: int
    n_threads_batch: int
    embeddings: bool


def _flash_attn(asked: bool | FlashAttnType | None, type_v: GGMLType | int | None) -> bool | FlashAttnType | None:
    """None: off, as llama-cpp-python has it (on a CPU it slows short contexts: 0.62x on a 110M
    Q8_0 model, bench/completion.py), unless a quantized V cache needs it (llama.cpp's auto)."""
    if asked is not None:
        return asked
    return None if type_v is not None and GGMLType(type_v) not in (GGMLType.F32, GGMLType.F16, GGMLType.BF16) \
        else False


class Llama:
    """llama-cpp-python's ``Llama``, keywords and accessors included: ``llama_cpp.Llama`` is this
    class (pyllama.compat), so frameworks written for it run on pyllama unchanged."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        # the model: where its layers run and how its file is read
        n_gpu_layers: int = 0, split_mode: SplitMode | int = SplitMode.LAYER, main_gpu: int = 0,
        tensor_split: Sequence[float] | None = None, rpc_servers: str | Sequence[str] | None = None,
        devices: Sequence[str] | None = None, tensor_overrides: TensorOverrides | None = None,
        cpu_moe: bool = False, n_cpu_moe: int = 0, vocab_only: bool = False, use_mmap: bool = True,
        use_mlock: bool = False, kv_overrides: Mapping[str, KvValue] | None = None,
        # the context: its KV memory, batches, threads, attention and RoPE
        seed: int = DEFAULT_SEED, n_ctx: int = 512, n_batch: int = 512, n_ubatch: int = 512,
        n_threads: int | None = None, n_threads_batch: int | None = None,
        rope_scaling_type: RopeScalingType | int | None = None, pooling_type: PoolingType | int | None = None,
        attention_type: AttentionType | int | None = None,
        rope_freq_base: float = 0.0, rope_freq_scale: float = 0.0, yarn_ext_factor: float = -1.0,
        yarn_attn_factor: float = -1.0, yarn_beta_fast: float = -1.0, yarn_beta_slow: float = -1.0,
        yarn_orig_ctx: int = 0, embedding: bool = False, offload_kqv: bool = True,
        flash_attn: bool | FlashAttnType | None = None, type_k: GGMLType | int | None = None,
        type_v: GGMLType | int | None = None, swa_full: bool | None = None, context_shift_keep: int | None = None,
        # what rides along: LoRA, chat rendering, a drafter, a projector for images and audio
        lora_path: str | None = None, lora_scale: float = 1.0, chat_format: str | None = None,
        chat_handler: Any = None, draft_model: Any = None, mmproj: str | os.PathLike[str] | None = None,
        verbose: bool = False,
        **ignored: Any,  # llama-cpp-python's keywords without effect here (pyllama.llama_cpp_arguments)
    ) -> None:
        check_ignored("Llama", ignored, LLAMA_ARGUMENTS, LLAMA_REFUSED)
        mmproj = mmproj or projector_of(chat_handler)  # llama-cpp-python's vision handlers carry the projector
        self.model_path = os.fspath(model_path)
        self.verbose = verbose
        self.seed = seed
        self.chat_format = chat_format
        self.chat_handler = chat_handler
        self.model = Model(model_path, n_gpu_layers=n_gpu_layers, split_mode=split_mode, main_gpu=main_gpu,
                           tensor_split=tensor_split, rpc_servers=rpc_server_list(rpc_servers), devices=devices,
                           tensor_overrides=tensor_overrides, cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe, use_mmap=use_mmap,
                           use_mlock=use_mlock, vocab_only=vocab_only, kv_overrides=kv_overrides, verbose=verbose)
        self.context = None if vocab_only else Context(  # a vocab_only Llama only tokenizes
            self.model, n_ctx=n_ctx or self.model.n_ctx_train, n_batch=min(n_batch, n_ctx or n_batch),
            n_ubatch=n_ubatch, n_threads=n_threads, n_threads_batch=n_threads_batch, embeddings=embedding,
            pooling_type=pooling_type, attention_type=attention_type, flash_attn=_flash_attn(flash_attn, type_v), type_k=type_k,
            type_v=type_v, offload_kqv=offload_kqv, swa_full=swa_full, rope_scaling_type=rope_scaling_type,
            rope_freq_base=rope_freq_base, rope_freq_scale=rope_freq_scale, yarn_ext_factor=yarn_ext_factor,
            yarn_attn_factor=yarn_attn_factor, yarn_beta_fast=yarn_beta_fast, yarn_beta_slow=yarn_beta_slow,
            yarn_orig_ctx=yarn_orig_ctx)
        self._session = KVSequence(self.context, keep=context_shift_keep) if self.context is not None else None
        # images (and audio, where the projector has it) in chat messages and MediaPrompts
        self.projector = Projector(self.model, mmproj, n_threads=n_threads, use_gpu=self.model.uses_gpu) if mmproj \
            else None
        self.draft_model = self._drafter(draft_model, n_ctx, n_threads)
        self._init_call_state()
        if lora_path:
            self._apply_loras({lora_path: lora_scale})

    def _init_call_state(self) -> None:
        """What calls share: turns, the prompt cache, adapters, what speculation learned."""
        self.last_speculation = SpeculationStats()
        self._decode_cost = DecodeCost()  # what decodes of each size cost here: what guesses are worth
        self._turns = Turns()
        self.cache: Any = None
        self._adapters: dict[str, LoraAdapter] = {}
        self._active_loras: dict[str, float] = {}

    def _drafter(self, draft_model: Any, n_ctx: int, n_threads: int | None) -> Drafter | None:
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

    def token_nl(self) -> int:
        return self.model.vocab.nl

    def tokenize(self, text: bytes | str, add_bos: bool = True, special: bool = False) -> list[int]:
        return self.tokenizer_.tokenize(text, add_bos=add_bos, special=special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        """Bytes of ``tokens``; with ``prev_tokens``, only the bytes they add after those."""
        return self.tokenizer_.detokenize(tokens, prev_tokens=prev_tokens, special=special)

    @functools.cached_property
    def tokenizer_(self) -> LlamaTokenizer:
        return LlamaTokenizer(self.model)

    def tokenizer(self) -> LlamaTokenizer:
        return self.tokenizer_

    @functools.cached_property
    def metadata(self) -> dict[str, str]:
        """The GGUF's key/value metadata, values as text."""
        return self.model.metadata

    @property
    def context_params(self) -> ContextParams:
        context = self._context()
        n_threads, n_threads_batch = context.n_threads
        return ContextParams(context.n_ctx, context.n_batch, context.n_ubatch, context.n_seq_max, n_threads,
                             n_threads_batch, context._embeddings)

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
        logits_processor: LogitsProcessor | None = None,
        stopping_criteria: StoppingCriterion | None = None,
        **ignored: Any,
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Complete ``prompt``; a dict, or with ``stream=True`` an iterator of chunks.

        A stream holds this Llama between chunks: calls from other threads wait for it to end,
        and a later call from the same thread ends it (see pyllama.turns). ``logits_processor``
        and ``stopping_criteria`` run at each step, as in llama-cpp-python (pyllama.generation.hooks).
        """
        check_ignored("create_completion", ignored, COMPLETION_ARGUMENTS)
        params = SamplingParams(
            temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
            repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
            mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta, seed=seed,
            logit_bias={int(k): v for k, v in logit_bias.items()} if logit_bias else None,
            grammar=str(grammar) if grammar is not None else None, grammar_triggers=tuple(grammar_triggers))
        prompt_tokens = self._prompt_tokens(prompt, suffix)
        request = Request(prompt_tokens, params, max_tokens, [stop] if isinstance(stop, str) else list(stop or ()),
                          logprobs, media=prompt.media if isinstance(prompt, MediaPrompt) else {},
                          logits_processor=logits_processor, stopping_criteria=stopping_criteria)
        echo_text = None
        if echo and request.media:
            raise ValueError("echo is not available for prompts with images or audio")
        if echo:
            echo_text = prompt if isinstance(prompt, str) else self.model.detokenize(prompt_tokens, remove_special=True)
        header = {"id": f"cmpl-{uuid.uuid4()}", "object": "text_completion", "created": int(time.time()),
                  "model": model or self.model_path}
        if stream:
            return self._stream(request, header, echo_text, dict(loras or {}))
        with self._turns.call():
            result = collect(self._events(request, echo_text, dict(loras or {})))
        return {**header, "choices": [{"text": result.text, "index": 0, "finish_reason": result.finish_reason,
                                       "logprobs": logprobs_dict(result.tokens) if logprobs is not None else None}],
                "usage": result.usage}

    __call__ = create_completion

    def _stream(self, request: Request, header: dict[str, Any], echo_text: str | None,
                loras: dict[str, float]) -> Iterator[dict[str, Any]]:
        turn = self._turns.acquire(stream=True)
        events = self._events(request, echo_text, loras)
        try:
            for chunk in completion_chunks(events, request.logprobs is not None):
                yield {**header, "choices": [{"index": 0, **chunk}]}
                turn.check()
        finally:
            events.close()
            self._turns.release(turn)

    def _events(self, request: Request, echo_text: str | None, loras: dict[str, float]) -> Iterator[Event]:
        session = self._session
        if session is None:
            raise ValueError("this Llama was loaded with vocab_only=True; it cannot generate")
        self._apply_loras(loras)
        policy = DraftPolicy(cost=self._decode_cost)
        self.last_speculation = policy.stats
        prompt = request.prompt_tokens
        if echo_text is not None:
            infos = []
            if request.logprobs is not None:  # every prompt position's logits: evaluated afresh
                infos = prompt_infos(self.model, prompt, session.prefill(prompt, all_logits=True), request.logprobs)
            yield Event(echo_text, infos)
        if self.cache is not None:
            self._resume_from_cache(prompt)
        for event in generate(self.model, session, request, self.seed, self.draft_model, policy):
            if event.finish_reason is not None:
                if self.cache is not None:  # stored before the last event: callers stop reading there
                    self.cache.put(LlamaState(tuple(session.tokens), self._context().state_bytes(), self.seed))
                if self.verbose:
                    print(self._context().perf(), file=sys.stderr)
            yield event

    # --- chat -----------------------------------------------------------------------------
    @functools.cached_property
    def chat_template(self) -> ChatTemplate:
        """The template chats render with: ``chat_format``, else the GGUF's own, else chatml."""
        return chat_template(self.model, self.chat_format)

    def create_chat_completion(
        self, messages: Sequence[Mapping[str, Any]], *, tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None, functions: Sequence[Mapping[str, Any]] | None = None, function_call: Any = None,
        response_format: Mapping[str, Any] | None = None, stop: str | Sequence[str] | None = None,
        max_tokens: int | None = None, logprobs: bool = False, top_logprobs: int | None = None, stream: bool = False,
        model: str | None = None, reasoning: bool = False, grammar: str | None = None, **sampling: Any,
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """An OpenAI ``chat.completion`` (or, with ``stream=True``, its chunks) for ``messages``.

        Takes tools/tool_choice (and legacy functions/function_call), response_format
        (json_object, json_schema), stop, max_tokens, seed, logprobs/top_logprobs,
        ``reasoning=True`` (``<think>`` text into ``reasoning_content``) and the sampling
        arguments of create_completion. See pyllama.chat.
        """
        plan = plan_chat(self.chat_template, self.model.vocab, messages, tools=tools, tool_choice=tool_choice,
                         functions=functions, function_call=function_call, response_format=response_format,
                         stop=stop, grammar=grammar, reasoning=reasoning,
                         media=MediaReader(self.projector, local_files=True) if self.projector else None)
        prompt = MediaPrompt(plan.prompt_tokens, plan.media) if plan.media else plan.prompt_tokens
        completion = self.create_completion(prompt, max_tokens=max_tokens, stop=plan.stops,
                                            grammar=plan.grammar, grammar_triggers=plan.grammar_triggers,
                                            stream=stream, logprobs=(top_logprobs or 0) if logprobs else None,
                                            **sampling)
        header = chat_header(model or self.model_path)
        if stream:
            return chat_chunks(completion, header, plan)
        return chat_response(plan, header, completion)

    def create_chat_completion_openai_v1(self, *args: Any, **kwargs: Any) -> Any:
        """create_chat_completion as the ``openai`` package's types (``pip install openai``):
        a ChatCompletion, or with ``stream=True`` an iterator of ChatCompletionChunk."""
        from openai.types.chat import ChatCompletion, ChatCompletionChunk

        result = self.create_chat_completion(*args, **kwargs)
        if kwargs.get("stream", False):
            return (ChatCompletionChunk(**chunk) for chunk in result)
        return ChatCompletion(**result)

    def set_cache(self, cache: Any) -> None:
        """Keep prompt states in ``cache`` (``pyllama.RAMCache``/``DiskCache``); None turns it off."""
        self.cache = cache

    def _resume_from_cache(self, prompt: list[int]) -> None:
        session = self._session
        state = self.cache.best_match(tuple(prompt))
        if state is not None and common_prefix(state.tokens, prompt) > common_prefix(session.tokens, prompt):
            self._context().load_state_bytes(state.state)
            session.tokens = list(state.tokens)

    def _prompt_tokens(self, prompt: Prompt, suffix: str | None) -> list[int]:
        vocab = self.model.vocab
        if isinstance(prompt, MediaPrompt):
            if suffix is not None:
                raise ValueError("suffix (fill-in-the-middle) is not available for prompts with images or audio")
            tokens = list(prompt.tokens)
        elif suffix is not None:
            tokens = infill_prompt(vocab, prompt if isinstance(prompt, str) else vocab.detokenize(prompt), suffix)
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
        with self._turns.call():
            if self._session is not None:
                self._session.reset()
            results, count = embed(context, texts, normalize=normalize, truncate=truncate)
        output = results[0] if isinstance(input, str) else results
        return (output, count) if return_count else output

    def create_embedding(self, input: str | Sequence[str], model: str | None = None) -> dict[str, Any]:
        embeddings, count = self.embed(input, return_count=True)
        if isinstance(input, str):
            embeddings = [embeddings]
        return {"object": "list", "model": model or self.model_path,
                "data": [{"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(embeddings)],
                "usage": {"prompt_tokens": count, "total_tokens": count}}

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None, normalize: bool = False,
               return_documents: bool = False) -> list[dict[str, Any]]:
        """Documents by relevance to ``query``, best first: ``[{"index", "relevance_score"}, ...]``
        (Cohere/Jina), the ``top_n`` best, with ``"document": {"text"}`` if asked. Needs a reranker
        loaded with ``embedding=True, pooling_type=PoolingType.RANK``; ``normalize`` turns the raw
        logits (llama-server's scores) into 0..1 with the sigmoid. See pyllama.rerank."""
        if isinstance(documents, str) or not all(isinstance(d, str) for d in documents):
            raise TypeError("documents must be a list of strings")
        documents = list(documents)
        context = self._context()
        with self._turns.call():
            if self._session is not None:
                self._session.reset()
            scores, _ = score(context, query, documents)
        return ranking(scores, top_n, documents if return_documents else None, normalize)

    # --- state ----------------------------------------------------------------------------
    def save_state(self) -> LlamaState:
        with self._turns.call():
            return LlamaState(tuple(self._session.tokens), self._context().state_bytes(), self.seed)

    def load_state(self, state: LlamaState) -> None:
        with self._turns.call():
            self._context().load_state_bytes(state.state)
            self._session.tokens = list(state.tokens)
            self.seed = state.seed

    def reset(self) -> None:
        """Forget the cached prefix."""
        with self._turns.call():
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
        if self.projector is not None:
            self.projector.close()
        self._adapters.clear()
        self.model.close()

    def __enter__(self) -> Llama:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pyllama.Llama {self.model_path!r}>"
