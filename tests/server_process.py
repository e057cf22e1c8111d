"""A real pyllama server on a loopback port, in its own process, for the server tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerURL(str):
    """The server's base URL, knowing the server's process id."""

    pid: int
    process: subprocess.Popen


@contextmanager
def running_server(model, *args: str, timeout: float = 60, log: Path | None = None):
    """``model=None`` starts it without --model (the demo model's fallback). Yields the base URL.
    ``log``: the server's output goes to this file (else to a pipe read only if it fails to start)."""
    port = free_port()
    model_flag = [] if model is None else ["--model", str(model)]
    command = [sys.executable, "-m", "pyllama.server", *model_flag, "--port", str(port), *args]
    output = open(log, "w") if log is not None else subprocess.PIPE  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
    base = ServerURL(f"http://127.0.0.1:{port}")
    base.pid, base.process = process.pid, process
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {log.read_text() if log else process.stdout.read()}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("the server did not start") from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        if log is not None:
            output.close()
