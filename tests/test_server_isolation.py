"""Issue 12: no request can freeze, crash or spoil another.

Each malformed request is sent while a good greedy stream runs beside it, over real sockets:
the bad one gets a 4xx in OpenAI's error shape naming the field, the good one completes with
the text it has when run alone, and the server goes on serving. The engine-failure tests run
the app in this process (uvicorn on a loopback socket) so they can break the engine thread.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from server_process import free_port, running_server

READABLE = {str(t): -100 for t in range(3, 259)} | {"2": -100}  # words and letters only, never EOS
GOOD = {"prompt": "the planets", "max_tokens": 400, "temperature": 0, "logit_bias": READABLE, "stream": True}
LATER = {"prompt": "hello world", "max_tokens": 8, "temperature": 0, "logit_bias": READABLE}
HANG = 60  # seconds after which a request that has not answered counts as hung
STALL = 10  # seconds a 4-token request may take beside a stream (penalty windows of 2**31 took 14 to 74)


def post(url: str, body: dict[str, Any] | bytes, timeout: float = HANG) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def get(url: str, timeout: float = HANG) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Stream(threading.Thread):
    """A streamed completion read in a thread: its text, how it ended, and when."""

    def __init__(self, base: str, body: dict[str, Any] | None = None, route: str = "/v1/completions") -> None:
        super().__init__(daemon=True)
        self.url, self.body = base + route, body or GOOD
        self.started = threading.Event()  # the first chunk arrived: the job is generating
        self.status: int | None = None
        self.text = ""
        self.finish_reason: str | None = None
        self.errors: list[dict[str, Any]] = []
        self.done_marker = False
        self.ended = float("inf")
        self.failure: BaseException | None = None

    def run(self) -> None:
        request = urllib.request.Request(self.url, data=json.dumps(self.body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=HANG) as response:
                self.status = response.status
                for line in response:
                    self._line(line.decode().strip())
        except urllib.error.HTTPError as error:
            self.status = error.code
            self.errors.append(json.loads(error.read())["error"])
        except BaseException as exc:  # noqa: BLE001 - reported by the test, not lost in the thread
            self.failure = exc
        finally:
            self.ended = time.monotonic()
            self.started.set()

    def _line(self, line: str) -> None:
        if not line.startswith("data: "):
            return
        if line == "data: [DONE]":
            self.done_marker = True
            return
        chunk = json.loads(line[6:])
        if "error" in chunk:
            self.errors.append(chunk["error"])
        elif "content" in chunk:  # llama.cpp's /completion
            self.text += chunk["content"]
            self.finish_reason = chunk.get("stop_type") if chunk["stop"] else self.finish_reason
        else:
            choice = chunk["choices"][0]
            self.text += choice.get("text") or (choice.get("delta") or {}).get("content") or ""
            self.finish_reason = choice["finish_reason"] or self.finish_reason
        self.started.set()

    def finish(self) -> Stream:
        self.join(HANG)
        assert not self.is_alive(), f"the stream hung after {len(self.text)} characters"
        assert self.failure is None, self.failure
        return self


@contextlib.contextmanager
def beside(base: str) -> Iterator[Stream]:
    """A good stream that is already generating when the block runs; it is finished after it."""
    good = Stream(base)
    good.start()
    assert good.started.wait(HANG), "the good stream never started"
    yield good
    good.finish()


def assert_names(payload: dict[str, Any], field: str) -> None:
    """OpenAI's error shape, naming ``field`` in ``param`` or in the message."""
    error = payload["error"]
    assert set(error) >= {"message", "type", "param", "code"}, payload
    assert isinstance(error["message"], str) and error["type"], payload
    assert field in (error["param"] or "") or field in error["message"], payload


@pytest.fixture(scope="module")
def server(tiny_spm) -> Iterator[str]:
    with running_server(tiny_spm[0], "--n_ctx", "2048", "--n_parallel", "4", "--n_threads", "1",
                        "--model_alias", "tiny") as base:
        yield base


@pytest.fixture(scope="module")
def alone(server: str) -> str:
    """The good stream's text with nothing beside it."""
    good = Stream(server)
    good.start()
    good.finish()
    assert good.status == 200 and good.finish_reason == "length" and not good.errors
    assert len(good.text) > 50
    return good.text


