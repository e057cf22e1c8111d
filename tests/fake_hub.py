"""A Hugging Face endpoint on a loopback port, serving repositories from memory: the API calls
llama.cpp's downloader (and pyllama's, server/hf_download.py) makes, and the files themselves,
with HEAD and byte ranges. Point ``MODEL_ENDPOINT`` at ``hub.url``.

A repository's ``main`` branch is at ``commit_of(repo)``; ``hub.branches`` may list others. Every
request is kept, with its headers, in ``hub.requests``; ``hub.cut_next`` breaks off a transfer."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

CHUNK_BYTES = 1 << 16  # what the hub sends between two pauses of ``seconds_per_chunk``


def commit_of(repo: str) -> str:
    """The commit of ``repo``'s main branch: each repository has its own."""
    return hashlib.sha1(repo.encode()).hexdigest()


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # unquoted, without the query
    headers: Message  # .get() is case-insensitive: headers.get("Range"), headers.get("Authorization")


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]], seconds_per_chunk: float = 0.0) -> None:
        """``repos``: repository -> path -> content. ``seconds_per_chunk``: a pause after each 64 KiB
        of a file sent, for a download slow enough to watch or cancel."""
        self.repos, self.seconds_per_chunk = repos, seconds_per_chunk
        # repository -> branch -> commit, in the order the refs list them; a repository not here
        # has one branch, main at commit_of(repo). The files are the same at every commit.
        self.branches: dict[str, dict[str, str]] = {}
        self.requests: list[Request] = []  # every request, in order
        self._cuts: dict[tuple[str, str], int] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - the http.server name
                hub._answer(self, body=False)

            def do_GET(self) -> None:  # noqa: N802
                hub._answer(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def refs(self, repo: str) -> dict[str, str]:
        """Branch -> commit of ``repo``."""
        return self.branches.get(repo) or {"main": commit_of(repo)}

    def resolves(self) -> list[Request]:
        """The requests for files (``/{repo}/resolve/{commit}/{path}``), in order."""
        return [request for request in self.requests if "/resolve/" in request.path]

    def cut_next(self, repo: str, path: str, after_bytes: int) -> None:
        """The next GET of ``path`` in ``repo`` sends ``after_bytes`` bytes of the body, fewer than
        its Content-Length, and closes the connection; later ones send it whole."""
        self._cuts[(repo, path)] = after_bytes

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = urlsplit(handler.path).path
        self.requests.append(Request(handler.command, unquote(path), handler.headers))
        parts = [unquote(part) for part in path.strip("/").split("/")]
        api = parts[:2] == ["api", "models"]
        repo = "/".join(parts[2:4] if api else parts[:2])
        rest = parts[4:] if api else parts[2:]
        files = self.repos.get(repo)
        if files is None:
            return _json(handler, {"error": "Repository not found"}, body, status=404)
        refs = self.refs(repo)
        if api and rest == ["refs"]:
            branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": commit}
                        for name, commit in refs.items()]
            return _json(handler, {"branches": branches, "tags": []}, body)
        if api and len(rest) == 2 and rest[0] == "tree" and rest[1] in refs.values():
            return _json(handler, [_entry(name, content) for name, content in files.items()], body)
        name = "/".join(rest[2:])
        if not api and rest[:1] == ["resolve"] and rest[1:2] and rest[1] in refs.values() and name in files:
            cut = self._cuts.pop((repo, name), None) if body else None
            return self._file(handler, files[name], body, cut)
        _json(handler, {"error": "Entry not found"}, body, status=404)

    def _file(self, handler: BaseHTTPRequestHandler, content: bytes, body: bool, cut: int | None) -> None:
        start = 0
        asked = handler.headers.get("Range", "")
        if asked.startswith("bytes=") and asked[6:].split("-")[0].isdigit():
            start = int(asked[6:].split("-")[0])
        handler.send_response(206 if start else 200)
        handler.send_header("Content-Length", str(len(content) - start))
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        handler.end_headers()
        if not body:
            return
        stop = len(content) if cut is None else min(len(content), start + cut)
        handler.close_connection = handler.close_connection or cut is not None
        try:
            for offset in range(start, stop, CHUNK_BYTES):
                handler.wfile.write(content[offset:min(offset + CHUNK_BYTES, stop)])
                handler.wfile.flush()
                time.sleep(self.seconds_per_chunk)
        except (BrokenPipeError, ConnectionResetError):  # the client cancelled
            pass


def _entry(name: str, content: bytes) -> dict:
    """A file of the tree listing: a GGUF is stored in LFS (named by its sha256), anything else in
    git (named by its git blob id), as a hub repository's .gitattributes has it."""
    git_oid = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    item: dict = {"type": "file", "path": name, "oid": git_oid, "size": len(content)}
    if name.endswith(".gguf"):
        item["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
    return item


def _json(handler: BaseHTTPRequestHandler, value, body: bool, status: int = 200) -> None:
    data = json.dumps(value).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if body:
        handler.wfile.write(data)
