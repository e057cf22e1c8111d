"""Distributed inference over llama.cpp's RPC backend: two workers on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from pyllama import Batch, Context, Model, ModelLoadError
from pyllama.enums import GGMLType


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rpc-server exited: {process.stderr.read()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"rpc-server on port {port} did not start")


@pytest.fixture
def workers():
    ports = [free_port(), free_port()]
    processes = [subprocess.Popen([sys.executable, "-m", "pyllama", "rpc-server", "--port", str(p), "-t", "1"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in ports]
    try:
        for port, process in zip(ports, processes):
            wait_listening(port, process)
        yield [f"127.0.0.1:{p}" for p in ports]
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)


def logits_of(model: Model, tokens: list[int]) -> np.ndarray:
    with Context(model, n_ctx=128, type_k=GGMLType.F32, type_v=GGMLType.F32) as ctx:
        ctx.decode(Batch.of(tokens, output=True))
        return np.stack([np.array(ctx.logits(i)) for i in range(len(tokens))])


def test_layers_spread_over_two_rpc_workers_give_local_logits(tiny_spm, workers):
    with Model(tiny_spm[0]) as local:
        tokens = local.tokenize("hello world, the solar system")
        expected = logits_of(local, tokens)
    with Model(tiny_spm[0], rpc_servers=workers, n_gpu_layers=-1) as remote:
        np.testing.assert_allclose(logits_of(remote, tokens), expected, atol=1e-3, rtol=1e-3)


def test_unreachable_rpc_server_is_an_error(tiny_spm):
    with pytest.raises(ModelLoadError, match="RPC"):
        Model(tiny_spm[0], rpc_servers=[f"127.0.0.1:{free_port()}"], n_gpu_layers=-1)