@pytest.fixture(scope="module")
def later(server: str) -> str:
    status, out = post(server + "/v1/completions", LATER)
    assert status == 200
    return out["choices"][0]["text"]


def assert_unharmed(server: str, good: Stream, alone: str, later: str) -> None:
    assert good.status == 200 and good.errors == [], good.errors
    assert good.text == alone and good.finish_reason == "length" and good.done_marker
    status, out = post(server + "/v1/completions", LATER)
    assert status == 200 and out["choices"][0]["text"] == later


CHAT = [{"role": "user", "content": "the planets"}]
DEEP_SCHEMA = b'{"type": "array", "items": ' * 900 + b"{}" + b"}" * 900

BAD = [  # route, body (a dict, or the raw bytes sent), the field the error must name
    pytest.param("/v1/completions", {"prompt": "hi", "top_k": 3000000000}, "top_k", id="top_k-overflow"),
    pytest.param("/v1/completions", {"prompt": "hi", "top_k": -1}, "top_k", id="top_k-negative"),
    pytest.param("/v1/chat/completions", {"messages": CHAT, "stop": [1]}, "stop", id="chat-stop-int"),
    pytest.param("/completion", {"prompt": "hi", "stop": [1]}, "stop", id="completion-stop-int"),
    pytest.param("/v1/chat/completions", {"messages": CHAT, "logprobs": True, "top_logprobs": "5"}, "top_logprobs",
                 id="top_logprobs-string"),
    pytest.param("/v1/chat/completions", {"messages": CHAT, "logprobs": True, "top_logprobs": 1000}, "top_logprobs",
                 id="top_logprobs-oversized"),
    pytest.param("/completion", {"prompt": "hi", "n_probs": 1000}, "n_probs", id="n_probs-oversized"),
    pytest.param("/v1/completions", {"prompt": "hi", "logprobs": 1000}, "logprobs", id="logprobs-oversized"),
    pytest.param("/v1/completions", b'{"prompt": "\\ud800"}', "prompt", id="lone-surrogate"),
    pytest.param("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "a\\udc00b"}]}',
                 "messages[0].content", id="lone-surrogate-in-messages"),
    pytest.param("/v1/completions", b'{"prompt": "\xff\xfe hi"}', "UTF-8", id="invalid-utf8"),
    pytest.param("/v1/completions", {"prompt": "hi", "grammar": "root ::= ("}, "grammar", id="grammar-v1"),
    pytest.param("/completion", {"prompt": "hi", "grammar": "root ::= ("}, "grammar", id="grammar-completion"),
    # ~30,000 nested groups overflow llama.cpp's grammar parser's stack: the whole process died
    pytest.param("/v1/completions", {"prompt": "hi", "grammar": "root ::= " + "(" * 30000 + '"a"' + ")" * 30000},
                 "grammar", id="grammar-nested-30000"),
    pytest.param("/v1/chat/completions", {"messages": CHAT, "grammar": "root ::= " + "(" * 30000 + '"a"' + ")" * 30000},
                 "grammar", id="chat-grammar-nested-30000"),
    pytest.param("/v1/completions", b'{"prompt": "hi", "temperature": NaN}', "temperature", id="NaN"),
    pytest.param("/v1/completions", b'{"prompt": "hi", "top_p": Infinity}', "top_p", id="Infinity"),
    pytest.param("/completion", b'{"prompt": "hi", "min_p": -Infinity}', "min_p", id="minus-Infinity"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content",
                 id="message-content-int"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
                 "messages[0].content[0]", id="message-part-text-int"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
                 "messages[0].content[0]", id="message-part-unknown-type"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": 5, "content": "x"}]}, "messages[0].role",
                 id="message-role-int"),
    pytest.param("/v1/chat/completions", {"messages": ["hi"]}, "messages[0]", id="message-string"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": "assistant", "tool_calls": [{"function": 3}]}]},
                 "messages[0].tool_calls[0].function", id="tool-call-function-int"),
    pytest.param("/v1/completions", {"prompt": "hi", "stop": ["stop word"] * 160_000}, "stop", id="stop-list-2MB"),
    pytest.param("/v1/completions", {"prompt": [1, 5, 100000]}, "prompt", id="token-id-out-of-vocab"),
    pytest.param("/v1/completions", b"[1, 2]", "JSON object", id="body-not-an-object"),
    pytest.param("/v1/completions", b'{"prompt": "hi", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "too deeply",
                 id="body-nested-5000"),
    pytest.param("/v1/completions", b'{"prompt": "hi", "json_schema": ' + DEEP_SCHEMA + b"}", "json_schema",
                 id="json_schema-nested-900"),
    pytest.param("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": '
                 b'"function", "function": {"name": "f", "parameters": ' + DEEP_SCHEMA + b"}}]}", "too deeply",
                 id="tool-schema-nested-900"),
]


