"""llama-server's resumable streams on a real server: a chat stream sent with X-Conversation-Id
outlives its client, GET /v1/stream replays it from any offset and follows it live, DELETE stops
it, and /v1/streams/lookup answers only for the ids asked."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from server_process import running_server
from test_server_lifecycle import metric

from conversations import READABLE


@pytest.fixture(scope="module")
def base(tiny_spm):
    with running_server(tiny_spm[0], "-c", "8192", "-np", "2", "-t", "1", "--metrics") as url:
        yield url


def chat(max_tokens: int) -> dict:
    return {"messages": [{"role": "user", "content": "tell a story"}], "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}, "temperature": 0, "ignore_eos": True, "logit_bias": READABLE}


def events(raw: bytes) -> list[str]:
    return [line[len("data: "):] for line in raw.decode().split("\n") if line.startswith("data: ")]


def tokens_of(raw: bytes) -> int:
    """The completion tokens the stream's usage chunk counts."""
    return next(json.loads(e)["usage"]["completion_tokens"] for e in events(raw)
                if e != "[DONE]" and json.loads(e).get("usage"))


def lookup(base: str, *ids: str) -> list[dict]:
    return httpx.post(f"{base}/v1/streams/lookup", json={"conversation_ids": list(ids)}).json()


def test_a_finished_stream_replays_byte_for_byte_from_any_offset(base):
    with httpx.Client(timeout=60) as client:
        sent = client.post(f"{base}/v1/chat/completions", json=chat(8), headers={"X-Conversation-Id": "conv-a::tiny"})
        assert sent.status_code == 200 and events(sent.content)[-1] == "[DONE]"
        replay = client.get(f"{base}/v1/stream", params={"conv_id": "conv-a::tiny", "from": 0})
        assert replay.status_code == 200 and replay.headers["content-type"].startswith("text/event-stream")
        assert replay.content == sent.content
        tail = client.get(f"{base}/v1/stream", params={"conv_id": "conv-a::tiny", "from": 10}).content
        assert tail == sent.content[10:]
    (found,) = lookup(base, "conv-a")  # the id matches its ::model variant
    assert found["conversation_id"] == "conv-a::tiny" and found["is_done"] is True
    assert found["total_bytes"] == len(sent.content) and found["completed_at"] >= found["started_at"] > 0
    assert lookup(base, "someone-else") == [] and lookup(base) == []


def test_a_stream_goes_on_when_its_client_leaves_and_is_followed_live(base):
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{base}/v1/chat/completions", json=chat(400),
                           headers={"X-Conversation-Id": "conv-b"}) as response:
            first = next(response.iter_bytes())  # one chunk, then the client goes away
        assert first
        replay = client.get(f"{base}/v1/stream", params={"conv_id": "conv-b", "from": 0}).content
    assert replay.startswith(first) and events(replay)[-1] == "[DONE]"
    assert tokens_of(replay) == 400  # generated to the end, nobody listening for most of it


def test_delete_stops_the_generation_and_drops_the_session(base):
    before = metric(base, "tokens_predicted_total")
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{base}/v1/chat/completions", json=chat(3000),
                           headers={"X-Conversation-Id": "conv-c"}) as response:
            next(response.iter_bytes())
        started = time.monotonic()
        assert client.delete(f"{base}/v1/stream", params={"conv_id": "conv-c"}).status_code == 204
        assert client.get(f"{base}/v1/stream", params={"conv_id": "conv-c", "from": 0}).status_code == 404
        assert client.delete(f"{base}/v1/stream", params={"conv_id": "conv-c"}).status_code == 204  # idempotent
        deadline = time.monotonic() + 30
        while client.get(f"{base}/slots").json()[0]["is_processing"] or \
                client.get(f"{base}/slots").json()[1]["is_processing"]:
            assert time.monotonic() < deadline, "the generation went on after DELETE"
            time.sleep(0.05)
        assert time.monotonic() - started < 30
    assert lookup(base, "conv-c") == []
    assert metric(base, "tokens_predicted_total") - before < 3000  # stopped, not run to its end


def test_without_the_header_a_leaving_client_still_stops_its_generation(base):
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{base}/v1/chat/completions", json=chat(3000)) as response:
            next(response.iter_bytes())
        deadline = time.monotonic() + 30
        while any(slot["is_processing"] for slot in client.get(f"{base}/slots").json()):
            assert time.monotonic() < deadline
            time.sleep(0.05)


@pytest.mark.parametrize("method, query, status", [
    ("GET", {"conv_id": "nobody", "from": 0}, 404),
    ("GET", {"from": 0}, 400),
    ("GET", {"conv_id": "conv-a::tiny", "from": "x"}, 400),
    ("DELETE", {}, 400),
])
def test_bad_stream_requests(base, method, query, status):
    response = httpx.request(method, f"{base}/v1/stream", params=query)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]


def test_delete_ends_the_stream_of_a_client_still_reading(base):
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{base}/v1/chat/completions", json=chat(3000),
                           headers={"X-Conversation-Id": "conv-d"}) as response:
            chunks = response.iter_bytes()
            next(chunks)
            assert httpx.delete(f"{base}/v1/stream", params={"conv_id": "conv-d"}).status_code == 204
            rest = b"".join(chunks)  # ends: the generation was stopped
        assert b"[DONE]" not in rest or tokens_of(rest) < 3000


@pytest.fixture()
def slow_router(tiny_spm, tmp_path, monkeypatch):
    """Router mode whose loads take 2 s more (llama-server's LLAMA_SERVER_DEBUG_FAKE_TIMING)."""
    monkeypatch.setenv("LLAMA_SERVER_DEBUG_FAKE_TIMING", "1")
    preset = tmp_path / "models.ini"
    preset.write_text(f"[tiny]\nmodel = {tiny_spm[0]}\nc = 2048\n")
    with running_server(None, "--models-preset", str(preset), "-t", "1") as url:
        yield url


def _post_in_background(base: str, conversation_id: str):
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(1)
    body = {**chat(16), "model": "tiny"}
    future = pool.submit(httpx.post, f"{base}/v1/chat/completions", json=body,
                         headers={"X-Conversation-Id": conversation_id}, timeout=60)
    pool.shutdown(wait=False)
    return future


def _wait_loading(base: str) -> None:
    deadline = time.monotonic() + 10
    while httpx.get(f"{base}/models").json()["data"][0]["status"]["value"] != "loading":
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_while_its_model_loads_a_stream_answers_retry_later_then_replays(slow_router):
    answered = _post_in_background(slow_router, "conv-e")
    _wait_loading(slow_router)
    waiting = httpx.get(f"{slow_router}/v1/stream", params={"conv_id": "conv-e", "from": 0})
    assert waiting.status_code == 503 and waiting.headers["retry-after"] == "1"
    assert answered.result().status_code == 200
    replay = httpx.get(f"{slow_router}/v1/stream", params={"conv_id": "conv-e", "from": 0}, timeout=60)
    assert replay.status_code == 200 and replay.content == answered.result().content


def test_delete_while_its_model_loads_answers_the_parked_request_400(slow_router):
    answered = _post_in_background(slow_router, "conv-f")
    _wait_loading(slow_router)
    assert httpx.delete(f"{slow_router}/v1/stream", params={"conv_id": "conv-f"}).status_code == 204
    cancelled = answered.result()
    assert cancelled.status_code == 400 and "cancelled" in cancelled.json()["error"]["message"]
    assert httpx.get(f"{slow_router}/v1/stream", params={"conv_id": "conv-f", "from": 0}).status_code == 404
