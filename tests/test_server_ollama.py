"""Ollama's API (/api/*) over real sockets, driven by the official ``ollama`` client and by raw HTTP:
listing, show (capabilities true to each model), ps, chat and generate on the chat path (NDJSON
streams, tools, format, images), embeddings, keep_alive 0 unloading, Ollama's error shape."""

from __future__ import annotations

import base64
import json
import math
import time
import urllib.error
import urllib.request

import jsonschema
import ollama
import pytest

import pyllama
from pyllama.chat import chat_template

from media_models import png, square
from models import write_bert, write_llama
from server_process import running_server

# A template that renders tools (Hermes style) and opens a thinking block when asked to think
TOOLS_THINKING = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}"
    "{% if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools><|im_end|>\n"
    "{% endif %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
FORCED_CALL = 'root ::= "' + CALL.replace('"', '\\"') + '"'  # GBNF: the model can only write this call
AGE = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 99},
                                        "ok": {"type": "boolean"}}, "required": ["age", "ok"]}
HI = [{"role": "user", "content": "hello world, the planets"}]
GREEDY = {"temperature": 0, "num_predict": 12}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_spm, tiny_bert):
    folder = tmp_path_factory.mktemp("ollama")
    tools = folder / "tiny-tools.gguf"
    write_llama(tools, "spm", seed=4, chat_template=TOOLS_THINKING)
    config = folder / "models.json"
    config.write_text(json.dumps({"n_ctx": 2048, "n_parallel": 2, "n_threads": 2, "models": [
        {"model": str(tiny_spm[0]), "model_alias": "plain"},
        {"model": str(tools), "model_alias": "tools"},
        {"model": str(tiny_bert[0]), "model_alias": "embed", "embedding": True}]}))
    with running_server(None, "--config", str(config)) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=server)