@pytest.mark.parametrize("route, body, field", BAD)
def test_a_bad_request_beside_a_good_stream(server, alone, later, route, body, field):
    with beside(server) as good:
        sent = time.monotonic()
        status, payload = post(server + route, body)
    assert 400 <= status < 500, payload
    assert payload["error"]["type"] == "invalid_request_error"
    assert_names(payload, field)
    assert sent < good.ended, "the good stream was over before the bad request went out"
    assert_unharmed(server, good, alone, later)


SERVED = [  # values at the edge of what is accepted: served, without holding up the stream beside them
    # a penalty window of 2**31-1 made llama.cpp allocate an 8 GB ring buffer on the engine thread
    pytest.param({"repeat_last_n": 2**31 - 1, "repeat_penalty": 1.1}, id="repeat_last_n-max"),
    pytest.param({"dry_penalty_last_n": 2**31 - 1, "dry_multiplier": 0.8}, id="dry_penalty_last_n-max"),
    pytest.param({"top_k": 2**31 - 1}, id="top_k-max"),
    pytest.param({"seed": 2**64 + 5, "temperature": 1.0}, id="seed-folded"),
    pytest.param({"min_keep": 2**31 - 1, "top_p": 0.5, "temperature": 1.0}, id="min_keep-max"),
    pytest.param({"model": "gpt-3.5-turbo"}, id="any-model-name"),
]


@pytest.mark.parametrize("extra", SERVED)
def test_an_extreme_value_is_served_beside_a_good_stream(server, alone, later, extra):
    with beside(server) as good:
        sent = time.monotonic()
        status, payload = post(server + "/v1/completions", {"prompt": "hi", "max_tokens": 4, **extra})
        took = time.monotonic() - sent
    assert status == 200, payload
    assert payload["usage"]["completion_tokens"] <= 4
    assert took < STALL, f"a 4-token request took {took:.1f} s: the engine stalled on it"
    assert_unharmed(server, good, alone, later)


# A finished grammar with EOS banned: llama.cpp throws "Unexpected empty grammar stack" while sampling.
THROWS = {"prompt": "hi", "grammar": 'root ::= "a"', "logit_bias": {"2": False}, "max_tokens": 8}


def test_sampling_that_throws_ends_only_its_own_job(server, alone, later):
    with beside(server) as good:
        status, payload = post(server + "/v1/completions", THROWS)
        failing = Stream(server, {**THROWS, "stream": True}, "/completion")
        failing.start()
        failing.finish()
    assert status == 500 and "grammar" in payload["error"]["message"], payload
    assert failing.status == 200 and failing.text == "a"  # the stream had started: the error is an event
    assert len(failing.errors) == 1 and "grammar" in failing.errors[0]["message"]
    assert_unharmed(server, good, alone, later)


def health_while(server: str, route: str, body: dict[str, Any]) -> tuple[tuple[int, Any], float, list[float]]:
    """Send a big request and poll /health until it is answered: its reply, how long it took,
    and how long each /health took meanwhile."""
    big: dict[str, Any] = {}

    def send() -> None:
        sent = time.monotonic()
        big["reply"] = post(server + route, body)
        big["took"] = time.monotonic() - sent

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    latencies = []
    while sender.is_alive() and len(latencies) < 500:
        started = time.monotonic()
        assert get(server + "/health")[0] == 200
        latencies.append(time.monotonic() - started)
        time.sleep(0.05)
    sender.join(HANG)
    assert not sender.is_alive() and latencies
    return big["reply"], big["took"], latencies


