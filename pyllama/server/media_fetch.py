"""Where the server reads an image a chat request names by URL. An http(s) URL is downloaded only
when the server was started with ``--allow_remote_media`` (off by default, so a request cannot
make the server fetch arbitrary URLs), bounded in bytes and in time. A ``file://NAME`` URL is
read only from inside ``--media-path`` (llama-server's rules: NAME is relative to that folder,
with no ``..`` and none of the characters a file name may not hold)."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path

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


# llama.cpp's fs_validate_filename(allow_subdirs=true): control characters, their look-alikes and
# the characters Windows forbids; a leading or trailing space, a trailing dot, any "..".
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\uff0e\u2215\u2216\ud800-\udfff\ufffd\ufeff:*?\"<>|]")


def read_media_file(folder: str | None, url: str, max_bytes: int | None) -> bytes:
    """The file a ``file://NAME`` URL names inside ``folder`` (None: file URLs are refused)."""
    if folder is None:
        raise MediaError("file:// URLs are not allowed unless the server is started with --media-path")
    name = url[len("file://"):]
    if (not name or len(name) > 255 or _FORBIDDEN.search(name) or ".." in name or name[0] == " "
            or name[-1] in " ." or name == "."):
        raise MediaError(f"file path is not allowed: {name}")
    path = Path(folder, name.lstrip("/"))  # NAME is relative to the folder even when it starts with /
    try:
        size = os.path.getsize(path)
        if max_bytes is not None and size > max_bytes:
            raise MediaTooLargeError(f"{url} has {size} bytes, more than the limit of {max_bytes} bytes "
                                     "(media_max_bytes)")
        return path.read_bytes()
    except OSError:
        raise MediaError(f"file does not exist or cannot be opened: {name}") from None
