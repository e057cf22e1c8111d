"""Chat content parts that carry media (OpenAI's ``image_url`` and ``input_audio``), read into
:class:`~pyllama.multimodal.Media` for a projector.

Where the bytes may come from is the caller's policy: a ``data:`` URL always; a local path (or
``file://`` URL) only with ``local_files`` (the Python API, never the server), or a ``file://``
URL through a ``read_file`` function the caller supplies (the server: inside ``--media-path``);
an ``http(s)`` URL only through a ``fetch`` function the caller supplies (the server, when its
operator turns remote media on). Every source is bounded by ``max_bytes``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..errors import MediaError, MediaTooLargeError

if TYPE_CHECKING:
    from ..multimodal import Media, MediaPrompt, Projector

MEDIA_PARTS = ("image_url", "input_audio")
AUDIO_FORMATS = ("wav", "mp3", "flac")
_DATA_URL = re.compile(r"data:(?P<type>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)", re.S)

Fetch = Callable[[str, Optional[int]], bytes]  # (url, max_bytes) -> the body


def _too_large(where: str, size: int, limit: int, what: str) -> MediaTooLargeError:
    return MediaTooLargeError(f"{where}: the {what} has {size} bytes, more than the limit of {limit} bytes "
                              "(media_max_bytes)")


def base64_bytes(text: str, where: str, what: str = "data", limit: int | None = None) -> bytes:
    """Decoded base64, refused (before decoding) when larger than ``limit``."""
    compact = re.sub(r"\s+", "", text)
    size = len(compact) * 3 // 4 - compact[-2:].count("=")  # what it decodes to, before decoding it
    if limit is not None and size > limit:
        raise _too_large(where, size, limit, what)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError(f"{where}: the {what} is not valid base64") from None


def data_url_bytes(url: str, where: str, limit: int | None = None) -> bytes:
    """The bytes of a ``data:[type][;base64],...`` URL."""
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise MediaError(f"{where}: not a data URL (data:image/png;base64,...)")
    if ";base64" in match["params"].lower():
        return base64_bytes(match["data"], where, "image", limit)
    data = urllib.parse.unquote_to_bytes(match["data"])
    if limit is not None and len(data) > limit:
        raise _too_large(where, len(data), limit, "image")
    return data


class MediaReader:
    """Reads media parts for ``projector`` under a policy (see the module's docstring)."""

    def __init__(self, projector: Projector, *, local_files: bool = False, fetch: Fetch | None = None,
                 read_file: Fetch | None = None, max_bytes: int | None = None) -> None:
        self.projector = projector
        self.local_files = local_files
        self.fetch = fetch
        self.read_file = read_file
        self.max_bytes = max_bytes

    def read(self, part: Mapping[str, Any], where: str) -> Media:
        kind = part.get("type")
        if kind == "image_url":
            if not self.projector.supports_vision:
                raise MediaError(f"{where}: this model's projector takes no images")
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            if not isinstance(url, str) or not url:
                raise MediaError(f"{where}: image_url needs a url (a data URL{', a path' if self.local_files else ''}"
                                 f"{' or an http(s) URL' if self.fetch else ''})")
            return self.projector.load(self._image_bytes(url, where), what=f"{where} (image)")
        if kind == "input_audio":
            if not self.projector.supports_audio:
                raise MediaError(f"{where}: this model's projector takes no audio")
            audio = part.get("input_audio")
            if not isinstance(audio, Mapping) or not isinstance(audio.get("data"), str):
                raise MediaError(f"{where}: input_audio needs base64 data and a format")
            if str(audio.get("format", "")).lower() not in AUDIO_FORMATS:
                raise MediaError(f"{where}: input_audio format must be one of {', '.join(AUDIO_FORMATS)}, "
                                 f"not {audio.get('format')!r}")
            data = base64_bytes(audio["data"], where, "audio", self.max_bytes)
            return self.projector.load(data, what=f"{where} (audio)")
        raise MediaError(f"{where}: {kind!r} is not a media part ({', '.join(MEDIA_PARTS)})")

    def _image_bytes(self, url: str, where: str) -> bytes:
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "data":
            return data_url_bytes(url, where, self.max_bytes)
        if scheme in ("http", "https"):
            if self.fetch is None:
                raise MediaError(f"{where}: remote image URLs are turned off here; send the image as a data URL "
                                 "(data:image/png;base64,...)")
            return self.fetch(url, self.max_bytes)
        if scheme == "file" and self.read_file is not None:
            return self.read_file(url, self.max_bytes)
        if not self.local_files:
            raise MediaError(f"{where}: an image must be a data URL (data:image/png;base64,...)")
        path = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path) if scheme == "file" else url)
        if not path.is_file():
            raise MediaError(f"{where}: image file not found: {path}")
        size = os.path.getsize(path)
        if self.max_bytes is not None and size > self.max_bytes:
            raise _too_large(where, size, self.max_bytes, "image")
        return path.read_bytes()


class MediaParts:
    """The media parts of one chat request, collected while its messages are normalized: each
    becomes a marker in the text the template renders, unique to the request so that no text a
    user typed can pass for one, and the rendered prompt is split on it again."""

    def __init__(self) -> None:
        self.marker = f"<__media_{secrets.token_hex(8)}__>"
        self.parts: list[tuple[Mapping[str, Any], str]] = []

    def add(self, part: Mapping[str, Any], where: str) -> str:
        self.parts.append((part, where))
        return self.marker

    def tokenize(self, prompt: str, reader: MediaReader) -> MediaPrompt:
        """The rendered ``prompt`` with each marker replaced by its media's tokens."""
        pieces = prompt.split(self.marker)
        if len(pieces) != len(self.parts) + 1:
            raise ValueError(f"the chat template placed {len(pieces) - 1} of the request's {len(self.parts)} "
                             "images/audio clips; it must keep each content part once")
        media = [reader.read(part, where) for part, where in self.parts]
        try:
            parts: list[str | Media] = [pieces[0]]
            for item, text in zip(media, pieces[1:]):
                parts += [item, text]
            return reader.projector.tokenize([p for p in parts if p != ""], add_special=True, parse_special=True)
        finally:
            for item in media:
                item.close()