def assert_not_stalled(latencies: list[float], took: float) -> None:
    # The big request takes seconds; it stalled everything while it ran on the event loop. A
    # generous bound, relative on a machine so loaded that the whole request takes far longer.
    assert max(latencies) < max(1.5, took / 2), (max(latencies), took)


def test_a_12_MB_prompt_stalls_neither_health_nor_streams(server, alone, later):
    with beside(server) as good:
        (status, payload), took, latencies = health_while(server, "/v1/completions",
                                                          {"prompt": "the planets " * 1_000_000})
    assert status == 400 and payload["error"]["code"] == "context_length_exceeded"
    assert_names(payload, "prompt")
    assert_not_stalled(latencies, took)
    assert_unharmed(server, good, alone, later)


def test_tokenizing_megabytes_with_pieces_does_not_stall_health(server):
    (status, payload), took, latencies = health_while(server, "/tokenize",
                                                      {"content": "the planets " * 100_000, "with_pieces": True})
    assert status == 200 and len(payload["tokens"]) >= 200_000
    assert "".join(t["piece"] for t in payload["tokens"][:50]).strip().startswith("the planets the planets")
    assert_not_stalled(latencies, took)


def test_the_openai_client_with_any_model_name(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=HANG)
    out = client.chat.completions.create(model="gpt-4o", messages=CHAT, max_tokens=6, temperature=0,
                                         logit_bias=READABLE)
    assert out.model == "tiny" and out.choices[0].message.content and out.usage.completion_tokens == 6
    streamed = client.chat.completions.create(model="gpt-4o", messages=CHAT, max_tokens=6, temperature=0,
                                              logit_bias=READABLE, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == out.choices[0].message.content
    text = client.completions.create(model="gpt-4o", prompt="hello", max_tokens=4)
    assert text.model == "tiny" and text.usage.completion_tokens <= 4


def test_openapi_describes_every_request_body_and_docs_load(server):
    status, raw = get(server + "/openapi.json")
    assert status == 200
    spec = json.loads(raw)
    posts = {path: ops["post"] for path, ops in spec["paths"].items() if "post" in ops}
    assert {"/v1/completions", "/completion", "/v1/chat/completions", "/v1/embeddings", "/tokenize",
            "/detokenize"} <= set(posts)
    for path, op in posts.items():
        schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        assert schema, f"POST {path} has no request body schema"
    completion = spec["components"]["schemas"]["CompletionRequest"]
    assert {"prompt", "grammar", "json_schema", "n_probs", "top_k"} <= set(completion["properties"])
    assert completion.get("examples"), "/docs has no example to try"
    status, page = get(server + "/docs")
    assert status == 200 and b"swagger-ui" in page and b"/openapi.json" in page


@pytest.mark.parametrize("route", ["/v1/completions", "/completion"])
def test_grammar_constrains_completions(server, route):
    for seed in range(3):
        status, out = post(server + route, {"prompt": "Q: is the world one? A:", "grammar": 'root ::= "yes" | "no"',
                                            "max_tokens": 8, "temperature": 1.5, "seed": seed, "n": 3})
        assert status == 200, out
        texts = [c["text"] for c in out["choices"]] if route == "/v1/completions" else \
            [c["content"] for c in (out if isinstance(out, list) else [out])]
        assert texts and all(text in ("yes", "no") for text in texts), texts
    status, out = post(server + "/v1/completions", {"prompt": "colour:", "json_schema": {"enum": ["red", "green"]},
                                                    "max_tokens": 8, "temperature": 1.0, "seed": 1})
    assert status == 200 and json.loads(out["choices"][0]["text"]) in ("red", "green")
    status, out = post(server + "/completion", {"prompt": "colour:", "n_predict": 8, "temperature": 1.0, "seed": 2,
                                                "response_format": {"type": "json_schema", "json_schema": {
                                                    "name": "c", "schema": {"enum": ["red", "green"]}}}})
    assert status == 200 and json.loads(out["content"]) in ("red", "green")


# --- the engine thread itself fails: the app in this process, so its engine can be broken ---------

@contextlib.contextmanager
def in_process(model: Any, *flags: str) -> Iterator[tuple[str, Any]]:
    """The app on a loopback socket, served by uvicorn in a thread: its URL and its engine."""
    import uvicorn

    from pyllama.server.app import create_app
    from pyllama.server.settings import parse

    app = create_app(parse(["--model", str(model), "--n_parallel", "1", "--n_threads", "1", *flags]))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + HANG
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the in-process server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}", app.state.pool.default.served.engine
    finally:
        server.should_exit = True
        thread.join(HANG)


