"""Server throughput: aggregate generated tokens/s at 1, 4 and 8 concurrent clients.

    python bench/server.py --llama-cpp-python /venv/bin/python --llama-server /path/to/llama-server \
        [--model small-q8_0] [--tokens 64] [--threads 2]

Starts each server on a loopback port with the same model, context (4096, unified), threads
and 8 slots where it has slots (llama-cpp-python's server runs one request at a time), sends
the same greedy /v1/completions requests from N client threads, and divides the completion
tokens reported in the responses by the wall time.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from _models import model_file

PROMPTS = [f"Q: {w} is the world? A:" for w in ("what", "hello", "the", "one", "bob", "you", "solar", "planets")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, args, model: Path, port: int) -> subprocess.Popen:
    threads = str(args.threads)
    commands = {
        "pyllama": [sys.executable, "-m", "pyllama.server", "--model", str(model), "--port", str(port),
                    "--n_ctx", "4096", "--n_parallel", "8", "-kvu", "--n_threads", threads, "--n_threads_batch", threads],
        "llama-cpp-python": [args.llama_cpp_python, "-m", "llama_cpp.server", "--model", str(model), "--port",
                             str(port), "--n_ctx", "4096", "--n_threads", threads, "--n_threads_batch", threads],
        "llama-server": [args.llama_server, "-m", str(model), "--port", str(port), "-c", "4096", "-np", "8", "-kvu",
                         "-t", threads, "-tb", threads, "--no-webui"],
    }
    process = subprocess.Popen(commands[kind], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"{kind} did not start")


def complete(port: int, prompt: str, tokens: int) -> int:
    body = json.dumps({"prompt": prompt, "max_tokens": tokens, "temperature": 0}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())["usage"]["completion_tokens"]


def throughput(port: int, clients: int, tokens: int, requests_per_client: int) -> float:
    counts = [0] * clients

    def client(i: int) -> None:
        for r in range(requests_per_client):
            counts[i] += complete(port, PROMPTS[(i + r) % len(PROMPTS)], tokens)

    complete(port, PROMPTS[0], 4)  # warm up
    start_time = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-cpp-python", required=True)
    parser.add_argument("--llama-server", required=True)
    parser.add_argument("--model", default="small-q8_0")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=2, help="requests per client")
    args = parser.parse_args()
    model = model_file(args.model)
    levels = (1, 4, 8)
    results: dict[str, list[float]] = {}
    for kind in ("pyllama", "llama-cpp-python", "llama-server"):
        port = free_port()
        process = start(kind, args, model, port)
        try:
            results[kind] = [throughput(port, n, args.tokens, args.requests) for n in levels]
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"| {args.model}, {args.tokens} tokens/request | " + " | ".join(f"{n} clients t/s" for n in levels) + " |")
    print("|---|" + "---|" * len(levels))
    for kind, rates in results.items():
        print(f"| {kind} | " + " | ".join(f"{r:.1f}" for r in rates) + " |")
    ours = results["pyllama"]
    for kind in ("llama-cpp-python", "llama-server"):
        print(f"| pyllama / {kind} | " + " | ".join(f"{a / b:.2f}x" for a, b in zip(ours, results[kind])) + " |")


if __name__ == "__main__":
    main()
