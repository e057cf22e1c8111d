"""A prompt with images or audio in it, laid out by KV position so prefix reuse keeps working.

``MediaPrompt.tokens`` has one entry per position: text token ids, and at the positions a
media chunk fills, negative placeholders derived from the media's content (its sha256 id), so
two prompts share a prefix exactly when their text and their media agree. ``media`` maps the
position where each chunk starts to the :class:`MediaChunk` that evaluates it. Code that reuses
a cached prefix cuts it at a chunk's start, never inside (:func:`reusable_prefix`): an image
is evaluated whole or not at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .._binding import checks, ffi, lib
from .._binding.native import NativeObject, owned
from ..errors import MediaError

if TYPE_CHECKING:
    from ..context import Context

KINDS = {lib.MTMD_INPUT_CHUNK_TYPE_IMAGE: "image", lib.MTMD_INPUT_CHUNK_TYPE_AUDIO: "audio"}


class Encoder(Protocol):
    """What a chunk uses of the :class:`~pyllama.Projector` that made it: libmtmd's context and
    the lock around its encoder. Named by shape, because projector.py builds on this module."""

    _lock: threading.Lock

    @property
    def _ptr(self) -> Any: ...


def placeholders(media_id: str, ordinal: int, n_pos: int) -> list[int]:
    """Negative int32 stand-ins for the positions of a media chunk, one per position, from the
    media's id and which chunk of it this is (a sliced image has several)."""
    seed = hashlib.sha256(f"{media_id}|{ordinal}|{n_pos}".encode()).digest()
    values = np.random.default_rng(np.frombuffer(seed, dtype=np.uint32)).integers(1, 2**31, n_pos)
    return (-values).tolist()


class MediaChunk(NativeObject):
    """The tokens of one image (or one slice of it) or audio clip: ``n_tokens`` embeddings that
    fill ``n_pos`` KV positions (fewer for M-RoPE models). Evaluated by its projector."""

    def __init__(self, projector: Encoder, chunk: Any, ordinal: int) -> None:
        copy = lib.mtmd_input_chunk_copy(chunk)
        if copy == ffi.NULL:
            raise MemoryError("could not copy a media chunk")
        self._handle = owned(copy, lib.mtmd_input_chunk_free, projector._ptr)
        self.projector = projector
        self.kind = KINDS[lib.mtmd_input_chunk_get_type(copy)]
        self.n_tokens = lib.mtmd_input_chunk_get_n_tokens(copy)
        self.n_pos = lib.mtmd_input_chunk_get_n_pos(copy)
        id_pointer = lib.mtmd_input_chunk_get_id(copy)
        self.id = "" if id_pointer == ffi.NULL else ffi.string(id_pointer).decode("utf-8", "replace")
        self.placeholders = placeholders(self.id, ordinal, self.n_pos)

    def evaluate(self, context: Context, pos: int, seq_id: int = 0) -> int:
        """Encode the media and decode its embeddings into sequence ``seq_id`` from position
        ``pos``; returns the position after it. No logits come out of it."""
        projector = self.projector
        with projector._lock, context._lock:
            mtmd, chunk, llama_context = projector._ptr, self._ptr, context._ptr
            checks.before_call()
            if lib.pyllama_mtmd_encode_chunk(mtmd, chunk) != 0:
                raise checks.failure(MediaError, f"the projector could not encode this {self.kind}", guarded=True)
            end = ffi.new("llama_pos *", pos)
            code = lib.pyllama_mtmd_decode_chunk(mtmd, llama_context, chunk, lib.mtmd_get_output_embd(mtmd), pos,
                                                 seq_id, context.n_batch, end)
            if context._abort is not None:
                context._abort.reraise()
            checks.check_decode(code, f"decoding the {self.kind}'s embeddings")
            return int(end[0])

    def __repr__(self) -> str:
        return f"<pyllama.MediaChunk {self.kind}, {self.n_tokens} tokens at {self.n_pos} positions>"


@dataclasses.dataclass(frozen=True)
class MediaPrompt:
    """Tokens by position (media as placeholders) and the media chunks, by start position."""

    tokens: list[int]
    media: Mapping[int, MediaChunk]

    def __len__(self) -> int:
        return len(self.tokens)

    def evaluate(self, context: Context, start: int = 0, seq_id: int = 0) -> None:
        """Evaluate positions ``start``.. into sequence ``seq_id`` (the KV holds those before
        ``start``); the logits of the last position are then current. See :func:`evaluate`."""
        evaluate(context, self.tokens, self.media, start, seq_id)


def media_spans(media: Mapping[int, MediaChunk]) -> list[tuple[int, int]]:
    return sorted((start, start + chunk.n_pos) for start, chunk in media.items())


def reusable_prefix(cached: Sequence[int], prompt: Sequence[int], media: Mapping[int, MediaChunk]) -> int:
    """How much of ``cached`` (what a KV sequence holds) a new ``prompt`` can keep: their common
    prefix, less the last position (it runs again for fresh logits), cut back to the start of
    a media chunk it would end inside."""
    n, limit = 0, min(len(cached), len(prompt))
    while n < limit and cached[n] == prompt[n]:
        n += 1
    n = min(n, len(prompt) - 1)
    for start, end in media_spans(media):
        if start < n < end:
            return start
    return n


def evaluate(context: Context, tokens: Sequence[int], media: Mapping[int, MediaChunk], start: int,
             seq_id: int = 0) -> None:
    """Evaluate positions ``start``.. of a prompt: text in batches of up to ``n_batch`` tokens,
    each media chunk through its projector. The prompt must end with text (for logits)."""
    from ..batch import Batch

    spans = [(s, e) for s, e in media_spans(media) if e > start]
    if spans and spans[-1][1] >= len(tokens):
        raise MediaError("the prompt ends with an image or audio clip; put text after it")
    pos, n_batch = start, context.n_batch
    for media_start, media_end in spans + [(len(tokens), len(tokens))]:
        while pos < media_start:
            end = min(media_start, pos + n_batch)
            context.decode(Batch.of(tokens[pos:end], start_pos=pos, seq_id=seq_id,
                                    output="last" if end == len(tokens) else False))
            pos = end
        if media_start < len(tokens):
            media[media_start].evaluate(context, media_start, seq_id)
            pos = media_end


def text_ahead(pending: Sequence[int], pos: int, media: Mapping[int, MediaChunk]) -> int:
    """How many of ``pending`` (a prompt's positions from ``pos`` on) are text before its next
    media chunk."""
    return min([start - pos for start in media if start >= pos] + [len(pending)])
