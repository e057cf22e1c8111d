"""llama-server's router-mode downloads on a real server: POST /models fetches a model from a
Hugging Face endpoint (a fake one on loopback, tests/fake_hub.py) into the cache while the server
serves on, GET /models/sse tells what happens, DELETE /models deletes it or cancels its download,
and a preset's hf-repo names cached models (dedup-cache-models hides the cache's own entries)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from fake_hub import FakeHub
from server_process import running_server
from test_server_lifecycle import call, complete, statuses, wait_status

REPO = "tester/tiny-GGUF"
MODEL_ID = f"{REPO}:F32"


class Events:
    """GET /models/sse, read in a thread: the events so far."""

    def __init__(self, base: str) -> None:
        self.seen: list[dict] = []
        subscribed = threading.Event()
        self._client = httpx.Client(timeout=None)

        def listen() -> None:
            try:
                with self._client.stream("GET", f"{base}/models/sse") as response:
                    assert response.headers["content-type"].startswith("text/event-stream")
                    subscribed.set()
                    for line in response.iter_lines():
                        if line.startswith("data: "):
                            self.seen.append(json.loads(line[6:]))
            except httpx.HTTPError:  # closed at the end of the test
                pass

        threading.Thread(target=listen, daemon=True).start()
        assert subscribed.wait(10)

    def wait(self, event: str, model: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for seen in self.seen:
                if seen["event"] == event and seen["model"] == model:
                    return seen
            time.sleep(0.02)
        raise AssertionError(f"no {event} for {model}: {self.seen}")

    def close(self) -> None:
        self._client.close()


@pytest.fixture()
def hub(tiny_spm, monkeypatch, tmp_path):
    weights = tiny_spm[0].read_bytes()
    repos = {REPO: {"tiny-F32.gguf": weights, "tiny-Q8_0.gguf": weights, "README.md": b"# tiny"},
             "tester/other-GGUF": {"other-F16.gguf": weights}}
    with FakeHub(repos, seconds_per_chunk=0.002) as served:
        monkeypatch.setenv("MODEL_ENDPOINT", served.url)
        monkeypatch.setenv("LLAMA_CACHE", str(tmp_path / "cache"))
        yield served


@pytest.fixture()
def router_preset(tiny_spm, tmp_path):
    preset = tmp_path / "models.ini"
    preset.write_text(f"[*]\nc = 256\n\n[local]\nmodel = {tiny_spm[0]}\nload-on-startup = true\n")
    return preset


def test_a_download_is_listed_served_and_deleted_while_the_server_serves(hub, router_preset, tmp_path):
    with running_server(None, "--models-preset", str(router_preset), "--models-max", "1", "-t", "1") as base, \
            httpx.Client(timeout=60) as client:
        events = Events(base)
        try:
            assert call("POST", f"{base}/models", {"model": MODEL_ID}) == (200, {"success": True})
            assert complete(client, base, "local")[0] == 200  # served meanwhile
            events.wait("download_finished", MODEL_ID)
            progress = [e for e in events.seen if e["event"] == "download_progress" and e["model"] == MODEL_ID]
            size = len(hub.repos[REPO]["tiny-F32.gguf"])
            assert progress and list(progress[-1]["data"]["progress"].values()) == [{"done": size, "total": size}]
            listed = {m["id"]: m for m in call("GET", f"{base}/models")[1]["data"]}
            assert listed[MODEL_ID]["source"] == "cache" and listed[MODEL_ID]["can_remove"] is True
            assert listed[MODEL_ID]["status"] == {"value": "unloaded"}
            assert listed["local"]["status"] == {"value": "loaded"}  # a download takes no model slot
            assert listed["local"]["can_remove"] is False
            assert complete(client, base, MODEL_ID)[0] == 200  # loads like any model (and unloads 'local')
            events.wait("status_change", MODEL_ID)
            status, error = call("POST", f"{base}/models", {"model": MODEL_ID})
            assert status == 400 and "already exists" in error["error"]["message"]

            assert call("DELETE", f"{base}/models?model={MODEL_ID}") == (200, {"success": True})
            events.wait("model_remove", MODEL_ID)
            assert MODEL_ID not in statuses(base)
            assert not list((tmp_path / "cache").rglob("tiny-F32.gguf"))
            assert complete(client, base, MODEL_ID)[0] == 404
            assert complete(client, base, "local")[0] == 200
        finally:
            events.close()


@pytest.mark.parametrize("body, fragment", [
    ({"model": "not-a-repo"}, "expected owner/repo"),
    ({"model": ""}, "expected owner/repo"),
    ({"model": "local"}, "expected owner/repo"),
])
def test_a_bad_download_request_is_a_400(hub, router_preset, body, fragment):
    with running_server(None, "--models-preset", str(router_preset), "-t", "1") as base:
        status, error = call("POST", f"{base}/models", body)
        assert status == 400 and fragment in error["error"]["message"], error


def test_a_failed_download_says_why_and_lists_nothing(hub, router_preset):
    with running_server(None, "--models-preset", str(router_preset), "-t", "1") as base:
        events = Events(base)
        try:
            for model_id, fragment in ((f"{REPO}:Q2_K", "Q2_K"), ("tester/nobody-GGUF:F16", "404")):
                assert call("POST", f"{base}/models", {"model": model_id})[0] == 200
                failed = events.wait("download_failed", model_id)
                assert fragment in failed["data"]["error"], failed
                assert model_id not in statuses(base)
            status, error = call("DELETE", f"{base}/models?model=local")
            assert status == 400 and "not removable" in error["error"]["message"]
            status, error = call("DELETE", f"{base}/models?model=nobody")
            assert status == 404
            assert call("DELETE", f"{base}/models")[0] == 400
        finally:
            events.close()


def test_deleting_a_download_under_way_cancels_it(hub, router_preset, tmp_path):
    hub.seconds_per_chunk = 0.2  # a tiny model's ~20 chunks take seconds
    with running_server(None, "--models-preset", str(router_preset), "-t", "1") as base:
        events = Events(base)
        try:
            assert call("POST", f"{base}/models", {"model": MODEL_ID})[0] == 200
            events.wait("download_progress", MODEL_ID)
            assert statuses(base)[MODEL_ID] == {"value": "downloading"}
            assert call("DELETE", f"{base}/models?model={MODEL_ID}") == (200, {"success": True})
            assert "cancelled" in events.wait("download_failed", MODEL_ID)["data"]["error"]
            assert MODEL_ID not in statuses(base)
            assert not list((tmp_path / "cache").rglob("*.downloadInProgress"))
        finally:
            events.close()


def test_a_preset_names_cached_models_and_dedup_hides_their_cache_entries(hub, tiny_spm, tmp_path):
    from pyllama.server.hf_download import download

    download(MODEL_ID)  # into LLAMA_CACHE, from the fake hub
    download("tester/other-GGUF:F16")
    preset = tmp_path / "models.ini"
    preset.write_text(f"[*]\nc = 256\n\n[chosen]\nhf-repo = {MODEL_ID}\ndedup-cache-models = 1\n")
    with running_server(None, "--models-preset", str(preset), "-t", "1") as base, \
            httpx.Client(timeout=60) as client:
        shown = statuses(base)
        assert set(shown) == {"chosen", "tester/other-GGUF:F16"}  # the cache's own entry of 'chosen' hidden
        assert complete(client, base, "chosen")[0] == 200
        assert complete(client, base, MODEL_ID)[0] == 200  # hidden, still served
        wait_status(base, "chosen", "loaded")
        preset.write_text(f"[*]\nc = 256\n\n[chosen]\nhf-repo = {MODEL_ID}\n")
        listed = {m["id"]: m["status"] for m in call("GET", f"{base}/models?reload=1")[1]["data"]}
        assert set(listed) == {"chosen", MODEL_ID, "tester/other-GGUF:F16"}
        assert listed[MODEL_ID] == {"value": "loaded"}  # shown again at once: hiding changed nothing it runs on


def test_downloads_need_router_mode(hub, tiny_spm):
    with running_server(tiny_spm[0], "-t", "1") as base:
        status, error = call("POST", f"{base}/models", {"model": MODEL_ID})
        assert status == 400 and "router mode" in error["error"]["message"]
