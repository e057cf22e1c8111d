"""Downloading one model id (``owner/repo[:QUANT]``) from the Hugging Face hub, or any server that
speaks its API (``$MODEL_ENDPOINT``), into the hub cache of ``hf_cache``. The files are llama.cpp's
choice: the GGUF the quant names, every part of it when it is split, and its mmproj projector.
Standard library only; an interrupted file resumes with a Range request on the next try."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import DownloadError
from .hf_cache import (find_best_model, find_projector, is_commit, is_safe_subpath, repo_folder,
                       split_model_id, split_parts, write_ref)

TIMEOUT_SECONDS = 30.0
CHUNK_BYTES = 1 << 20
PROGRESS_SECONDS = 0.1  # the most often progress() is called while a file streams
RETRY_DELAYS = (2.0, 4.0)  # llama.cpp's back-off between the 3 tries of one file
DEFAULT_ENDPOINT = "https://huggingface.co/"
_TOKEN = re.compile(r"hf_[A-Za-z0-9]{34,253}")
_OID = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")  # git sha1, or LFS sha256

Progress = Callable[[str, int, int], None]


def model_endpoint() -> str:
    """``$MODEL_ENDPOINT``, else ``$HF_ENDPOINT``, else huggingface.co; always ending in ``/``."""
    endpoint = os.environ.get("MODEL_ENDPOINT") or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    return endpoint.rstrip("/") + "/"


@dataclass(frozen=True)
class RemoteFile:
    path: str
    oid: str  # "" when the listing gives none: the file then lives in the snapshot itself
    size: int | None


@dataclass(frozen=True)
class _Hub:
    endpoint: str
    token: str | None

    def open(self, url: str, headers: dict[str, str] | None = None) -> Any:
        """The response to a GET of ``url``; HTTP and network failures become DownloadError."""
        sent = {"User-Agent": f"pyllama/{__version__}", **(headers or {})}
        if self.token and _TOKEN.fullmatch(self.token):  # anything else would only earn a 401
            sent["Authorization"] = f"Bearer {self.token}"
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers=sent),  # noqa: S310
                                          timeout=TIMEOUT_SECONDS)
        except urllib.error.HTTPError as exc:
            raise _status_error(url, exc) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(f"could not reach {url}: {reason}", transient=True) from None

    def json(self, url: str) -> Any:
        with self.open(url, {"Accept": "application/json"}) as response:
            try:
                return json.load(response)
            except (ValueError, OSError, http.client.HTTPException):
                raise DownloadError(f"{url} did not answer with JSON") from None


def _status_error(url: str, exc: urllib.error.HTTPError) -> DownloadError:
    """The hub's own reason (its JSON ``error``) plus a hint at what to do about the status."""
    try:
        reason = json.loads(exc.read(4096)).get("error", "")
    except (ValueError, OSError, AttributeError, http.client.HTTPException):
        reason = ""
    finally:
        exc.close()
    hint = {401: "a gated or private repo needs HF_TOKEN", 403: "HF_TOKEN has no access to this repo",
            404: "no such repo or file"}.get(exc.code, "")
    detail = "; ".join(part for part in (str(reason), hint) if part)
    message = f"{url} answered HTTP {exc.code}" + (f" ({detail})" if detail else "")
    transient = exc.code >= 500 or exc.code in (416, 429)  # 416: a stale partial, see _stream
    return DownloadError(message, exc.code, transient=transient)


def _main_commit(hub: _Hub, repo: str, folder: Path) -> str:
    """The commit of the repo's ``main`` branch (else its first branch), recorded in ``refs/``."""
    url = f"{hub.endpoint}api/models/{repo}/refs"
    data = hub.json(url)
    branches = data.get("branches") if isinstance(data, dict) else None
    chosen: tuple[str, str] | None = None
    for branch in branches if isinstance(branches, list) else ():
        name = branch.get("name") if isinstance(branch, dict) else None
        commit = branch.get("targetCommit") if isinstance(branch, dict) else None
        if not (isinstance(name, str) and isinstance(commit, str) and is_commit(commit)
                and is_safe_subpath(name)):
            continue
        if name == "main":
            chosen = (name, commit)
            break
        chosen = chosen or (name, commit)
    if chosen is None:
        raise DownloadError(f"{url} lists no branch with a valid commit")
    write_ref(folder, *chosen)
    return chosen[1]


def _repo_files(hub: _Hub, repo: str, commit: str) -> list[RemoteFile]:
    url = f"{hub.endpoint}api/models/{repo}/tree/{commit}?recursive=true"
    items = hub.json(url)
    if not isinstance(items, list):
        raise DownloadError(f"{url} did not answer with a file list")
    files = []
    for item in items:
        if not isinstance(item, dict) or item.get("type") != "file":
            continue
        path, lfs = item.get("path"), item.get("lfs")
        source = lfs if isinstance(lfs, dict) else item  # an LFS file is named by its sha256
        oid, size = source.get("oid") or "", source.get("size")
        if not isinstance(path, str) or not is_safe_subpath(path) or not isinstance(oid, str):
            continue
        if oid and not _OID.fullmatch(oid):
            continue
        files.append(RemoteFile(path, oid.lower(), size if isinstance(size, int) else None))
    return files


