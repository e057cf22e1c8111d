"""Issue 26: faults under load lose nothing and make no noise.

A client that leaves at any moment frees its slot and queue place and raises nothing out of the
app; a full shared KV cache ends one request with the text it had (the others go on); a stop
signal drains (running requests finish, /health answers 503) and the process exits 0; a
hostile chat template is refused by name while the server keeps serving. Real servers over real
sockets; the clients that leave close their sockets without reading on.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server_process import running_server

READABLE = {str(t): -100 for t in range(3, 259)} | {"2": -100}  # words and letters only, never EOS
HANG = 60  # seconds after which something that has not happened counts as hung
# what must never be in the log: a traceback, an error, asyncio's or the server's warnings
NOISE = re.compile(r"Traceback|Exception|InvalidStateError|\bERROR\b|CRITICAL|asyncio|pyllama\.server WARNING")
ENDLESS = {"prompt": "the planets", "max_tokens": 10**6, "logit_bias": READABLE, "temperature": 0, "stream": True}


def connect(base: str) -> http.client.HTTPConnection:
    host, port = base.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=HANG)


def send(base: str, path: str, body: dict[str, Any]) -> http.client.HTTPConnection:
    connection = connect(base)
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    return connection


def post(base: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = send(base, path, body).getresponse()
    return response.status, json.loads(response.read())


def get(base: str, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(base + path, timeout=HANG) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def leave(connection: http.client.HTTPConnection) -> None:
    """Close the socket at once, whatever is unread (the peer sees a reset)."""
    connection.sock.close()


def events(response: http.client.HTTPResponse) -> Iterator[dict[str, Any] | str]:
    """A stream's events as they come: each JSON chunk, or "[DONE]"."""
    for line in response:
        line = line.decode().strip()
        if line.startswith("data: "):
            yield "[DONE]" if line == "data: [DONE]" else json.loads(line[6:])


def text_of(chunk: dict[str, Any]) -> str:
    choice = chunk["choices"][0] if chunk.get("choices") else {}
    return choice.get("text") or (choice.get("delta") or {}).get("content") or ""


def state(base: str) -> tuple[int, int]:
    """Busy slots and queued requests."""
    busy = sum(slot["is_processing"] for slot in json.loads(get(base, "/slots")[1]))
    metrics = get(base, "/metrics")[1].decode()
    return busy, int(float(re.search(r"^llamacpp:requests_deferred (\S+)", metrics, re.M).group(1)))


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + HANG
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def noise(log: Path, since: int = 0) -> list[str]:
    return [line for line in log.read_text(errors="replace")[since:].splitlines() if NOISE.search(line)]


# --- a client that leaves -------------------------------------------------------------------

@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults") / "server.log"


@pytest.fixture(scope="module")
def server(tiny_spm, log) -> Iterator[str]:
    # small batches: a long prompt takes many steps, so a client can leave while it is evaluated
    with running_server(tiny_spm[0], "--n_ctx", "4096", "-np", "2", "-kvu", "--n_batch", "8", "--n_threads", "1",
                        "--metrics", "--context-shift", "--verbose", log=log) as base:
        yield base


def leave_before_the_body(base: str) -> None:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"prompt\": \"the")


def leave_while_queued(base: str) -> None:
    """Both slots generate; the request waiting for one leaves, and its queue place is free at
    once (not when a slot would have taken it)."""
    running = [send(base, "/v1/completions", ENDLESS) for _ in range(2)]
    for connection in running:
        next(events(connection.getresponse()))
    waiting = send(base, "/v1/completions", {"prompt": "hello", "max_tokens": 8})
    wait_for(lambda: state(base) == (2, 1), "the third request queued")
    leave(waiting)
    wait_for(lambda: state(base)[1] == 0, "the queue place freed")
    assert state(base)[0] == 2, "the running requests were touched"
    for connection in running:
        leave(connection)


