"""Soak: many clients on one server for minutes, some of them leaving midway.

    python bench/soak.py [--model PATH] [--clients 8] [--minutes 10] [--warmup 60] [-- SERVER FLAGS...]

Starts ``python -m pyllama.server`` (default: the demo model, ``-np 4 -c 4096``, with
``--metrics --verbose`` so its log says everything) and runs N clients, each sending in turn a
chat, a streamed chat, a completion and a streamed completion; a quarter of the streams are
abandoned by their client after a few chunks (the socket closed without reading on). At the
end it prints the requests sent, the responses by status, the client-side failures, the
server's RSS at the start, after the warm-up and at the end, the busy slots and queued
requests once the clients have stopped (both must be back to 0), and the server's log lines
at WARNING or above, with the first few of them. Last, a SIGTERM in the middle of a long
stream: how the stream ended, and how long the process took to exit with what status
(``--stop-timeout``, default 10 s, is the drain time). Exit status 1 if anything was wrong: a
response >= 500, a warning in the log, a slot or queue place not freed, RSS grown by more than
5% after the warm-up, a stream not ended by a final event, an exit status other than 0.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

TOPICS = ["the sea", "a small town", "the moon", "bread", "a train", "winter", "a library", "rain", "music", "tea"]
WARNING_LINE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|Exception in ASGI")
SOURCE = re.compile(r"(\S+ (?:WARNING|ERROR|CRITICAL)):|(ERROR):|(Traceback)")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ ")


def source_of(line: str) -> str:
    """Who logged a warning line: "<logger> <LEVEL>", uvicorn's "ERROR", or a "Traceback"."""
    found = SOURCE.search(line)
    return next((group for group in found.groups() if group), "other") if found else "other"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def get_json(port: int, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return json.loads(response.read())


def busy_and_queued(port: int) -> tuple[int, int]:
    busy = sum(slot["is_processing"] for slot in get_json(port, "/slots"))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        metrics = response.read().decode()
    queued = re.search(r"^llamacpp:requests_deferred (\S+)", metrics, re.M)
    return busy, int(float(queued.group(1))) if queued else -1


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: collections.Counter[int] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        self.abandoned = 0
        self.requests = 0

    def add(self, status: int | None = None, failure: str | None = None, abandoned: bool = False) -> None:
        with self.lock:
            self.requests += 1
            if status is not None:
                self.statuses[status] += 1
            if failure is not None:
                self.failures[failure] += 1
            self.abandoned += abandoned


def one_request(port: int, kind: int, rng: random.Random, tally: Tally) -> None:
    """Kind 0: chat, 1: streamed chat, 2: completion, 3: streamed completion."""
    topic = rng.choice(TOPICS)
    stream = kind in (1, 3)
    body: dict[str, object] = {"max_tokens": rng.randint(16, 128), "temperature": 0.8, "stream": stream,
                               "seed": rng.randrange(1 << 30)}
    if kind < 2:
        path, body["messages"] = "/v1/chat/completions", [{"role": "user", "content": f"Tell me about {topic}."}]
    else:
        path, body["prompt"] = "/v1/completions", f"A short story about {topic}:"
    abandon_after = rng.randint(1, 5) if stream and rng.random() < 0.25 else None
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        if abandon_after is not None and response.status == 200:
            for _ in range(abandon_after):
                if not response.readline():
                    break
            connection.sock.close()  # leave without reading on
            tally.add(response.status, abandoned=True)
            return
        payload = response.read()
        if stream and response.status == 200 and b'"error"' in payload:
            tally.add(response.status, failure="error event in a stream")
        else:
            tally.add(response.status)
    except (OSError, http.client.HTTPException) as exc:
        tally.add(failure=type(exc).__name__)
    finally:
        connection.close()


def stop_mid_stream(port: int, server: subprocess.Popen) -> tuple[str, float]:
    """SIGTERM while a long stream runs: how the stream ended, and seconds until the exit."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"prompt": "A long story about the sea:", "max_tokens": 4000, "stream": True, "temperature": 0.8}
    connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    events = [line for line in (response.readline() for _ in range(6)) if line.startswith(b"data: ")]
    signalled = time.monotonic()
    os.kill(server.pid, signal.SIGTERM)
    events += [line for line in response if line.startswith(b"data: ")]
    server.wait(600)
    last = [event.decode().strip() for event in events[-2:]]
    if last[-1] != "data: [DONE]":
        ending = f"had no [DONE]: {last[-1][:100]}"
    elif '"error"' in last[0]:
        ending = f"ended by a final error event: {json.loads(last[0][6:])['error']['message']}"
    else:
        ending = f"finished (finish_reason {json.loads(last[0][6:])['choices'][0]['finish_reason']})"
    return ending, time.monotonic() - signalled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="GGUF to serve (default: the demo model)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=60, help="seconds before the 'after warm-up' RSS")
    parser.add_argument("server_flags", nargs="*", help="more server flags (after --)")
    args = parser.parse_args()
    if args.model is None:
        from pyllama import demo

        args.model = str(demo.path())
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="pyllama-soak-")) / "server.log"
    command = [sys.executable, "-m", "pyllama.server", "--model", args.model, "--port", str(port), "-np", "4",
               "-c", "4096", "--metrics", "--verbose", *args.server_flags]
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                get_json(port, "/health")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start; see {log}") from None
                time.sleep(0.5)
        rss = {"start": rss_mib(server.pid)}
        tally, stop = Tally(), threading.Event()

        def client(index: int) -> None:
            rng = random.Random(index)
            kind = index % 4
            while not stop.is_set():
                one_request(port, kind, rng, tally)
                kind = (kind + 1) % 4

        clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
        started = time.monotonic()
        for thread in clients:
            thread.start()
        time.sleep(min(args.warmup, args.minutes * 60))
        rss["after warm-up"] = rss_mib(server.pid)
        peak = rss["after warm-up"]
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(5)
            peak = max(peak, rss_mib(server.pid))
            print(f"soak: {time.monotonic() - started:5.0f} s, {tally.requests} requests, "
                  f"statuses {dict(tally.statuses)}, RSS {rss_mib(server.pid):.1f} MiB", flush=True)
        stop.set()
        for thread in clients:
            thread.join(600)
        time.sleep(1)  # abandoned jobs free their slots at the engine's next step
        rss["end"] = rss_mib(server.pid)
        busy, queued = busy_and_queued(port)
        ending, exit_seconds = stop_mid_stream(port, server)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(60)
    warnings = [line for line in log.read_text(errors="replace").splitlines() if WARNING_LINE.search(line)]
    growth = rss["end"] / rss["after warm-up"] - 1
    print(f"requests: {tally.requests} in {args.minutes:g} min from {args.clients} clients "
          f"({tally.abandoned} streams abandoned)")
    print(f"responses by status: {dict(sorted(tally.statuses.items()))}")
    print(f"client-side failures: {dict(tally.failures) or 0}")
    print("RSS MiB: " + ", ".join(f"{k} {v:.1f}" for k, v in rss.items())
          + f" (peak {peak:.1f}; end vs after warm-up {100 * growth:+.1f}%)")
    print(f"at the end: {busy} busy slots, {queued} queued requests")
    print(f"SIGTERM mid-stream: the stream {ending}; the server exited with status "
          f"{server.returncode} {exit_seconds:.1f} s after the signal")
    sources = collections.Counter(source_of(line) for line in warnings)
    print(f"log lines at WARNING or above: {len(warnings)} {dict(sources)} (log {log})")
    for line in list(dict.fromkeys(TIMESTAMP.sub("", line) for line in warnings))[:10]:  # the distinct ones
        print(f"  {line[:200]}")
    bad = (any(status >= 500 for status in tally.statuses) or tally.failures or warnings or busy or queued
           or growth > 0.05 or server.returncode != 0 or not ending.startswith(("ended", "finished")))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
