"""Downloading an image a chat request names by an http(s) URL: only when the server was started
with ``--allow_remote_media`` (off by default, so a request cannot make the server fetch
arbitrary URLs), bounded in bytes and in time."""

from __future__ import annotations

import urllib.error
import urllib.request

from .._version import __version__
from ..errors import MediaError, MediaTooLargeError

TIMEOUT_SECONDS = 10.0


def fetch_media(url: str, max_bytes: int | None) -> bytes:
    """The body of ``url``; at most ``max_bytes`` of it, else MediaTooLargeError."""
    request = urllib.request.Request(url, headers={"User-Agent": f"pyllama/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - the operator's choice
            declared = response.headers.get("Content-Length", "")
            if max_bytes is not None and declared.isdigit() and int(declared) > max_bytes:
                raise MediaTooLargeError(f"{url} has {declared} bytes, more than the limit of {max_bytes} bytes "
                                         "(media_max_bytes)")
            data = response.read(-1 if max_bytes is None else max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise MediaError(f"could not download {url}: {getattr(exc, 'reason', exc)}") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise MediaTooLargeError(f"{url} is larger than the limit of {max_bytes} bytes (media_max_bytes)")
    return data
