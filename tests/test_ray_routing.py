"""The Ray endpoint's pure parts, without Ray: the prefix-affinity policy, the routing key a
request gets, the routes that do not cross replicas, and running one request through an app."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from pyllama.ray.keys import routing_key
from pyllama.ray.routes import refusal
from pyllama.ray.routing import PrefixAffinity

SYSTEM = "You are a careful assistant who answers in one short sentence, citing nothing. " * 2


def chat(*turns: str, model: str = "tiny") -> str:
    messages = [{"role": "system", "content": SYSTEM}]
    messages += [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    return routing_key(json.dumps({"model": model, "messages": messages}).encode())


def test_a_growing_conversation_keeps_a_key_prefix():
    first, second = chat("what is a planet?"), chat("what is a planet?", "A round body.", "and a moon?")
    assert second.startswith(first) and len(second) > len(first)
    assert not chat("hi", model="other").startswith(chat("hi")[:5])  # the model's name leads


@pytest.mark.parametrize("body, expected", [
    ({"model": "m", "prompt": "once upon"}, "m\x00once upon"),
    ({"prompt": [1, 2, 3]}, "\x00" + "".join(chr(0x10000 + t) for t in (1, 2, 3))),
    ({"prompt": ["first", "second"]}, "\x00first"),  # a batch: its first prompt
    ({"model": "m", "system": "be brief", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                                                   {"type": "image_url"}]}]},
     "m\x00be brief\x01user\x02hi"),  # Anthropic's system prompt, content parts
    ({"instructions": "be brief", "input": [{"role": "user", "content": "hi"}]}, "\x00be brief\x01user\x02hi"),
    ({"content": "tokenize me"}, "\x00tokenize me"),
])
def test_routing_keys_of_each_api(body, expected):
    assert routing_key(json.dumps(body).encode()) == expected


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'"text"'])
def test_a_body_without_a_prompt_gets_the_empty_key(body):
    assert routing_key(body) == ""


def test_a_conversation_goes_back_to_the_replica_that_took_it():
    policy = PrefixAffinity(block_chars=16)
    loads = {"a": 0, "b": 0, "c": 0}
    policy.record(chat("what is a planet?"), "b")
    assert policy.choose(chat("what is a planet?", "A round body.", "and a moon?"), loads) == [["b"], ["a", "c"]]


def test_a_new_prefix_goes_to_the_least_loaded_then_the_least_remembering_replica():
    policy = PrefixAffinity(block_chars=16)
    policy.record(chat("an old conversation about tides"), "a")
    assert policy.choose(chat("something new"), {"a": 0, "b": 2, "c": 0})[0] == ["c"]  # a remembers more
    assert policy.continued("a", chat("something new")) == 0  # only the system prompt is shared
    assert policy.choose("x" * 10 + SYSTEM, {"a": 0, "b": 0, "c": 0})[0] == ["b"]  # c has a request on its way


def test_a_burst_of_new_prefixes_spreads_before_ray_sees_the_queues():
    """Eight new conversations at once: each is routed before any is recorded, and Ray's queue
    lengths still read 0, yet they spread evenly; recorded, they count by what is remembered."""
    policy = PrefixAffinity(block_chars=16)
    chosen = [policy.choose(chat(f"conversation {k}"), {"a": None, "b": 0})[0] for k in range(8)]
    assert all(len(rank) == 1 for rank in chosen)
    assert sorted(sum(chosen, [])) == ["a"] * 4 + ["b"] * 4
    for k, (replica,) in enumerate(chosen):
        policy.record(chat(f"conversation {k}"), replica)
    assert policy.choose(chat("conversation 3", "Yes.", "more"), {"a": 0, "b": 0})[0] == chosen[3]


def test_a_match_below_min_match_counts_as_a_new_prefix():
    policy = PrefixAffinity(block_chars=16, min_match=0.5)
    policy.record(chat("hi"), "a")
    longer = chat("hi", "Hello.", "tell me everything about the history of astronomy, " * 8)
    assert policy.choose(longer, {"a": 1, "b": 0})[0] == ["b"]


def test_imbalanced_loads_route_by_load_alone():
    policy = PrefixAffinity(block_chars=16, imbalance=2, rng=random.Random(0))
    policy.record(chat("what is a planet?"), "a")
    for _ in range(20):
        ranks = policy.choose(chat("what is a planet?", "A round body.", "more"), {"a": 9, "b": 0, "c": 1})
        assert len(ranks) == 1 and len(set(ranks[0])) == 2  # two random replicas: the power of two choices
    assert {r for _ in range(50) for r in policy.choose("", {"a": 0, "b": 0, "c": 0})[0]} == {"a", "b", "c"}


def test_one_replica_and_no_key():
    policy = PrefixAffinity(block_chars=16)
    assert policy.choose(chat("hi"), {"only": None}) == [["only"]]
    assert len(policy.choose("", {"a": None, "b": None})[0]) == 2  # no key: by load


def test_memory_is_bounded_and_gone_replicas_are_forgotten():
    policy = PrefixAffinity(block_chars=4, capacity_blocks=3)
    key = "abcdefghijklmnop"  # 4 blocks: the first is evicted, so nothing leads any more
    policy.record(key, "a")
    assert policy.matched("a", policy.blocks(key)) == 0 and policy.matched("a", policy.blocks(key)[1:]) == 3
    policy.record("abcd", "b")
    policy.keep({"a"})
    assert policy.matched("b", policy.blocks("abcd")) == 0


@pytest.mark.parametrize("options", [{"block_chars": 0}, {"capacity_blocks": 0}, {"imbalance": -1},
                                     {"min_match": 1.5}])
def test_bad_policy_options_are_named(options):
    with pytest.raises(ValueError, match="expected block_chars"):
        PrefixAffinity(**options)


def test_a_conversation_whose_first_turn_ends_inside_a_block_still_goes_back():
    """The part of a first turn that tells conversations apart may be shorter than a block after
    a long shared system prompt: the key's end is remembered, not only its last whole block."""
    policy, loads = PrefixAffinity(block_chars=32), {"a": 0, "b": 0}
    for k, replica in enumerate("ab"):
        policy.record(chat(f"q{k}"), replica)
    for k, replica in enumerate("ab"):
        assert policy.choose(chat(f"q{k}", "Yes.", "and then?"), loads)[0] == [replica]
        assert policy.continued(replica, chat(f"q{k}", "Yes.")) == len(chat(f"q{k}"))