def leave_during_the_prompt(base: str) -> None:
    connection = send(base, "/completion", {"prompt": "the planets " * 250, "n_predict": 8, "stream": True,
                                            "return_progress": True})
    first = next(events(connection.getresponse()))
    assert first["prompt_progress"]["processed"] < first["prompt_progress"]["total"]
    leave(connection)


def leave_while_generating(base: str) -> None:
    """A whole reply (no stream): only the gate can see its client go."""
    connection = send(base, "/v1/completions", {**ENDLESS, "stream": False})
    wait_for(lambda: state(base)[0] == 1, "generating")
    leave(connection)


def leave_mid_stream(base: str) -> None:
    connection = send(base, "/v1/chat/completions", {**ENDLESS, "messages": [{"role": "user", "content": "hi"}]})
    stream = events(connection.getresponse())
    for _ in range(3):
        next(stream)
    leave(connection)


def leave_after_the_last_chunk(base: str) -> None:
    connection = send(base, "/v1/completions", {**ENDLESS, "max_tokens": 8})
    assert list(events(connection.getresponse()))[-1] == "[DONE]"
    leave(connection)
    connection = send(base, "/v1/completions", {**ENDLESS, "max_tokens": 8, "stream": False})
    connection.getresponse()  # the status line and headers only
    leave(connection)


@pytest.mark.parametrize("client", [leave_before_the_body, leave_while_queued, leave_during_the_prompt,
                                    leave_while_generating, leave_mid_stream, leave_after_the_last_chunk])
def test_a_client_that_leaves_frees_its_slot_and_raises_nothing(server, log, client):
    since = len(log.read_text(errors="replace"))
    client(server)
    wait_for(lambda: state(server) == (0, 0), "every slot and queue place free")
    assert noise(log, since) == []
    left = [line for line in log.read_text(errors="replace")[since:].splitlines() if "the client left" in line]
    assert len(left) <= 3, left  # a line at most for each request that was left
    status, out = post(server, "/v1/completions", {"prompt": "hello", "max_tokens": 4})
    assert status == 200 and out["usage"]["completion_tokens"] == 4


# --- a full shared KV cache, and a hostile template ---------------------------------------------

HOSTILE_TEMPLATE = "{{ 'x' * 1000000000 }}"


@pytest.fixture(scope="module")
def small_cache(tiny_spm, tmp_path_factory) -> Iterator[str]:
    """llama-server's test_completion_unified setting: 4 slots sharing 256 cells."""
    with running_server(tiny_spm[0], "-c", "256", "-np", "4", "-kvu", "--n_threads", "1", "--metrics",
                        "--chat-template", HOSTILE_TEMPLATE) as base:
        yield base


@pytest.mark.parametrize("streamed", [0, 1], ids=["whole", "one-streamed"])
def test_a_full_shared_cache_ends_one_request_with_its_text(small_cache, streamed):
    connections = [connect(small_cache) for _ in range(4)]
    for connection in connections:
        connection.connect()
    for i, connection in enumerate(connections):  # sent together: 4 x 200 tokens cannot share 256 cells
        connection.request("POST", "/v1/completions", json.dumps(
            {"prompt": f"the planets {i}", "max_tokens": 200, "logit_bias": READABLE, "stream": i < streamed}),
            {"Content-Type": "application/json"})
    completed = exceeded = 0
    for i, connection in enumerate(connections):
        response = connection.getresponse()
        if i < streamed:
            assert response.status == 200
            chunks = list(events(response))
            assert chunks[-1] == "[DONE]"
            text = "".join(text_of(c) for c in chunks[:-1] if "error" not in c)
            if "error" in chunks[-2]:
                error = chunks[-2]["error"]
                assert "the context size has been exceeded" in error["message"], error
                assert text and "generated_text" not in error  # the stream delivered it before
                exceeded += 1
            else:
                assert chunks[-2]["choices"][0]["finish_reason"] == "length"
                completed += 1
            continue
        out = json.loads(response.read())
        if response.status == 200:
            assert out["usage"]["completion_tokens"] == 200
            completed += 1
        else:
            assert response.status == 500, out
            assert "the context size has been exceeded" in out["error"]["message"]
            assert isinstance(out["error"]["generated_text"], str) and out["error"]["generated_text"]
            exceeded += 1
    assert completed >= 1 and exceeded >= 1, (completed, exceeded)
    wait_for(lambda: state(small_cache) == (0, 0), "every slot free")
    status, out = post(small_cache, "/v1/completions", {"prompt": "hello", "max_tokens": 8})
    assert status == 200 and out["usage"]["completion_tokens"] == 8