def _plan(files: list[RemoteFile], repo: str, tag: str) -> tuple[str, list[RemoteFile]]:
    """The model's path and every file to fetch for it: its split parts, then its projector."""
    paths = [f.path for f in files]
    model = find_best_model(paths, tag)
    if model is None:
        ggufs = ", ".join(p for p in paths if p.endswith(".gguf")) or "no .gguf files"
        raise DownloadError(f"no GGUF file for quant {tag or 'Q4_K_M/Q8_0'} in repo {repo}: found {ggufs}")
    wanted = split_parts(paths, model)
    mmproj = find_projector(paths, model)
    by_path = {f.path: f for f in files}
    return model, [by_path[p] for p in wanted + ([mmproj] if mmproj else [])]


def _stream(hub: _Hub, url: str, part: Path, size: int | None, progress: Progress | None,
            cancelled: Callable[[], bool] | None) -> None:
    """Append the rest of ``url`` to ``part`` (what an earlier try left is kept)."""
    done = part.stat().st_size if part.exists() else 0
    if size is not None and done >= size:
        if done == size:  # complete, only the rename was missed
            if progress:
                progress(url, done, size)
            return
        done = 0  # more than the file holds: not ours to trust
    try:
        response = hub.open(url, {"Range": f"bytes={done}-"} if done else None)
    except DownloadError as exc:
        if exc.status == 416:  # the partial is not a prefix of this file: the next try starts over
            part.unlink(missing_ok=True)
        raise
    with response:
        if response.status != 206:
            done = 0  # the server sent the whole file
        length = response.headers.get("Content-Length", "")
        total = done + int(length) if length.isdigit() else size or 0
        if progress:
            progress(url, done, total)
        last = time.monotonic()
        with part.open("ab" if done else "wb") as out:
            while True:
                if cancelled and cancelled():
                    out.close()
                    part.unlink(missing_ok=True)
                    raise DownloadError("download cancelled")
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as exc:
                    raise DownloadError(f"download of {url} broke off after {done} bytes: {exc}",
                                        transient=True) from None
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if progress and time.monotonic() - last >= PROGRESS_SECONDS:
                    progress(url, done, total)
                    last = time.monotonic()
    if total and done != total:
        raise DownloadError(f"download of {url} ended after {done} of {total} bytes", transient=True)
    if progress:
        progress(url, done, total)


def _fetch(hub: _Hub, url: str, part: Path, size: int | None, progress: Progress | None,
           cancelled: Callable[[], bool] | None) -> None:
    """``_stream`` with llama.cpp's retries; each try resumes where the last one stopped."""
    for delay in (*RETRY_DELAYS, None):
        try:
            return _stream(hub, url, part, size, progress, cancelled)
        except DownloadError as exc:
            if not exc.transient or delay is None:
                raise
            time.sleep(delay)


def _link(blob: Path, entry: Path) -> None:
    """Point the snapshot entry at its blob with a relative symlink, as the hub cache does; where
    symlinks are not allowed (some Windows setups) the blob itself moves into the snapshot."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(os.path.relpath(blob, entry.parent), entry)
    except OSError:
        try:
            os.replace(blob, entry)
        except OSError:
            shutil.copyfile(blob, entry)


def download(model_id: str, progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
             endpoint: str | None = None, token: str | None = None, root: Path | None = None) -> Path:
    """Download ``model_id`` into the cache (files already there are not fetched again) and return
    the snapshot path of its GGUF (part 1 when split). ``progress(url, done, total)`` hears about each
    file at its start, every 0.1 s at most, and at its end; ``cancelled()`` is asked between chunks.
    Raises ValueError for a malformed id and DownloadError for everything else."""
    repo, tag = split_model_id(model_id)
    hub = _Hub((endpoint or model_endpoint()).rstrip("/") + "/",
               token if token is not None else os.environ.get("HF_TOKEN"))
    folder = repo_folder(repo, root)
    commit = _main_commit(hub, repo, folder)
    model, files = _plan(_repo_files(hub, repo, commit), repo, tag)
    snapshot = folder / "snapshots" / commit
    for file in files:
        entry = snapshot / file.path
        if entry.exists():
            continue
        if entry.is_symlink():  # its blob is gone: fetch it again
            entry.unlink()
        blob = folder / "blobs" / file.oid if file.oid else entry
        if not blob.exists():
            part = blob.with_name(blob.name + ".downloadInProgress")
            part.parent.mkdir(parents=True, exist_ok=True)
            url = f"{hub.endpoint}{repo}/resolve/{commit}/{urllib.parse.quote(file.path)}"
            _fetch(hub, url, part, file.size, progress, cancelled)
            os.replace(part, blob)
        if blob != entry:
            _link(blob, entry)
    return snapshot / model