@pytest.mark.parametrize("concurrent", [False, True])
def test_interleaved_conversations_spread_and_stay_on_their_replicas(concurrent):
    """The workload of tests/test_ray.py on the policy alone: K conversations sharing a system
    prompt, growing turn by turn, interleaved (one at a time, or each turn's requests all running
    at once); new ones spread over the replicas, every later turn goes back to its replica."""
    policy, loads = PrefixAffinity(block_chars=16), {"a": 0, "b": 0, "c": 0}
    homes: dict[int, str] = {}
    for turn in range(4):
        for conversation in range(6):
            key = chat(*[f"conversation {conversation}, question {t}" for t in range(turn + 1)])
            ranks = policy.choose(key, loads)
            chosen = ranks[0][0]
            if turn:
                assert ranks[0] == [homes[conversation]]
            homes.setdefault(conversation, chosen)
            loads[chosen] += concurrent
            policy.record(key, chosen)
        loads = dict.fromkeys(loads, 0)
    assert sorted(list(homes.values()).count(replica) for replica in "abc") == [2, 2, 2]


@pytest.mark.parametrize("method, path, refused", [
    ("GET", "/slots", True), ("POST", "/slots/0", True), ("POST", "/lora-adapters", True),
    ("POST", "/models/load", True), ("POST", "/models/unload", True), ("GET", "/metrics", True),
    ("POST", "/models", True), ("DELETE", "/models", True), ("GET", "/models/sse", True), ("GET", "/models", False),
    ("GET", "/v1/stream", True), ("DELETE", "/v1/stream", True), ("POST", "/v1/streams/lookup", True),
    ("GET", "/lora-adapters", False), ("POST", "/v1/chat/completions", False), ("GET", "/v1/models", False),
    ("GET", "/health", False), ("GET", "/props", False),
])
def test_routes_that_do_not_cross_replicas(method, path, refused):
    why = refusal(method, path)
    assert (why is not None) == refused
    if refused:
        assert why.startswith(f"{method} {path} is not served through the Ray endpoint")


