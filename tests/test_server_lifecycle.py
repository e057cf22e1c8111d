"""The model lifecycle of the server (server/model_pool.py), over real sockets: models loaded on
demand within --models-max, unloaded for room, on request (POST /models/unload) or after
--sleep-idle-seconds, and never under a running request; llama-server's router-mode routes."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from server_process import running_server

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

TOKENS = 6  # each completion writes this many tokens (ignore_eos): a cut reply has fewer


@pytest.fixture(scope="module")
def models_folder(tmp_path_factory, tiny_spm, tiny_bpe) -> Path:
    """--models-dir with two models, 'spm' and 'bpe' (one as a subfolder, as llama-server's layout allows)."""
    folder = tmp_path_factory.mktemp("models-dir")
    (folder / "spm.gguf").symlink_to(tiny_spm[0])
    (folder / "bpe").mkdir()
    (folder / "bpe" / "bpe-f32.gguf").symlink_to(tiny_bpe[0])
    return folder


def call(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 60) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def statuses(base: str) -> dict[str, dict[str, Any]]:
    status, listed = call("GET", f"{base}/models")
    assert status == 200
    return {m["id"]: m["status"] for m in listed["data"]}


def wait_status(base: str, model: str, wanted: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (shown := statuses(base)[model])["value"] != wanted:
        assert time.monotonic() < deadline, f"{model} stayed {shown}, never {wanted}"
        time.sleep(0.05)
    return shown


def complete(client: httpx.Client, base: str, model: str, stream: bool = False) -> tuple[int, str, dict[str, Any]]:
    """One completion of TOKENS tokens: (status, text, usage or error)."""
    body = {"model": model, "prompt": "hello world", "max_tokens": TOKENS, "temperature": 0, "ignore_eos": True,
            "stream": stream, **({"stream_options": {"include_usage": True}} if stream else {})}
    if not stream:
        response = client.post(f"{base}/v1/completions", json=body)
        out = response.json()
        if response.status_code != 200:
            return response.status_code, "", out
        return 200, out["choices"][0]["text"], out["usage"]
    text, usage = "", {}
    with client.stream("POST", f"{base}/v1/completions", json=body) as response:
        if response.status_code != 200:
            return response.status_code, "", json.loads(response.read())
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                text += "".join(c["text"] for c in chunk["choices"])
                usage = chunk.get("usage") or usage
    return 200, text, usage


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def metric(base: str, name: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics") as response:
        line = next(line for line in response.read().decode().splitlines() if line.startswith(f"llamacpp:{name} "))
    return float(line.split()[1])


def test_two_models_alternate_under_models_max_1_with_no_request_lost_or_cut(models_folder):
    with running_server(None, "--models-dir", str(models_folder), "--models-max", "1", "-np", "2", "-c", "256",
                        "--n_threads", "1") as base:
        assert statuses(base) == {"spm": {"value": "unloaded"}, "bpe": {"value": "unloaded"}}
        with httpx.Client(timeout=120) as client:  # what each model writes alone, to compare with
            expected = {name: complete(client, base, name)[1] for name in ("spm", "bpe")}
        assert all(expected.values())
        results: list[tuple[str, int, str, dict[str, Any]]] = []

        def client_run(index: int) -> None:
            with httpx.Client(timeout=120) as client:
                for turn in range(4):
                    name = ("spm", "bpe")[(index + turn) % 2]
                    results.append((name, *complete(client, base, name, stream=turn % 2 == 1)))

        threads = [threading.Thread(target=client_run, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert len(results) == 24
        for name, status, text, usage in results:
            assert status == 200, (name, usage)
            assert usage["completion_tokens"] == TOKENS and text == expected[name]  # whole, and from its model
        loaded = [name for name, shown in statuses(base).items() if shown["value"] == "loaded"]
        assert len(loaded) == 1


def test_a_model_that_fails_to_load_answers_its_requests_and_leaves_the_others_serving(tiny_spm, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF but not really" * 100)
    preset = tmp_path / "models.ini"
    preset.write_text(f"[*]\nc = 256\n\n[good]\nmodel = {tiny_spm[0]}\nload-on-startup = true\n\n"
                      f"[broken]\nmodel = {broken}\n\n[missing]\nmodel = {tmp_path / 'gone.gguf'}\n")
    with running_server(None, "--models-preset", str(preset), "--n_threads", "1") as base, \
            httpx.Client(timeout=60) as client:
        assert statuses(base)["good"] == {"value": "loaded"}
        for name in ("broken", "missing"):
            status, _, error = complete(client, base, name)
            assert status == 500 and f"'{name}' could not be loaded" in error["error"]["message"], error
            shown = statuses(base)[name]
            assert shown["value"] == "unloaded" and shown["failed"] is True
        assert "gone.gguf" in statuses(base)["missing"]["error"]
        status, text, usage = complete(client, base, "good")
        assert status == 200 and usage["completion_tokens"] == TOKENS
        status, error = call("POST", f"{base}/v1/completions", {"model": "nobody", "prompt": "hi"})
        assert status == 404 and "'nobody'" in error["error"]["message"]
        _, health = call("GET", f"{base}/health")
        assert health == {"status": "ok"}


def test_reload_reads_the_preset_again(tiny_spm, tiny_bpe, tmp_path):
    """GET /models?reload=1, as llama-server's: a new model is listed, not loaded; a removed one goes
    (one that runs, once it is unloaded); a changed one takes its new settings."""
    preset = tmp_path / "models.ini"
    preset.write_text(f"[*]\nc = 256\n\n[a]\nmodel = {tiny_spm[0]}\nload-on-startup = true\n\n"
                      f"[b]\nmodel = {tiny_spm[0]}\n")
    with running_server(None, "--models-preset", str(preset), "--n_threads", "1") as base, \
            httpx.Client(timeout=60) as client:
        assert statuses(base) == {"a": {"value": "loaded"}, "b": {"value": "unloaded"}}
        preset.write_text(f"[*]\nc = 256\n\n[b]\nmodel = {tiny_bpe[0]}\n\n[c]\nmodel = {tiny_spm[0]}\n")
        assert set(statuses(base)) == {"a", "b"}  # read again only when asked
        status, listed = call("GET", f"{base}/models?reload=1")
        assert status == 200 and {m["id"] for m in listed["data"]} >= {"b", "c"}
        assert next(m for m in listed["data"] if m["id"] == "b")["path"] == str(tiny_bpe[0])
        deadline = time.monotonic() + 60
        while "a" in statuses(base):  # it ran: unloaded first, then gone
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert statuses(base) == {"b": {"value": "unloaded"}, "c": {"value": "unloaded"}}
        assert complete(client, base, "c")[0] == 200 and complete(client, base, "a")[0] == 404
        preset.write_text("[broken\n")
        status, error = call("GET", f"{base}/models?reload=1")
        assert status == 500 and "could not be read again" in error["error"]["message"]
        assert set(statuses(base)) == {"b", "c"}  # nothing changed


def test_load_and_unload_on_request_and_the_router_props(models_folder):
    with running_server(None, "--models-dir", str(models_folder), "--models-max", "2", "--no-models-autoload",
                        "-c", "256", "--n_threads", "1") as base, httpx.Client(timeout=60) as client:
        status, props = call("GET", f"{base}/props")
        assert status == 200 and props["role"] == "router"
        assert props["max_instances"] == 2 and props["models_autoload"] is False
        status, error = complete(client, base, "spm")[::2]
        assert status == 400 and "not loaded" in error["error"]["message"]
        assert call("POST", f"{base}/models/load", {"model": "spm"}) == (200, {"success": True})
        wait_status(base, "spm", "loaded")
        assert call("POST", f"{base}/models/load", {"model": "spm"})[0] == 400  # already loaded
        assert complete(client, base, "spm")[0] == 200
        # ?autoload=true loads it for this request, as llama-server's router does
        response = client.post(f"{base}/v1/completions?autoload=true",
                               json={"model": "bpe", "prompt": "hi", "max_tokens": 2})
        assert response.status_code == 200
        assert call("POST", f"{base}/models/unload", {"model": "spm"}) == (200, {"success": True})
        wait_status(base, "spm", "unloaded")
        assert call("POST", f"{base}/models/unload", {"model": "spm"})[0] == 400  # not loaded
        assert call("POST", f"{base}/models/load", {"model": "nobody"})[0] == 404


def test_an_unload_waits_for_the_running_request(models_folder):
    with running_server(None, "--models-dir", str(models_folder), "-c", "512", "--n_threads", "1") as base, \
            httpx.Client(timeout=60) as client:
        body = {"model": "spm", "prompt": "hello", "max_tokens": 300, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        usage, seen = {}, 0
        with client.stream("POST", f"{base}/v1/completions", json=body) as response:
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                seen += 1
                if seen == 3:  # running: ask for the unload now
                    assert call("POST", f"{base}/models/unload", {"model": "spm"}) == (200, {"success": True})
                    assert statuses(base)["spm"]["value"] == "loaded"
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                usage = chunk.get("usage") or usage
        assert usage["completion_tokens"] == 300
        wait_status(base, "spm", "unloaded")


def test_sleep_unloads_an_idle_model_and_the_next_request_loads_it_again(tmp_path):
    """--sleep-idle-seconds in single-model mode, and what an unload gives back (RSS; in the note)."""
    from models import Shape, write_llama

    path = tmp_path / "bigger.gguf"  # ~64 MB of F32 weights: an unload that frees them shows in RSS
    write_llama(path, "spm", shape=Shape(n_embd=512, n_head=8, n_head_kv=8, n_layer=8, n_ff=1024), seed=5)
    size_kib = path.stat().st_size >> 10
    with running_server(path, "--sleep-idle-seconds", "1", "-c", "2048", "--n_threads", "1", "--no-mmap",
                        "--metrics") as base, httpx.Client(timeout=60) as client:
        _, props = call("GET", f"{base}/props")
        assert props["is_sleeping"] is False
        assert complete(client, base, "any")[0] == 200
        loaded = rss_kib(base.pid)
        # throughput since the last scrape, as llama-server's buckets: this generation's, then none
        assert metric(base, "predicted_tokens_seconds") > 0
        assert metric(base, "predicted_tokens_seconds") == 0
        deadline = time.monotonic() + 20
        while not call("GET", f"{base}/props")[1]["is_sleeping"]:
            assert time.monotonic() < deadline, "the server did not go to sleep"
            time.sleep(0.1)
        asleep = rss_kib(base.pid)
        # these do not wake it
        assert call("GET", f"{base}/health") == (200, {"status": "ok"})
        assert [m["id"] for m in call("GET", f"{base}/v1/models")[1]["data"]] == ["bigger.gguf"]
        assert metric(base, "tokens_predicted_total") == TOKENS  # the counters outlive the unload
        assert call("GET", f"{base}/props")[1]["is_sleeping"] is True
        started = time.perf_counter()
        status, text, usage = complete(client, base, "any", stream=True)
        cold = time.perf_counter() - started
        assert status == 200 and usage["completion_tokens"] == TOKENS
        assert call("GET", f"{base}/props")[1]["is_sleeping"] is False
        assert metric(base, "tokens_predicted_total") == 2 * TOKENS
        print(f"RSS: model file {size_kib} KiB; loaded {loaded} KiB, asleep {asleep} KiB; "
              f"cold request (load + {TOKENS} tokens) {cold:.2f} s")
        assert asleep < loaded - size_kib // 2  # the weights went back
