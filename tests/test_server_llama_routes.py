"""What users of llama-server find in pyllama's server: its flags, CORS, /slots and slot files,
/infill, /apply-template, context shifting, several choices and prompts, n_probs, model
aliases and tags. Real servers over real sockets."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import urllib.error
import urllib.request

import gguf
import numpy as np
import pytest

from models import spm_vocab, write_llama
from server_process import running_server
from test_server import READABLE, post

GREEDY = {"temperature": 0, "logit_bias": READABLE}


def request(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    call = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(call, timeout=60) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tiny_spm, tmp_path_factory):
    slots = tmp_path_factory.mktemp("slots")
    with running_server(tiny_spm[0], "-c", "1024", "-np", "2", "-t", "2", "-a", "tiny,small", "--tags", "chat,test",
                        "--slot-save-path", str(slots), "--cors-origins", "localhost", "--api-key", "k1,k2") as base:
        yield base


KEY = {"Authorization": "Bearer k2"}


def test_llama_server_flags_parse(tiny_spm):
    from pyllama.server.settings import parse

    settings = parse(["-m", str(tiny_spm[0]), "-c", "2048", "-np", "3", "-ngl", "5", "-t", "2", "-b", "256", "-ub",
                      "128", "--embedding", "--no-context-shift", "-ctk", "q8_0", "--temp", "0.3", "-s", "7",
                      "-n", "9", "--host", "127.0.0.1,127.0.0.2", "--no-webui", "-fa", "off"])
    assert (settings.n_ctx, settings.n_parallel, settings.n_gpu_layers, settings.n_threads, settings.n_batch,
            settings.n_ubatch) == (2048, 3, 5, 2, 256, 128)
    assert settings.embedding and not settings.context_shift and settings.cache_type_k == "q8_0"
    assert (settings.temperature, settings.seed, settings.n_predict) == (0.3, 7, 9)
    assert settings.hosts == ("127.0.0.1", "127.0.0.2") and not settings.webui and settings.flash_attn is False
    old = parse(["--model", str(tiny_spm[0]), "--n_ctx", "512", "--embedding", "false", "--n-gpu-layers", "2"])
    assert (old.n_ctx, old.embedding, old.n_gpu_layers) == (512, False, 2)
    for bad in (["-ctk", "q3_x"], ["--pooling", "sum"], ["--slot-save-path", "/nonexistent/folder"]):
        with pytest.raises(SystemExit):
            parse(["-m", str(tiny_spm[0]), *bad])


def test_cors_preflight_needs_no_key_and_only_local_origins_pass(server):
    status, headers, _ = request("OPTIONS", f"{server}/v1/chat/completions", {
        "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"})
    assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "POST" in headers["access-control-allow-methods"]
    status, headers, _ = request("OPTIONS", f"{server}/v1/chat/completions", {"Origin": "http://localhost.evil.com"})
    assert status == 200 and "access-control-allow-origin" not in headers
    status, headers, _ = request("GET", f"{server}/v1/models", {"Origin": "http://127.0.0.1:3000", **KEY})
    assert status == 200 and headers["access-control-allow-origin"] == "http://127.0.0.1:3000"
    status, headers, _ = request("GET", f"{server}/v1/models", {"Origin": "http://127.0.0.1:3000"})
    assert status == 401 and headers["access-control-allow-origin"] == "http://127.0.0.1:3000"  # readable error


def test_models_list_aliases_and_tags_and_props(server):
    status, _, raw = request("GET", f"{server}/models", KEY)
    model = json.loads(raw)["data"][0]
    assert status == 200 and model["id"] == "tiny" and model["aliases"] == ["tiny", "small"]
    assert model["tags"] == ["chat", "test"] and model["meta"]["n_vocab"] > 0
    _, _, raw = request("GET", f"{server}/props", KEY)
    props = json.loads(raw)
    assert props["model_path"].endswith(".gguf") and props["total_slots"] == 2
    assert props["default_generation_settings"]["params"]["top_k"] == 40


def test_several_prompts_and_choices(server):
    status, out, _ = post(f"{server}/v1/completions", {"prompt": ["hello", "the planets"], "n": 2, "max_tokens": 6,
                                                       **GREEDY}, KEY)
    assert status == 200 and [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
    texts = [c["text"] for c in out["choices"]]
    assert texts[0] == texts[1] and texts[2] == texts[3] and texts[0] != texts[2]  # greedy: a prompt's choices agree
    alone = post(f"{server}/v1/completions", {"prompt": "the planets", "max_tokens": 6, **GREEDY}, KEY)[1]
    assert alone["choices"][0]["text"] == texts[2]
    status, out, _ = post(f"{server}/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 3,
                                                            "max_tokens": 4, "seed": 5, "temperature": 1.5}, KEY)
    assert status == 200 and len(out["choices"]) == 3 and out["usage"]["completion_tokens"] <= 12


def test_llama_completion_fields(server):
    status, out, _ = post(f"{server}/completion", {"prompt": "hello world", "n_predict": 5, "n_probs": 3,
                                                   "return_tokens": True, **GREEDY}, KEY)
    assert status == 200 and out["stop"] and out["stop_type"] == "limit" and out["tokens_predicted"] == 5
    assert len(out["tokens"]) == 5 and len(out["completion_probabilities"]) == 5
    first = out["completion_probabilities"][0]
    assert first["id"] == out["tokens"][0] and len(first["top_logprobs"]) == 3
    assert first["top_logprobs"][0]["logprob"] >= first["top_logprobs"][1]["logprob"]
    assert out["timings"]["predicted_n"] == 5 and out["timings"]["prompt_n"] > 0
    mixed = post(f"{server}/completion", {"prompt": [1, "hello world"], "n_predict": 2, **GREEDY}, KEY)[1]
    plain = post(f"{server}/completion", {"prompt": "hello world", "n_predict": 2, **GREEDY}, KEY)[1]
    assert mixed["content"] == plain["content"]  # ids and text mixed, as llama.cpp reads them
    status, out, _ = post(f"{server}/completion", {"prompt": "hello", "n_predict": 20, "stop": ["a", "e"],
                                                   "temperature": 0}, KEY)
    assert status == 200 and (out["stop_type"] != "word" or out["stopping_word"] in ("a", "e"))


def test_logit_bias_forms(server):
    tokens = post(f"{server}/tokenize", {"content": " planets"}, KEY)[1]["tokens"]
    for bias in ([[t, False] for t in tokens], {" planets": False}, {str(t): -100 for t in tokens}):
        status, out, _ = post(f"{server}/completion", {"prompt": "the planets the planets the", "n_predict": 8,
                                                       "return_tokens": True, "temperature": 0,
                                                       "logit_bias": bias}, KEY)
        assert status == 200 and not set(out["tokens"]) & set(tokens), bias
    status, out, _ = post(f"{server}/completion", {"prompt": "x", "logit_bias": [[10**6, 1]]}, KEY)
    assert status == 400 and out["error"]["param"] == "logit_bias"


def test_apply_template_and_tokenize_pieces(server):
    status, out, _ = post(f"{server}/apply-template", {"messages": [{"role": "user", "content": "hello there"}]}, KEY)
    assert status == 200 and "hello there" in out["prompt"] and "<|im_start|>" in out["prompt"]  # chatml fallback
    status, out, _ = post(f"{server}/tokenize", {"content": "hi 你好", "with_pieces": True}, KEY)
    assert status == 200 and all({"id", "piece"} <= set(t) for t in out["tokens"])
    assert "".join(t["piece"] for t in out["tokens"] if isinstance(t["piece"], str)).strip().startswith("hi")


def test_slots_and_slot_files(server):
    status, _, raw = request("GET", f"{server}/slots", KEY)
    assert status == 200 and [s["id"] for s in json.loads(raw)] == [0, 1]
    prompt = {"prompt": "the planets of the solar system are", "n_predict": 4, "id_slot": 1, **GREEDY}
    first = post(f"{server}/completion", prompt, KEY)[1]
    saved = post(f"{server}/slots/1?action=save", {"filename": "one.bin"}, KEY)
    assert saved[0] == 200 and saved[1]["n_saved"] > 0
    restored = post(f"{server}/slots/0?action=restore", {"filename": "one.bin"}, KEY)
    assert restored[0] == 200 and restored[1]["n_restored"] == saved[1]["n_saved"]
    again = post(f"{server}/completion", {**prompt, "id_slot": 0}, KEY)[1]
    assert again["content"] == first["content"] and again["timings"]["prompt_n"] == 1  # all but one reused
    assert post(f"{server}/slots/0?action=erase", {}, KEY)[1]["n_erased"] > 0
    for name in ("../one.bin", "/etc/passwd", ".hidden", "a/b.bin", "..", ""):
        status, out, _ = post(f"{server}/slots/0?action=save", {"filename": name}, KEY)
        assert status == 400 and out["error"]["param"] == "filename", name
    assert post(f"{server}/slots/0?action=restore", {"filename": "missing.bin"}, KEY)[0] == 404
    assert post(f"{server}/slots/7?action=erase", {}, KEY)[0] == 400
    assert post(f"{server}/completion", {"prompt": "x", "id_slot": 9}, KEY)[0] == 400


def test_slot_files_are_off_without_a_folder(tiny_spm):
    with running_server(tiny_spm[0], "-c", "256", "--no-slots") as base:
        assert post(f"{base}/slots/0?action=save", {"filename": "x.bin"})[0] == 501
        assert request("GET", f"{base}/slots")[0] == 501


def test_context_shift_lets_a_reply_outgrow_the_context(tiny_spm):
    with running_server(tiny_spm[0], "-c", "256", "-np", "1", "--context-shift") as base:
        status, out, _ = post(f"{base}/completion", {"prompt": "hello world", "n_predict": 600, "n_keep": 2,
                                                     **GREEDY})
        assert status == 200 and out["tokens_predicted"] == 600 and out["stop_type"] == "limit" and out["truncated"]
    with running_server(tiny_spm[0], "-c", "256", "-np", "1") as base:
        status, out, _ = post(f"{base}/completion", {"prompt": "hello world", **GREEDY})
        assert status == 200 and out["tokens_predicted"] < 256 and out["stop_type"] == "limit" and out["truncated"]
        status, out, _ = post(f"{base}/completion", {"prompt": "hello world", "n_predict": 8, **GREEDY})
        assert not out["truncated"]  # its own limit, not the context's
        status, out, _ = post(f"{base}/v1/completions", {"prompt": "hello world", "max_tokens": 100000, **GREEDY})
        usage = out["usage"]  # a limit past the room is cut to it, as in llama-server and llama-cpp-python
        assert status == 200 and out["choices"][0]["finish_reason"] == "length"
        assert usage["prompt_tokens"] + usage["completion_tokens"] == 256


def test_infill_on_a_model_with_fim_tokens(models_dir):
    vocab = spm_vocab()
    fim = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_repo|>", "<|file_sep|>"]
    vocab = dataclasses.replace(vocab, tokens=vocab.tokens + fim,
                                types=vocab.types + [int(gguf.TokenType.CONTROL)] * len(fim),
                                scores=vocab.scores + [0.0] * len(fim))
    path = models_dir / "fim.gguf"
    write_llama(path, vocab, seed=9)
    with running_server(path, "-c", "512") as base:
        body = {"input_prefix": "def add(a, b):\n    ", "input_suffix": "\n", "n_predict": 6, **GREEDY,
                "input_extra": [{"filename": "util.py", "text": "x = 1\n"}], "return_tokens": True}
        status, out, _ = post(f"{base}/infill", body)
        assert status == 200 and out["tokens_predicted"] == 6 and len(out["tokens"]) == 6
        tokens = post(f"{base}/tokenize", {"content": "".join(fim), "parse_special": True})[1]["tokens"]
        assert out["tokens_evaluated"] > len(tokens)
        status, out, _ = post(f"{base}/v1/completions", {"prompt": "def f():", "suffix": "\n", "max_tokens": 3})
        assert status == 200


def test_request_defaults_and_several_hosts(tiny_spm):
    with running_server(tiny_spm[0], "-c", "256", "--temp", "0", "-n", "5", "--host", "127.0.0.1,127.0.0.2") as base:
        outs = [post(f"{base.replace('127.0.0.1', host)}/completion", {"prompt": "hello", "logit_bias": READABLE})[1]
                for host in ("127.0.0.1", "127.0.0.2")]
        assert [o["tokens_predicted"] for o in outs] == [5, 5] and outs[0]["content"] == outs[1]["content"]


def test_embeddings_take_token_ids_and_base64(tiny_bert):
    with running_server(tiny_bert[0], "--embedding", "-c", "128") as base:
        ids = post(f"{base}/tokenize", {"content": "hello world", "add_special": True})[1]["tokens"]
        by_text = post(f"{base}/v1/embeddings", {"input": "hello world"})[1]["data"][0]["embedding"]
        by_ids = post(f"{base}/v1/embeddings", {"input": ids})[1]["data"][0]["embedding"]
        assert by_ids == pytest.approx(by_text, abs=1e-5)
        native = post(f"{base}/embeddings", {"input": [{"prompt_string": "hello world"}, [ids[0], "hello world"]],
                                             "embd_normalize": -1})[1]
        assert [item["index"] for item in native] == [0, 1] and len(native[0]["embedding"]) == 1  # one pooled row
        assert np.linalg.norm(native[0]["embedding"][0]) != pytest.approx(1.0)  # not normalized, as asked
        status, out, _ = post(f"{base}/v1/embeddings", {"input": "hello " * 200})
        assert status == 400 and "too large" in out["error"]["message"]
        packed = post(f"{base}/v1/embeddings", {"input": ["hello world"], "encoding_format": "base64"})[1]
        vector = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype=np.float32)
        assert vector.tolist() == pytest.approx(by_text, abs=1e-5)


def test_metrics_with_llama_server_names(tiny_spm):
    with running_server(tiny_spm[0], "-c", "256") as base:
        assert request("GET", f"{base}/metrics")[0] == 501  # off unless asked for, as llama-server
    with running_server(tiny_spm[0], "-c", "256", "-np", "1", "--metrics") as base:
        for _ in range(2):
            timings = post(f"{base}/completion", {"prompt": "the planets of the solar", "n_predict": 4,
                                                  **GREEDY})[1]["timings"]
        status, headers, raw = request("GET", f"{base}/metrics")
        assert status == 200 and headers["process-start-time-unix"].isdigit()
        values = dict(line.split(" ", 1) for line in raw.decode().splitlines() if line.startswith("llamacpp:"))
        assert float(values["llamacpp:tokens_predicted_total"]) == 8
        assert float(values["llamacpp:prompt_tokens_cached_total"]) == timings["cache_n"] > 0
        assert float(values["llamacpp:n_decode_total"]) > 0 and float(values["llamacpp:requests_processing"]) == 0
        assert "# TYPE llamacpp:prompt_tokens_seconds gauge" in raw.decode()


def test_llama_server_result_details(server):
    out = post(f"{server}/completion", {"prompt": "hello", "n_predict": 3, "ignore_eos": True, **GREEDY}, KEY)[1]
    eog = [entry for entry in out["generation_settings"]["logit_bias"] if entry["bias"] is None]
    assert eog and out["generation_settings"]["n_predict"] == 3  # EOS can never be sampled
    out = post(f"{server}/completion", {"prompt": "hello", "n_predict": 3, "temperature": 0,
                                        "response_fields": ["content", "generation_settings/n_predict", "prompt"]},
               KEY)[1]
    assert set(out) == {"content", "generation_settings/n_predict", "prompt"} and out["prompt"].startswith("<s>")
    one = post(f"{server}/completion", {"prompt": "hello", "n_predict": 1, **GREEDY}, KEY)[1]["timings"]
    assert one["predicted_n"] == 1 and one["predicted_per_second"] == 0.0  # the first token costs no decode
    status, out, _ = post(f"{server}/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 5000}]}, KEY)
    assert status == 400 and out["error"]["type"] == "exceed_context_size_error"
    assert out["error"]["code"] == "context_length_exceeded" and out["error"]["n_prompt_tokens"] > 1024


def test_an_assistant_prefill_is_continued(server):
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Whill"}]
    prompt = post(f"{server}/apply-template", {"messages": messages}, KEY)[1]["prompt"]
    assert prompt.endswith("<|im_start|>assistant\nWhill")  # continued, not closed
    status, out, _ = post(f"{server}/apply-template", {"messages": messages, "continue_final_message": True,
                                                       "add_generation_prompt": True}, KEY)
    assert status == 400


def test_a_plain_request_whose_client_left_frees_its_slot(tiny_spm):
    with running_server(tiny_spm[0], "-c", "256", "-np", "1", "--context-shift") as base:
        body = json.dumps({"prompt": "hello", "n_predict": 100000, **GREEDY}).encode()  # minutes of work
        try:
            urllib.request.urlopen(urllib.request.Request(f"{base}/completion", body,
                                                          {"Content-Type": "application/json"}), timeout=1)
        except (TimeoutError, urllib.error.URLError):
            pass
        for _ in range(100):
            slot = json.loads(request("GET", f"{base}/slots")[2])[0]
            if not slot["is_processing"]:
                break
            time.sleep(0.1)
        assert not slot["is_processing"] and slot["next_token"][0]["n_remain"] == -1
        assert slot["n_cached"] > 2  # it did generate before the client left


def test_slots_can_have_their_own_share_of_the_context(tiny_spm):
    with running_server(tiny_spm[0], "-c", "512", "-np", "2", "--no-kv-unified") as base:
        assert get(f"{base}/props")["default_generation_settings"]["n_ctx"] == 256
        status, out, _ = post(f"{base}/completion", {"prompt": "hello world " * 30, "n_predict": 4})
        assert status == 400 and out["error"]["n_ctx"] == 256
        status, out, _ = post(f"{base}/completion", {"prompt": "hello", **GREEDY})
        assert status == 200 and out["tokens_predicted"] < 256


def stream(url: str, body: dict, headers: dict[str, str]) -> list[dict]:
    """The JSON events of a server-sent event stream."""
    call = urllib.request.Request(url, data=json.dumps({**body, "stream": True}).encode(),
                                  headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(call, timeout=60) as response:
        lines = response.read().decode().splitlines()
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def test_llama_server_telemetry_fields(server):
    chat = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, **GREEDY}
    chunks = stream(f"{server}/v1/chat/completions", {**chat, "timings_per_token": True, "return_progress": True,
                                                      "stream_options": {"include_usage": True}}, KEY)
    progress = [c["prompt_progress"] for c in chunks if "prompt_progress" in c]
    assert progress and progress[-1]["processed"] == progress[-1]["total"] > 0
    replies = [c for c in chunks if c.get("choices")]
    counts = [c["timings"]["predicted_n"] for c in replies if "timings" in c]
    assert "timings" not in replies[0] and counts == sorted(counts) and len(counts) >= 2  # the timings so far
    assert chunks[-1]["choices"] == [] and chunks[-1]["timings"]["predicted_n"] == 4  # the final timings, last
    assert "__verbose" not in post(f"{server}/v1/chat/completions", chat, KEY)[1]
    seen = post(f"{server}/v1/chat/completions", {**chat, "verbose": True}, KEY)[1]["__verbose"]
    assert seen["prompt"].endswith("<|im_start|>assistant\n") and seen["n_prompt_tokens"] > 3
    count = post(f"{server}/v1/chat/completions/input_tokens", {"messages": chat["messages"]}, KEY)[1]
    assert count["input_tokens"] == seen["n_prompt_tokens"]
    by_object = post(f"{server}/completion", {"prompt": {"prompt_string": "hello"}, "n_predict": 3, **GREEDY},
                     KEY)[1]
    plain = post(f"{server}/completion", {"prompt": "hello", "n_predict": 3, **GREEDY}, KEY)[1]
    assert by_object["content"] == plain["content"]


def test_text_parts_of_a_prefill_join_with_a_blank_line(server):
    messages = [{"role": "user", "content": "hello"},
                {"role": "assistant", "content": [{"type": "text", "text": "Wh"}, {"type": "text", "text": "ill"}]}]
    prompt = post(f"{server}/apply-template", {"messages": messages}, KEY)[1]["prompt"]
    assert prompt.endswith("<|im_start|>assistant\nWh\n\nill")  # as llama.cpp joins a continued message's parts


def test_embeddings_count_in_the_metrics(tiny_bert):
    with running_server(tiny_bert[0], "--embedding", "-c", "128", "--metrics") as base:
        assert post(f"{base}/v1/embeddings", {"input": ["hello world", "goodbye world"]})[0] == 200
        raw = request("GET", f"{base}/metrics")[2].decode()
        values = dict(line.split(" ", 1) for line in raw.splitlines() if line.startswith("llamacpp:"))
        assert float(values["llamacpp:prompt_tokens_total"]) > 4 and float(values["llamacpp:n_decode_total"]) == 2
        assert float(values["llamacpp:tokens_predicted_total"]) == 0


def test_drafting_shows_in_the_timings(tiny_spm):
    with running_server(tiny_spm[0], "-c", "512", "-np", "1", "--spec-type", "ngram-simple") as base:
        prompt = "one two three four five six seven eight nine ten " * 4
        timings = post(f"{base}/completion", {"prompt": prompt, "n_predict": 16, **GREEDY})[1]["timings"]
        assert timings["draft_n"] > 0 and 0 <= timings["draft_n_accepted"] <= timings["draft_n"]
    with running_server(tiny_spm[0], "-c", "512", "-np", "1") as base:
        assert "draft_n" not in post(f"{base}/completion", {"prompt": "hello", "n_predict": 2, **GREEDY})[1]["timings"]