def broken(message: str) -> Any:
    def fail(*_: Any, **__: Any) -> None:
        raise RuntimeError(message)

    return fail


@pytest.mark.parametrize("kv_too", [False, True], ids=["step", "step-and-kv"])
def test_a_dead_engine_answers_503_and_nothing_hangs(tiny_spm, monkeypatch, kv_too):
    with in_process(tiny_spm[0], "--n_ctx", "1024") as (base, engine):
        running = Stream(base)
        running.start()
        assert running.started.wait(HANG)
        waiting: dict[str, Any] = {}
        queued = threading.Thread(target=lambda: waiting.update(reply=post(base + "/v1/completions", LATER)),
                                  daemon=True)
        queued.start()
        deadline = time.monotonic() + HANG
        while engine.queue_depth == 0:  # one slot: the second request waits for it
            assert time.monotonic() < deadline and running.is_alive(), "the second request never queued"
            time.sleep(0.01)
        if kv_too:  # the context itself is what broke: cleaning up the slots fails too
            monkeypatch.setattr(engine.context, "kv_remove", broken("the KV memory is gone"))
        monkeypatch.setattr(engine, "_step", broken("a bug in the engine loop"))  # outside any per-job handling
        running.finish()
        queued.join(HANG)
        assert not queued.is_alive(), "the waiting request hung"
        assert running.errors and "a bug in the engine loop" in running.errors[-1]["message"]
        assert running.finish_reason is None  # it ended with the error, not as if complete
        status, payload = waiting["reply"]
        assert status == 503 and "a bug in the engine loop" in payload["error"]["message"], payload
        status, raw = get(base + "/health")
        assert status == 503 and "a bug in the engine loop" in json.loads(raw)["error"]["message"]
        for route, body in [("/v1/completions", LATER), ("/v1/chat/completions", {"messages": CHAT, "stream": True}),
                            ("/completion", {"prompt": "hi", "stream": True})]:
            started = time.monotonic()
            status, payload = post(base + route, body)
            assert status == 503 and payload["error"]["type"] == "unavailable_error", payload
            assert time.monotonic() - started < 10  # promptly: nothing waits on the dead thread


def test_one_job_failing_leaves_the_engine_alive(tiny_spm, monkeypatch):
    with in_process(tiny_spm[0], "--n_ctx", "256", "--context-shift") as (base, engine):
        status, payload = post(base + "/v1/completions", THROWS)  # llama.cpp throws while sampling
        assert status == 500 and "grammar" in payload["error"]["message"]
        # a memory that cannot shift (recurrent models): the job that reaches the end of the context fails
        monkeypatch.setattr(engine.context, "kv_shift", broken("this memory cannot shift"))
        long = Stream(base, {**GOOD, "max_tokens": 400})
        long.start()
        long.finish()
        assert long.status == 200 and len(long.errors) == 1 and "cannot shift" in long.errors[0]["message"]
        assert engine.alive and get(base + "/health")[0] == 200
        status, out = post(base + "/v1/completions", LATER)
        assert status == 200 and out["usage"]["completion_tokens"] == 8


def test_a_failed_json_body_still_reads_as_http(server):
    """The gate answers before any route: a raw socket sees a complete HTTP response."""
    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=HANG)
    connection.request("POST", "/v1/chat/completions", body=b'{"messages": "\xc3\x28"}',
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 400 and response.getheader("content-type") == "application/json"
    assert "UTF-8" in json.loads(response.read())["error"]["message"]
    connection.close()