def post(url: str, body, method: str = "POST") -> tuple[int, str, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode(), {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), {k.lower(): v for k, v in error.headers.items()}


def lines(text: str) -> list[dict]:
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


# --- listing and describing ------------------------------------------------------------------
def test_version_tags_and_show(client, server, tiny_spm):
    version = json.loads(urllib.request.urlopen(f"{server}/api/version").read())["version"]
    assert all(part.isdigit() for part in version.split("."))  # VS Code's Copilot compares it to a minimum
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {"plain:latest", "tools:latest", "embed:latest"}
    plain = listed["plain:latest"]
    assert plain.size == tiny_spm[0].stat().st_size and plain.details.format == "gguf"
    assert plain.details.family == "llama" and plain.details.quantization_level == "F32"
    shown = client.show("plain")
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.block_count"] == 2 and isinstance(shown.modelinfo["llama.context_length"], int)
    assert shown.modelinfo["tokenizer.ggml.tokens"] == []  # long arrays only with verbose, as Ollama
    verbose = json.loads(post(f"{server}/api/show", {"model": "plain", "verbose": True})[1])["model_info"]
    assert len(verbose["tokenizer.ggml.tokens"]) == len(verbose["tokenizer.ggml.scores"]) > 5
    with pyllama.Model(tiny_spm[0], vocab_only=True) as model:  # no template of its own: chatml stands in
        assert shown.template == chat_template(model).source and "<|im_start|>" in shown.template
    assert shown.details.parameter_size == f"{sum(w.size for w in tiny_spm[1].values()) / 1e3:.1f}K"  # 120.5K
    assert client.show("plain:latest").capabilities == shown.capabilities  # the tag Ollama adds


def test_capabilities_are_what_each_model_can_do(client):
    assert client.show("plain").capabilities == ["completion"]  # no tools or thinking in its template
    assert client.show("tools").capabilities == ["completion", "tools", "thinking"]
    assert client.show("embed").capabilities == ["embedding"]  # a BERT: pooled, served with --embedding
    with pytest.raises(ollama.ResponseError) as failed:
        client.chat("plain", messages=HI, tools=[WEATHER])
    assert failed.value.status_code == 400 and "does not support tools" in failed.value.error
    with pytest.raises(ollama.ResponseError) as failed:
        client.chat("plain", messages=HI, think=True)
    assert failed.value.status_code == 400 and "does not support thinking" in failed.value.error


def test_ps_lists_the_loaded_models(client):
    running = {m.model: m for m in client.ps().models}
    assert {"plain:latest", "tools:latest", "embed:latest"} <= set(running)
    assert running["plain:latest"].context_length == 1024 and running["plain:latest"].size > 0  # 2048 over 2 slots


# --- chat and generate --------------------------------------------------------------------------
def test_chat_plain_and_streamed_agree(client):
    whole = client.chat("plain", messages=HI, options=GREEDY)
    assert whole.done and whole.done_reason in ("stop", "length") and whole.message.role == "assistant"
    assert 0 < whole.eval_count <= 12 and whole.prompt_eval_count > 0
    assert whole.total_duration >= whole.eval_duration > 0 and whole.prompt_eval_duration > 0
    parts = list(client.chat("plain", messages=HI, options=GREEDY, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert (parts[-1].eval_count, parts[-1].done_reason) == (whole.eval_count, whole.done_reason)


def test_logprobs(client):
    out = client.chat("plain", messages=HI, options=GREEDY, logprobs=True, top_logprobs=2)
    assert len(out.logprobs) == out.eval_count and all(len(p.top_logprobs) == 2 for p in out.logprobs)
    assert "".join(p.token for p in out.logprobs) == out.message.content
    assert all(p.logprob == max(t.logprob for t in p.top_logprobs) for p in out.logprobs)  # greedy: the best
    parts = list(client.chat("plain", messages=HI, options=GREEDY, logprobs=True, top_logprobs=2, stream=True))
    assert [p.token for part in parts for p in part.logprobs or []] == [p.token for p in out.logprobs]


def test_greedy_chat_equals_the_openai_route(server):
    for messages in (HI, [{"role": "system", "content": "Be brief."}, *HI]):
        status, text, _ = post(f"{server}/api/chat", {"model": "plain", "messages": messages, "stream": False,
                                                      "options": {"temperature": 0, "num_predict": 16, "top_k": 5}})
        assert status == 200, text
        status, openai, _ = post(f"{server}/v1/chat/completions", {"model": "plain", "messages": messages,
                                                                   "temperature": 0, "max_tokens": 16, "top_k": 5})
        openai = json.loads(openai)
        assert json.loads(text)["message"]["content"] == openai["choices"][0]["message"]["content"]
        assert json.loads(text)["eval_count"] == openai["usage"]["completion_tokens"]
        assert json.loads(text)["prompt_eval_count"] == openai["usage"]["prompt_tokens"]


def test_ndjson_framing_and_the_final_line(server):
    body = {"model": "plain", "messages": HI, "options": GREEDY}
    status, text, headers = post(f"{server}/api/chat", body)
    assert status == 200 and headers["content-type"].startswith("application/x-ndjson")
    stream = lines(text)
    assert [line["done"] for line in stream] == [False] * (len(stream) - 1) + [True]
    final = stream[-1]
    assert final["done_reason"] in ("stop", "length") and final["message"] == {"role": "assistant", "content": ""}
    for field in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
                  "eval_duration"):
        assert isinstance(final[field], int), field
    assert final["model"] == "plain" and final["created_at"].endswith("Z")
    status, whole, headers = post(f"{server}/api/chat", {**body, "stream": False})
    assert headers["content-type"].startswith("application/json")
    assert "".join(line["message"]["content"] for line in stream) == json.loads(whole)["message"]["content"]
    assert final["eval_count"] == json.loads(whole)["eval_count"]
    status, text, _ = post(f"{server}/api/chat", {**body, "options": {"temperature": 0, "num_predict": 3}})
    assert lines(text)[-1]["done_reason"] == "length" and lines(text)[-1]["eval_count"] == 3


def test_tools_through_the_client(client):
    options = {"temperature": 0, "num_predict": 160, "grammar": FORCED_CALL}  # llama.cpp's grammar, passed through
    out = client.chat("tools", messages=[{"role": "user", "content": "weather in Oslo?"}], tools=[WEATHER],
                      options=options)
    call = out.message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("get_weather", {"city": "Oslo"})
    assert out.done_reason == "stop" and not out.message.content
    streamed = [p for p in client.chat("tools", messages=[{"role": "user", "content": "weather in Oslo?"}],
                                       tools=[WEATHER], options=options, stream=True) if p.message.tool_calls]
    assert [c.function.arguments for p in streamed for c in p.message.tool_calls] == [{"city": "Oslo"}]
    # the round trip: the call and its result reach the template (its prompt grows by them)
    history = [{"role": "user", "content": "weather in Oslo?"}, out.message,
               {"role": "tool", "content": "11 degrees", "tool_name": "get_weather"}]
    after = client.chat("tools", messages=history, tools=[WEATHER], options=GREEDY)
    alone = client.chat("tools", messages=history[:1], tools=[WEATHER], options=GREEDY)
    assert after.prompt_eval_count > alone.prompt_eval_count + 10
    without_tools = client.chat("tools", messages=history[:1], options=GREEDY)
    assert alone.prompt_eval_count > without_tools.prompt_eval_count  # the tools were rendered


def test_format_schema_and_json(client):
    out = client.chat("plain", messages=[{"role": "user", "content": "age?"}], format=AGE,
                      options={"temperature": 0.7, "seed": 3, "num_predict": 64})
    jsonschema.validate(json.loads(out.message.content), AGE)
    ascii_only = {str(3 + b): -100 for b in range(0x80, 0x100)}  # llama.cpp's logit_bias, passed through options
    out = client.generate("plain", "age?", format="json", options={"seed": 5, "num_predict": 400,
                                                                   "logit_bias": ascii_only})
    assert out.done_reason == "stop" and isinstance(json.loads(out.response), dict)


def test_thinking_switch_reaches_the_template(client):
    on = client.chat("tools", messages=HI, think=True, options=GREEDY)
    off = client.chat("tools", messages=HI, think=False, options=GREEDY)
    assert off.prompt_eval_count > on.prompt_eval_count  # think false: the template closes the block at once
    forced = {"temperature": 0, "num_predict": 64, "grammar": 'root ::= "<think>sky</think>blue"'}
    out = client.chat("tools", messages=HI, options=forced)  # a thinking model thinks unless told not to
    assert (out.message.thinking, out.message.content) == ("sky", "blue")
    parts = list(client.chat("tools", messages=HI, options=forced, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == "sky"
    assert "".join(p.message.content for p in parts) == "blue"
    generated = client.generate("tools", "why?", options=forced)
    assert (generated.thinking, generated.response) == ("sky", "blue")
    kept = client.chat("tools", messages=HI, options=forced, think=False)  # not split: Ollama leaves it as text
    assert kept.message.content == "<think>sky</think>blue" and not kept.message.thinking


def test_generate_is_the_chat_path_and_raw_skips_the_template(client, server):
    generated = client.generate("plain", "hello world, the planets", options=GREEDY)
    chatted = client.chat("plain", messages=HI, options=GREEDY)
    assert generated.response == chatted.message.content and generated.eval_count == chatted.eval_count
    with_system = client.generate("plain", "hello world, the planets", system="Be brief.", options=GREEDY)
    assert with_system.prompt_eval_count > generated.prompt_eval_count
    raw = client.generate("plain", "hello world, the planets", raw=True, options=GREEDY)
    status, text, _ = post(f"{server}/v1/completions", {"model": "plain", "prompt": "hello world, the planets",
                                                        "temperature": 0, "max_tokens": 12})
    assert raw.response == json.loads(text)["choices"][0]["text"] and raw.done
    assert raw.prompt_eval_count < generated.prompt_eval_count  # no template around it
    streamed = list(client.generate("plain", "hello world, the planets", raw=True, options=GREEDY, stream=True))
    assert "".join(p.response for p in streamed) == raw.response and streamed[-1].done
    status, text, _ = post(f"{server}/api/generate", {"model": "plain", "prompt": "def f(", "suffix": "return 1"})
    assert status == 400 and "FIM tokens" in json.loads(text)["error"], text  # "insert" is not in its capabilities


def test_embed_and_the_older_embeddings(client, server):
    out = client.embed("embed", input=["the planets", "hello world"])
    assert len(out.embeddings) == 2 and out.prompt_eval_count > 0
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in out.embeddings)
    status, text, _ = post(f"{server}/v1/embeddings", {"model": "embed", "input": ["the planets", "hello world"]})
    openai = [d["embedding"] for d in json.loads(text)["data"]]
    assert all(abs(a - b) < 1e-5 for v, w in zip(out.embeddings, openai) for a, b in zip(v, w))
    legacy = client.embeddings("embed", prompt="the planets").embedding
    norm = math.sqrt(sum(x * x for x in legacy))
    assert all(abs(a / norm - b) < 1e-4 for a, b in zip(legacy, out.embeddings[0]))
    assert len(client.embed("embed", input="the planets", dimensions=8).embeddings[0]) == 8
    with pytest.raises(ollama.ResponseError) as failed:
        client.embed("plain", input="x")
    assert failed.value.status_code == 400 and "--embedding" in failed.value.error


def test_keep_alive_zero_unloads_and_the_next_request_loads_again(client):
    def loaded() -> set[str]:
        return {m.model for m in client.ps().models}

    assert client.chat("plain", messages=HI, options=GREEDY, keep_alive=0).done
    deadline = time.monotonic() + 30
    while "plain:latest" in loaded() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "plain:latest" not in loaded() and "tools:latest" in loaded()
    again = client.chat("plain", messages=HI, options=GREEDY)
    assert again.load_duration > 0 and "plain:latest" in loaded()
    assert client.chat("plain", messages=HI, options=GREEDY).load_duration == 0
    unloaded = client.generate("plain", keep_alive=0)
    assert (unloaded.done, unloaded.done_reason) == (True, "unload")
    while "plain:latest" in loaded() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "plain:latest" not in loaded()
    assert client.generate("plain").done_reason == "load" and "plain:latest" in loaded()
    client.chat("plain", messages=HI, options=GREEDY, keep_alive="10m")  # a duration: how long it stays once idle
    expires = next(m.expires_at for m in client.ps().models if m.model == "plain:latest")
    assert 590 < expires.timestamp() - time.time() <= 600
    client.chat("plain", messages=HI, options=GREEDY, keep_alive=-1)  # negative: for good
    assert next(m.expires_at for m in client.ps().models if m.model == "plain:latest").year > 2300


# --- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, method, body", [
    ("/api/pull", "POST", {"model": "llama3.2"}), ("/api/push", "POST", {"model": "me/x"}),
    ("/api/create", "POST", {"model": "x", "from": "plain"}), ("/api/copy", "POST", {"source": "plain",
                                                                                        "destination": "y"}),
    ("/api/delete", "DELETE", {"model": "plain"}), ("/api/blobs/sha256:" + "0" * 64, "POST", {}),
])
def test_model_store_routes_say_this_server_serves_local_files(server, path, method, body):
    status, text, _ = post(f"{server}{path}", body, method)
    assert status == 501 and "local GGUF files" in json.loads(text)["error"]
    assert set(json.loads(text)) == {"error"}
    if path.startswith("/api/blobs/"):  # Ollama's client asks with HEAD before it uploads a blob
        assert post(f"{server}{path}", b"", "HEAD")[0] == 501
        status, text, _ = post(f"{server}{path}", b"\x00GGUF\xff raw bytes")  # the upload itself is not JSON
        assert status == 501 and "local GGUF files" in json.loads(text)["error"]


def test_errors_have_ollamas_shape(client, server):
    with pytest.raises(ollama.ResponseError) as failed:
        client.pull("llama3.2")
    assert failed.value.status_code == 501 and "local GGUF" in failed.value.error
    for body, status, words in [
        ({"model": "nope", "messages": HI}, 404, "model 'nope' not found"),
        ({"model": "plain", "messages": HI, "options": {"temperature": "hot"}}, 400, "options.temperature"),
        ({"model": "plain", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
        ({"model": "plain", "messages": HI, "keep_alive": "soon"}, 400, "keep_alive"),
        ({"messages": HI}, 400, "model"),
    ]:
        code, text, _ = post(f"{server}/api/chat", body)
        assert code == status and words in json.loads(text)["error"], text
        assert set(json.loads(text)) == {"error"}
    code, text, _ = post(f"{server}/api/chat", b"{not json")
    assert code == 400 and set(json.loads(text)) == {"error"}
    code, text, _ = post(f"{server}/v1/chat/completions", {"model": "nope", "messages": HI})
    assert "message" in json.loads(text)["error"]  # the OpenAI routes keep OpenAI's shape


# --- images --------------------------------------------------------------------------------------
def test_an_image_through_the_client_reaches_the_model(tiny_vision):
    red, blue = png(square((255, 0, 0))), png(square((0, 0, 255)))
    with running_server(tiny_vision[0], "--mmproj", str(tiny_vision[1]), "--n_ctx", "1024", "--n_parallel", "1",
                        "--model_alias", "eyes") as base:
        client = ollama.Client(host=base)
        assert "vision" in client.show("eyes").capabilities
        ask = {"role": "user", "content": "What colour is the square?", "images": [red]}
        out = client.chat("eyes", messages=[ask], options={"temperature": 0, "num_predict": 8})
        url = "data:image/png;base64," + base64.b64encode(red).decode()
        status, text, _ = post(f"{base}/v1/chat/completions", {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What colour is the square?"}]}],
            "temperature": 0, "max_tokens": 8})
        assert out.message.content == json.loads(text)["choices"][0]["message"]["content"]
        blind = client.chat("eyes", messages=[{"role": "user", "content": "What colour is the square?"}],
                            options={"temperature": 0, "num_predict": 8})
        assert out.prompt_eval_count > blind.prompt_eval_count  # the image's tokens
        other = client.chat("eyes", messages=[{**ask, "images": [blue]}], options={"temperature": 0, "num_predict": 8})
        assert other.prompt_eval_count == out.prompt_eval_count
        generated = client.generate("eyes", "What colour is the square?", images=[red],
                                    options={"temperature": 0, "num_predict": 8})
        assert generated.response == out.message.content  # generate is the chat path: the same turn
