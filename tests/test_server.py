"""The OpenAI-compatible server over real sockets, driven by the official openai client."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request

import jsonschema
import openai
import pytest

from server_process import running_server

READABLE = {str(t): -100 for t in range(3, 259)} | {"2": -100}  # words and letters only, no EOS
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["C", "F"]}},
    "required": ["city", "unit"]}}}


@pytest.fixture(scope="module")
def server(tiny_spm):
    with running_server(tiny_spm[0], "--metrics", "--n_ctx", "2048", "--n_parallel", "8", "-kvu", "--n_threads", "2",
                        "--model_alias", "tiny") as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def post(url: str, body, headers=None) -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read()), {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), {k.lower(): v for k, v in error.headers.items()}


def test_models_and_completions(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    out = client.completions.create(model="tiny", prompt="hello world", max_tokens=8, temperature=0)
    assert out.object == "text_completion" and out.usage.completion_tokens <= 8
    assert out.choices[0].finish_reason in ("stop", "length")
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="hello world", max_tokens=8, temperature=0, stream=True))
    assert streamed == out.choices[0].text


def test_chat_stream_and_plain_agree(client):
    kwargs = dict(model="tiny", messages=[{"role": "user", "content": "the planets"}], max_tokens=12,
                  temperature=0, logit_bias=READABLE)
    plain = client.chat.completions.create(**kwargs)
    assert plain.object == "chat.completion" and plain.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason


def test_tools_through_the_openai_client(client):
    for seed in range(3):
        out = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "weather in Oslo"}],
                                             tools=[WEATHER], tool_choice="required", seed=seed,
                                             logit_bias={str(3 + b): -100 for b in range(0x80, 0x100)})
        assert out.choices[0].finish_reason == "tool_calls"
        call = out.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_eight_concurrent_streams_each_get_their_own_reply(client):
    prompts = [f"Q: {w} is the world? A:" for w in ("what", "hello", "the", "one", "bob", "you", "solar", "planets")]

    def reply(prompt: str) -> str:
        stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}],
                                                max_tokens=24, temperature=0, logit_bias=READABLE, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream)

    alone = {p: reply(p) for p in prompts}
    assert len(set(alone.values())) == len(prompts), "each prompt must have a recognisable greedy reply"
    together, errors = {}, []

    def worker(prompt: str) -> None:
        try:
            together[prompt] = reply(prompt)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    # Same replies as alone: batching other sequences in changes nothing here (F32 weights, CPU).
    assert together == alone


def test_embeddings(tiny_bert):
    with running_server(tiny_bert[0], "--embedding", "true", "--n_ctx", "128") as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        out = client.embeddings.create(model="tiny-bert.gguf", input=["hello world", "the cats sat"])
        assert len(out.data) == 2 and len(out.data[0].embedding) == 64
        assert out.usage.prompt_tokens > 0


def test_api_key(tiny_spm):
    with running_server(tiny_spm[0], "--api_key", "s3cret", "--n_ctx", "256") as base:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
        status, body, _ = post(f"{base}/v1/completions", {"prompt": "hi"})
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        ok = openai.OpenAI(base_url=f"{base}/v1", api_key="s3cret", max_retries=0)
        assert ok.completions.create(model="tiny-spm.gguf", prompt="hi", max_tokens=2).choices
        with urllib.request.urlopen(f"{base}/health") as response:
            assert response.status == 200


@pytest.mark.parametrize("route, body, status, fragment", [
    ("/v1/completions", b"{not json", 400, "not valid JSON"),
    ("/v1/completions", {"prompt": "hi", "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {"prompt": "hi", "top_p": 7}, 400, "top_p"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": -2}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "the planets " * 2000}, 400, "context holds 2048"),
    ("/v1/completions", {"prompt": 42}, 400, "prompt"),
    ("/v1/chat/completions", {"messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}]},
     400, "unknown type"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "grammar": "root ::= ("}, 400, "grammar"),
    ("/v1/embeddings", {"input": "x"}, 400, "--embedding"),
    ("/detokenize", {"tokens": [-1]}, 400, "tokens"),
])
def test_bad_requests_get_openai_shaped_4xx(server, route, body, status, fragment):
    got, payload, _ = post(server + route, body)
    assert got == status
    assert fragment in payload["error"]["message"] and payload["error"]["type"]
    assert post(server + "/v1/completions", {"prompt": "still serving", "max_tokens": 2})[0] == 200


def test_llama_cpp_native_routes(server):
    status, body, _ = post(f"{server}/tokenize", {"content": "hello world"})
    assert status == 200 and body["tokens"]
    status, text, _ = post(f"{server}/detokenize", {"tokens": body["tokens"]})
    assert text["content"].strip() == "hello world"
    status, out, _ = post(f"{server}/completion", {"prompt": "hello", "n_predict": 4})
    assert status == 200 and out["tokens_predicted"] <= 4 and "content" in out
    with urllib.request.urlopen(f"{server}/props") as response:
        assert json.loads(response.read())["n_parallel"] == 8
    with urllib.request.urlopen(f"{server}/metrics") as response:
        metrics = response.read().decode()
    assert "llamacpp:tokens_predicted_total" in metrics and "llamacpp:requests_deferred 0" in metrics


def busy_slots(server: str) -> int:
    with urllib.request.urlopen(f"{server}/metrics") as response:
        line = next(l for l in response.read().decode().splitlines() if l.startswith("llamacpp:requests_processing "))
    return int(float(line.split()[1]))


def test_a_client_that_disconnects_frees_its_slot(server, client):
    stream = client.completions.create(model="tiny", prompt="the planets", max_tokens=1500, temperature=0,
                                       logit_bias=READABLE, stream=True)
    next(iter(stream))
    assert busy_slots(server) >= 1
    stream.close()
    deadline = time.monotonic() + 10
    while busy_slots(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert busy_slots(server) == 0


def test_full_queue_answers_503_with_retry_after(tiny_spm):
    with running_server(tiny_spm[0], "--n_parallel", "1", "--max_queue", "1", "--n_ctx", "2048") as base:
        results = []

        def call() -> None:
            results.append(post(f"{base}/v1/completions", {"prompt": "hello", "max_tokens": 1500,
                                                           "logit_bias": READABLE, "temperature": 0}))

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join(timeout=120)
        statuses = sorted(r[0] for r in results)
        assert 503 in statuses and 200 in statuses
        busy = next(r for r in results if r[0] == 503)
        assert busy[2].get("retry-after") == "1" and "busy" in busy[1]["error"]["message"]


def test_settings_from_flags_and_environment(tiny_spm, monkeypatch):
    from pyllama.server.settings import parse

    monkeypatch.setenv("N_CTX", "1024")
    monkeypatch.setenv("USE_MLOCK", "true")
    settings = parse(["--model", str(tiny_spm[0]), "--n_gpu_layers", "37", "--n-threads", "8", "--n_batch", "2096"])
    assert (settings.n_ctx, settings.use_mlock, settings.n_gpu_layers, settings.n_threads, settings.n_batch) == \
        (1024, True, 37, 8, 2096)
    monkeypatch.setenv("MODEL", str(tiny_spm[0]))
    assert parse(["--n_ctx", "512"]).n_ctx == 512  # a flag wins over the environment
    with pytest.raises(SystemExit):
        parse(["--model", "/nonexistent.gguf"])


def test_slots_share_the_kv_cache_unless_their_number_is_given_as_in_llama_server(tiny_spm):
    from pyllama.server.settings import parse

    model = ["--model", str(tiny_spm[0])]
    assert parse(model).kv_unified  # 4 slots by default, one shared cache
    assert not parse([*model, "-np", "2"]).kv_unified  # each slot gets n_ctx / 2
    assert parse([*model, "-np", "2", "-kvu"]).kv_unified
    assert not parse([*model, "--no-kv-unified"]).kv_unified


def test_config_file_serves_several_models(tiny_spm, tiny_bpe, tmp_path):
    config = tmp_path / "models.json"
    config.write_text(json.dumps({"n_ctx": 512, "models": [
        {"model": str(tiny_spm[0]), "model_alias": "spm", "n_parallel": 2},
        {"model": str(tiny_bpe[0]), "model_alias": "bpe", "chat_format": "chatml"}]}))
    with running_server(tiny_spm[0], "--config", str(config), "--metrics") as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        assert sorted(m.id for m in client.models.list().data) == ["bpe", "spm"]
        for name in ("spm", "bpe"):
            out = client.completions.create(model=name, prompt="hello", max_tokens=3, temperature=0)
            assert out.model == name and out.usage.prompt_tokens > 0
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="other", prompt="hello", max_tokens=3)
        status, tokens, _ = post(f"{base}/tokenize", {"content": "hello", "model": "bpe"})
        assert status == 200 and tokens["tokens"]
        with urllib.request.urlopen(f"{base}/metrics") as response:
            assert 'llamacpp:requests_processing{model="spm"} 0' in response.read().decode()


@pytest.mark.parametrize("live", [False, True], ids=["whole-reply", "stream"])
def test_engine_events_reach_the_event_loop_in_order_and_wake_it_only_as_needed(live):
    """The engine thread hands events over without waking the event loop for each token of a
    reply sent whole (each wakeup takes CPU from decoding); a stream gets them as they come."""
    from pyllama.generation.generator import Event
    from pyllama.server.inbox import Inbox

    async def deliver() -> tuple[list[tuple[int, str]], int]:
        loop = asyncio.get_running_loop()
        wakeups = 0
        schedule = loop.call_soon_threadsafe

        def counted(*args):
            nonlocal wakeups
            wakeups += 1
            return schedule(*args)

        loop.call_soon_threadsafe = counted
        inbox = Inbox(loop, live)
        emitters = [inbox.emitter(0), inbox.emitter(1)]

        def engine() -> None:
            for i in range(20):
                emitters[i % 2](Event(f"t{i}", []))
                time.sleep(0.002)
            for j, emit in enumerate(emitters):
                emit(Event(f"end{j}", [], "stop"))

        thread = threading.Thread(target=engine)
        thread.start()
        received: list[tuple[int, str]] = []
        while sum(text.startswith("end") for _, text in received) < 2:
            received += [(index, event.text) for index, event in await inbox.take()]
        thread.join()
        return received, wakeups

    received, wakeups = asyncio.run(deliver())
    assert received == [(i % 2, f"t{i}") for i in range(20)] + [(0, "end0"), (1, "end1")]
    if live:
        assert wakeups > 2  # the tokens came as they were made, not all at the end
    else:
        assert wakeups <= 2  # the jobs' last events only
