"""``python -m pyllama.server --model model.gguf [-c 4096 -ngl 37 ...]`` (``--help`` lists every flag)."""

from __future__ import annotations

import errno
import logging
import socket
import sys
from collections.abc import Sequence


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host`` (IPv4 or IPv6 address, or a name)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main(argv: Sequence[str] | None = None, prog: str = "python -m pyllama.server") -> int:
    """``prog`` names the command in messages (``pyllama serve`` runs this too)."""
    from .._extras import require
    from ..errors import MissingExtraError

    try:
        require(("fastapi", "uvicorn", "fastapi_offline"), "server")
    except MissingExtraError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    import uvicorn

    from .app import create_app
    from .settings import parse
    from .shutdown import GracefulServer, say

    parsed = parse(argv, prog)
    models = parsed if isinstance(parsed, list) else [parsed]
    settings = models[0]
    if settings.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        sockets = [_listen(host, settings.port) for host in settings.hosts]
    except OSError as exc:
        hint = "; choose another with --port" if exc.errno == errno.EADDRINUSE else ""
        print(f"{prog}: cannot listen on {', '.join(settings.hosts)} port {settings.port}: {exc.strerror or exc}{hint}",
              file=sys.stderr)
        return 1
    try:
        app = create_app(parsed)
    except KeyboardInterrupt:  # Ctrl-C while the model loads: nothing runs yet, nothing to drain
        print(f"{prog}: interrupted while loading the model", file=sys.stderr)
        return 130
    pool = app.state.pool
    failed = [p for p in pool.all if p.failure is not None]
    for pooled in failed:
        print(f"{prog}: cannot load the model '{pooled.name}' ({pooled.settings.model}): {pooled.failure}",
              file=sys.stderr, flush=True)
    if failed and len(failed) == len(pool.all) and not pool.router:  # nothing to serve
        return 1
    scheme = "https" if settings.ssl_certfile else "http"
    names = ", ".join(f"{p.name} ({p.settings.n_parallel} slots, n_ctx {p.settings.n_ctx})" if p.served else
                      f"{p.name} ({'failed' if p.failure else 'on demand'})" for p in pool.all)
    addresses = ", ".join(f"{scheme}://{'[' + h + ']' if ':' in h else h}:{settings.port}" for h in settings.hosts)
    print(f"pyllama server on {addresses}: {names}", flush=True)
    for pooled in pool.loaded():  # a base model: say which format stands in for its missing template
        if pooled.served.template.fallback is not None:
            print(f"{pooled.name}: {pooled.served.template.fallback.note}; the chat page starts in text mode",
                  flush=True)
    config = uvicorn.Config(app, ssl_keyfile=settings.ssl_keyfile, ssl_certfile=settings.ssl_certfile,
                            log_level="info" if settings.verbose else "warning",
                            access_log=settings.verbose,
                            http="h11")  # httptools (pulled in by ray) lowercases header names; clients compare them as sent
    server = GracefulServer(config, app.state.drain, pool.engines, settings.stop_timeout)
    server.run(sockets=sockets)
    if app.state.drain.draining:
        say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