def test_a_hostile_template_is_refused_by_name_and_the_server_goes_on(small_cache):
    status, out = post(small_cache, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and "8,388,608" in out["error"]["message"], out  # the limit, named
    status, out = post(small_cache, "/v1/completions", {"prompt": "hello", "max_tokens": 4})
    assert status == 200
    assert get(small_cache, "/health")[0] == 200


# --- a stop signal ------------------------------------------------------------------------------

class Reader(threading.Thread):
    """A stream read to its end in a thread."""

    def __init__(self, base: str, body: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.response = send(base, "/v1/completions", body).getresponse()
        self.chunks: list[dict[str, Any] | str] = []
        self.stream = events(self.response)
        self.chunks.append(next(self.stream))  # it is generating
        self.start()

    def run(self) -> None:
        self.chunks.extend(self.stream)

    def finish(self) -> list[dict[str, Any] | str]:
        self.join(HANG)
        assert not self.is_alive(), "the stream hung"
        return self.chunks


def stopped(base: Any, log: Path) -> str:
    assert base.process.wait(HANG) == 0
    output = log.read_text(errors="replace")
    assert "stopped" in output and not NOISE.search(output) and "KeyboardInterrupt" not in output, output
    return output


def test_sigterm_drains_then_a_second_one_ends_the_rest(tiny_spm, tmp_path):
    log = tmp_path / "server.log"
    with running_server(tiny_spm[0], "--n_ctx", "2048", "-np", "2", "--n_threads", "1", "--context-shift",
                        "--stop-timeout", "600", log=log) as base:
        endless = Reader(base, ENDLESS)
        finite = Reader(base, {**ENDLESS, "max_tokens": 300})
        os.kill(base.pid, signal.SIGTERM)
        wait_for(lambda: get(base, "/health")[0] == 503, "/health answers 503")
        status, out = post(base, "/v1/completions", {"prompt": "hello", "max_tokens": 4})
        assert status == 503 and "shutting down" in out["error"]["message"]
        chunks = finite.finish()  # a running request finishes as it would have
        assert chunks[-1] == "[DONE]" and chunks[-2]["choices"][0]["finish_reason"] == "length"
        assert base.process.poll() is None and endless.is_alive(), "the drain did not wait for the endless stream"
        os.kill(base.pid, signal.SIGTERM)
        chunks = endless.finish()
        assert chunks[-1] == "[DONE]" and "shutting down" in chunks[-2]["error"]["message"]
        output = stopped(base, log)
    assert "SIGTERM: stopping" in output and "SIGTERM again" in output


def test_the_stop_timeout_ends_a_stream_with_a_final_event(tiny_spm, tmp_path):
    log = tmp_path / "server.log"
    with running_server(tiny_spm[0], "--n_ctx", "2048", "-np", "1", "--n_threads", "1", "--context-shift",
                        "--stop-timeout", "1", log=log) as base:
        endless = Reader(base, ENDLESS)
        signalled = time.monotonic()
        os.kill(base.pid, signal.SIGTERM)
        chunks = endless.finish()
        assert chunks[-1] == "[DONE]" and "shutting down" in chunks[-2]["error"]["message"]
        assert time.monotonic() - signalled < HANG
        stopped(base, log)


def test_ctrl_c_stops_cleanly(tiny_spm, tmp_path):
    log = tmp_path / "server.log"
    with running_server(tiny_spm[0], "--n_ctx", "512", "--n_threads", "1", log=log) as base:
        os.kill(base.pid, signal.SIGINT)
        output = stopped(base, log)
    assert "SIGINT: stopping" in output and len(output.splitlines()) < 8, output