def test_a_request_through_an_app_in_process_streams_and_disconnects():
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from pyllama.ray.asgi_call import call

    stopped = asyncio.Event()

    async def endless(request):
        body = await request.body()

        async def parts():
            try:
                while True:
                    yield body
                    await asyncio.sleep(0)
            finally:
                stopped.set()
        return StreamingResponse(parts(), headers={"x-kind": "endless"})

    app = Starlette(routes=[Route("/", endless, methods=["POST"])])
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/", "raw_path": b"/", "root_path": "", "query_string": b"", "headers": [], "client": None,
             "server": None}

    async def three_parts() -> list[dict]:
        messages = call(app, scope, b"ping")
        got = [await messages.__anext__() for _ in range(3)]
        await messages.aclose()  # the caller leaves mid-stream
        await asyncio.wait_for(stopped.wait(), 5)
        return got

    start, *parts = asyncio.run(three_parts())
    assert start["type"] == "http.response.start" and (b"x-kind", b"endless") in start["headers"]
    assert [p["body"] for p in parts] == [b"ping", b"ping"] and all(p["more_body"] for p in parts)


# --- keys from the rendered prompt (pyllama/ray/prompt_keys.py) -------------------------------

@pytest.fixture(scope="module")
def prompt_keys(tiny_spm):
    from pyllama.ray.prompt_keys import PromptKeys
    from pyllama.server.settings import parse

    keys = PromptKeys(parse(["-m", str(tiny_spm[0]), "-a", "tiny"]))
    yield keys
    keys.close()


def test_a_chat_key_is_the_prompt_the_replica_renders(prompt_keys, model):
    from pyllama.chat import chat_template, plan_chat
    from pyllama.ray.keys import tokens_key

    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "what is a planet?"}]
    body = json.dumps({"model": "tiny", "messages": messages, "max_tokens": 4}).encode()
    expected = plan_chat(chat_template(model), model.vocab, messages).prompt_tokens  # a server's, from the weights' file
    assert prompt_keys.key("/v1/chat/completions", body) == tokens_key("tiny", expected)
    assert prompt_keys.key("/chat/completions", body) == tokens_key("tiny", expected)
    assert prompt_keys.key("/v1/messages", body) == routing_key(body)  # Anthropic's route: the JSON key


def test_a_completion_key_is_its_tokens(prompt_keys, model):
    from pyllama.ray.keys import tokens_key

    text = json.dumps({"prompt": "once upon a time"}).encode()
    tokens = model.vocab.tokenize("once upon a time", add_special=True, parse_special=True)
    assert prompt_keys.key("/completion", text) == tokens_key("", tokens)
    assert prompt_keys.key("/v1/completions", json.dumps({"prompt": [5, 6, 7]}).encode()) == tokens_key("", [5, 6, 7])


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
    {"messages": "not a list"},
    {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
])
def test_a_chat_the_ingress_cannot_render_gets_the_json_key(prompt_keys, body):
    data = json.dumps(body).encode()
    assert prompt_keys.key("/v1/chat/completions", data) == routing_key(data)


def test_without_a_readable_model_every_key_is_the_json_key(tmp_path):
    from pyllama.ray.prompt_keys import PromptKeys
    from pyllama.server.settings import Settings

    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    assert PromptKeys(None).key("/v1/chat/completions", body) == routing_key(body)  # several models
    missing = Settings(model=str(tmp_path / "gone.gguf"))
    assert PromptKeys(missing).key("/v1/chat/completions", body) == routing_key(body)
