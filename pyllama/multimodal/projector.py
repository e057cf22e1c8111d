"""Projector: a multimodal projector (``mmproj`` GGUF) that turns images or audio into embeddings
a Model reads, through llama.cpp's libmtmd.

    with Model("model.gguf") as model, Projector(model, "mmproj.gguf") as projector:
        image = projector.load("cat.png")
        prompt = projector.tokenize(["<start_of_turn>user\\n", image, "What is this?<end_of_turn>\\n"])
        with Context(model, n_ctx=1024) as context:
            prompt.evaluate(context)        # logits of the last position are now current

A projector belongs to the model it was made for (its embedding width must match) and keeps
that model's memory alive; closing it frees libmtmd's context.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Union

from .._binding import checks, ffi, lib
from .._binding.native import NativeObject, owned
from ..errors import MediaError, ModelLoadError
from ..gguf_check import check_gguf
from ..model import Model
from .media import MAX_IMAGE_PIXELS, Media, decode
from .prompt import KINDS, MediaChunk, MediaPrompt

MediaSource = Union[bytes, bytearray, memoryview, str, os.PathLike]


def default_marker() -> str:
    """The text libmtmd reads as "media goes here" (``<__media__>``)."""
    return ffi.string(lib.mtmd_default_marker()).decode()


class Projector(NativeObject):
    """libmtmd's context for ``model`` and an mmproj file.

    ``use_gpu`` runs the encoder on the GPU when the build has one; ``n_threads`` is for the CPU.
    ``max_image_pixels`` bounds what :meth:`load` and :meth:`image` accept. ``image_min_tokens``
    and ``image_max_tokens`` bound the tokens per image of dynamic-resolution models.
    """

    def __init__(self, model: Model, path: str | os.PathLike[str], *, use_gpu: bool = True,
                 n_threads: int | None = None, max_image_pixels: int = MAX_IMAGE_PIXELS,
                 image_min_tokens: int | None = None, image_max_tokens: int | None = None,
                 warmup: bool = False) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"projector file not found: {self.path}")
        check_gguf(self.path)
        params = lib.mtmd_context_params_default()
        params.use_gpu, params.print_timings, params.warmup = use_gpu, False, warmup
        if n_threads:
            params.n_threads = n_threads
        if image_min_tokens is not None:
            params.image_min_tokens = image_min_tokens
        if image_max_tokens is not None:
            params.image_max_tokens = image_max_tokens
        model_handle = model._ptr
        checks.before_call()
        pointer = lib.pyllama_mtmd_init(os.fsencode(self.path), model_handle, params)
        checks.check_pointer(pointer, ModelLoadError, f"{self.path}: could not load the projector for "
                             f"{model.path.name}", guarded=True)
        self._handle = owned(pointer, lib.mtmd_free, model_handle)
        self.model = model
        self.max_image_pixels = max_image_pixels
        self._lock = threading.Lock()  # libmtmd's encoder keeps its output in the context: one encode at a time

    # --- what it takes ----------------------------------------------------------------------
    @property
    def supports_vision(self) -> bool:
        return lib.mtmd_support_vision(self._ptr)

    @property
    def supports_audio(self) -> bool:
        return lib.mtmd_support_audio(self._ptr)

    @property
    def audio_sample_rate(self) -> int | None:
        """Samples per second that :meth:`audio` expects (16000 for Whisper), None without audio."""
        rate = lib.mtmd_get_audio_sample_rate(self._ptr)
        return rate if rate > 0 else None

    @property
    def uses_mrope(self) -> bool:
        """Whether media positions are 2-D (M-RoPE: Qwen-VL): a chunk then fills fewer positions
        than it has tokens."""
        return lib.mtmd_decode_use_mrope(self._ptr)

    # --- media ------------------------------------------------------------------------------
    def load(self, source: MediaSource, *, what: str | None = None) -> Media:
        """An image or audio clip from a file's path or its bytes (png, jpeg, gif, bmp, ...;
        wav, mp3, flac). ``what`` names it in error messages."""
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"media file not found: {path}")
            data, what = path.read_bytes(), what or str(path)
        elif isinstance(source, (bytes, bytearray, memoryview)):
            data, what = bytes(source), what or "the media"
        else:
            raise TypeError(f"media comes from a path or bytes, not {type(source).__name__}")
        return decode(self._ptr, data, self.max_image_pixels, what)

    def image(self, pixels) -> Media:
        """An image from a numpy array (see :meth:`Media.from_array`)."""
        return Media.from_array(pixels, max_pixels=self.max_image_pixels)

    def audio(self, samples) -> Media:
        """An audio clip from mono float samples at :attr:`audio_sample_rate`."""
        if not self.supports_audio:
            raise MediaError("this projector takes no audio")
        return Media.from_audio(samples)

    # --- prompts ----------------------------------------------------------------------------
    def tokenize(self, parts: Sequence[str | Media], *, add_special: bool = True,
                 parse_special: bool = True) -> MediaPrompt:
        """Text and media, in order, as a :class:`MediaPrompt`. Each media part becomes the
        model's own markers around its tokens (``<start_of_image>`` ... for Gemma 3); text is
        never searched for media markers. ``add_special`` adds BOS where the model wants one."""
        if isinstance(parts, (str, Media)):
            parts = [parts]
        keep, pointers = [], []
        for i, part in enumerate(parts):
            c_part = ffi.new("mtmd_input_part *")
            if isinstance(part, str):
                raw = part.encode("utf-8")
                text = ffi.new("mtmd_input_text *")
                keep.append(ffi.new("char[]", raw))
                text.text, text.text_len, text.parse_special = keep[-1], len(raw), parse_special
                keep.append(text)
                c_part.text = text
            elif isinstance(part, Media):
                if part.is_audio and not self.supports_audio or not part.is_audio and not self.supports_vision:
                    kind = "audio" if part.is_audio else "images"
                    raise MediaError(f"parts[{i}]: this projector ({self.path.name}) takes no {kind}")
                c_part.bitmap = part._ptr
                keep.append(part)
            else:
                raise TypeError(f"parts[{i}] must be text or a Media, not {type(part).__name__}")
            keep.append(c_part)
            pointers.append(c_part)
        chunks = owned(lib.mtmd_input_chunks_init(), lib.mtmd_input_chunks_free)
        checks.before_call()
        code = lib.pyllama_mtmd_tokenize(self._ptr, chunks, ffi.new("mtmd_input_part *[]", pointers), len(pointers),
                                         add_special)
        if code != 0:
            raise checks.failure(MediaError, "the prompt's media could not be prepared", guarded=code < 0,
                                 default=f"libmtmd's tokenizer failed with code {code}")
        return self._prompt_from(chunks)

    def _prompt_from(self, chunks) -> MediaPrompt:
        tokens: list[int] = []
        media: dict[int, MediaChunk] = {}
        seen: dict[str, int] = {}
        for i in range(lib.mtmd_input_chunks_size(chunks)):
            chunk = lib.mtmd_input_chunks_get(chunks, i)
            if lib.mtmd_input_chunk_get_type(chunk) not in KINDS:
                count = ffi.new("size_t *")
                pointer = lib.mtmd_input_chunk_get_tokens_text(chunk, count)
                tokens += ffi.unpack(pointer, count[0]) if count[0] else []
                continue
            media_id = ffi.string(lib.mtmd_input_chunk_get_id(chunk)).decode("utf-8", "replace")
            ordinal = seen[media_id] = seen.get(media_id, -1) + 1
            item = MediaChunk(self, chunk, ordinal)
            media[len(tokens)] = item
            tokens += item.placeholders
        return MediaPrompt(tokens, media)

    def __repr__(self) -> str:
        if self.closed:
            return "<pyllama.Projector closed>"
        kinds = "+".join(k for k, on in (("vision", self.supports_vision), ("audio", self.supports_audio)) if on)
        return f"<pyllama.Projector {str(self.path)!r} {kinds}>"
