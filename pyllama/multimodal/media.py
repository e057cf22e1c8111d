"""Media: one image (RGB pixels) or audio clip (mono float samples) a Projector can tokenize.

From numpy arrays here; from the bytes of a file (png, jpeg, gif, bmp, ...; wav, mp3, flac)
through :meth:`Projector.load <pyllama.multimodal.Projector.load>`, which needs the projector
(audio is resampled to its rate). An image's size is read from its header before anything is
decoded, so a small file that claims to be huge is refused instead of filling the memory.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .._binding import checks, ffi, lib
from .._binding.native import NativeObject, owned
from ..errors import MediaError, MediaTooLargeError

MAX_IMAGE_PIXELS = 1 << 26  # 64 megapixels (8192 x 8192); projectors resize to well under 1 megapixel anyway
READABLE = "images: png, jpeg, gif, bmp, tga, psd, hdr, pnm; audio: wav, mp3, flac"


def check_image_size(width: int, height: int, max_pixels: int, what: str = "the image") -> None:
    if width < 1 or height < 1:
        raise MediaError(f"{what} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise MediaTooLargeError(f"{what} is {width}x{height} = {width * height} pixels, more than the limit of "
                         f"{max_pixels} pixels (max_image_pixels)")


class Media(NativeObject):
    """An image or audio clip held by libmtmd (``mtmd_bitmap``); its ``id`` (a sha256 of the
    content) tells equal inputs apart from different ones when prompts are reused."""

    def __init__(self, pointer: Any) -> None:
        """Takes ownership of an ``mtmd_bitmap *``; use :meth:`from_array`, :meth:`from_audio`
        or ``Projector.load`` to make one."""
        self._handle = owned(pointer, lib.mtmd_bitmap_free)

    @classmethod
    def from_array(cls, pixels: np.ndarray, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Media:
        """An image from uint8 pixels shaped (height, width, 3) RGB, (height, width, 4) RGBA (alpha
        is dropped) or (height, width) gray."""
        array = np.asarray(pixels)
        if array.dtype != np.uint8:
            raise MediaError(f"image pixels must be uint8 (0..255), got {array.dtype}")
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise MediaError(f"an image array is (height, width, 3) RGB, (height, width, 4) RGBA or "
                             f"(height, width) gray; got shape {array.shape}")
        height, width = array.shape[:2]
        check_image_size(width, height, max_pixels)
        rgb = np.ascontiguousarray(array[:, :, :3])
        checks.before_call()
        pointer = lib.pyllama_mtmd_bitmap_init(width, height, ffi.from_buffer("unsigned char[]", rgb))
        media = cls(checks.check_pointer(pointer, MediaError, f"could not hold a {width}x{height} image",
                                         guarded=True))
        media._set_id(hashlib.sha256(b"%dx%d:" % (width, height) + rgb.tobytes()).hexdigest())
        return media

    @classmethod
    def from_audio(cls, samples: np.ndarray) -> Media:
        """An audio clip from mono PCM samples in [-1, 1] at the projector's
        ``audio_sample_rate``."""
        array = np.ascontiguousarray(np.asarray(samples, dtype=np.float32))
        if array.ndim != 1 or array.size == 0:
            raise MediaError(f"audio samples are a non-empty 1-D array (mono), got shape {array.shape}")
        if not np.isfinite(array).all():
            raise MediaError("audio samples must be finite numbers (no NaN or infinity)")
        checks.before_call()
        pointer = lib.pyllama_mtmd_bitmap_init_from_audio(array.size, ffi.from_buffer("float[]", array))
        media = cls(checks.check_pointer(pointer, MediaError, f"could not hold {array.size} audio samples",
                                         guarded=True))
        media._set_id(hashlib.sha256(b"audio:" + array.tobytes()).hexdigest())
        return media

    def _set_id(self, value: str) -> None:
        lib.mtmd_bitmap_set_id(self._ptr, value.encode())

    @property
    def id(self) -> str:
        pointer = lib.mtmd_bitmap_get_id(self._ptr)
        return "" if pointer == ffi.NULL else ffi.string(pointer).decode("utf-8", "replace")

    @property
    def is_audio(self) -> bool:
        return lib.mtmd_bitmap_is_audio(self._ptr)

    @property
    def width(self) -> int:
        """Pixels across (for audio, the number of samples)."""
        return lib.mtmd_bitmap_get_nx(self._ptr)

    @property
    def height(self) -> int:
        """Pixels down (1 for audio)."""
        return lib.mtmd_bitmap_get_ny(self._ptr)

    @property
    def n_bytes(self) -> int:
        return lib.mtmd_bitmap_get_n_bytes(self._ptr)

    def __repr__(self) -> str:
        if self.closed:
            return "<pyllama.Media closed>"
        return (f"<pyllama.Media audio, {self.width} samples>" if self.is_audio
                else f"<pyllama.Media image {self.width}x{self.height}>")


def decode(projector_pointer: Any, data: bytes, max_pixels: int, what: str) -> Media:
    """A Media from the bytes of an image or audio file, checked before it is decoded."""
    if not data:
        raise MediaError(f"{what} is empty (0 bytes)")
    size = ffi.new("int[2]")
    if lib.pyllama_image_size(data, len(data), size, size + 1):
        check_image_size(size[0], size[1], max_pixels, what)
    elif ffi.string(lib.pyllama_last_failure()) == b"too large":  # an image header stb_image refuses
        raise MediaTooLargeError(f"{what} is an image too large to decode (more than 2^30 bytes of pixels; the limit "
                                 f"is {max_pixels} pixels, max_image_pixels)")
    checks.before_call()
    pointer = lib.pyllama_mtmd_bitmap_from_buf(projector_pointer, data, len(data))
    if pointer == ffi.NULL:
        raise checks.failure(MediaError, f"{what} could not be read ({READABLE})", guarded=True,
                             default="not a file of these kinds, or a damaged one")
    return Media(pointer)
