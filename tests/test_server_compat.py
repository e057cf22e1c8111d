"""The OpenAI Responses and Anthropic Messages APIs over real sockets, driven by the official
openai and anthropic clients, checked against /v1/chat/completions (the one chat path both map onto)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import anthropic
import jsonschema
import openai
import pytest

from server_process import running_server

KEY = "s3cret"
READABLE = {str(t): -100 for t in range(3, 259)} | {"2": -100}  # words and letters only, no EOS
NO_HIGH_BYTES = {str(3 + b): -100 for b in range(0x80, 0x100)}  # keeps JSON arguments valid UTF-8
CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"]}
THINKING = 'root ::= "<think>I ponder</think>" " Hello there friend"'  # a reasoning model's shape, by grammar


@pytest.fixture(scope="module")
def server(tiny_spm):
    with running_server(tiny_spm[0], "--n_ctx", "2048", "--n_parallel", "4", "-kvu", "--n_threads", "2",
                        "--model_alias", "tiny", "--api_key", KEY) as base:
        yield base


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def claude(server):
    return anthropic.Anthropic(base_url=server, api_key=KEY, max_retries=0)  # sends x-api-key


@pytest.fixture(scope="module")
def greedy(oai):
    """The chat route's greedy answer, which both other APIs must give for the same request."""
    out = oai.chat.completions.create(model="tiny", max_tokens=12, temperature=0, logit_bias=READABLE, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "the planets"}])
    assert out.choices[0].finish_reason == "length" and out.choices[0].message.content
    return out.choices[0].message.content, out.usage.prompt_tokens


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {KEY}", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --- OpenAI Responses -------------------------------------------------------------------------------
def test_responses_plain_and_streamed_agree_with_chat(oai, greedy):
    text, prompt_tokens = greedy
    kwargs = dict(model="tiny", instructions="Be brief.", input="the planets", max_output_tokens=12, temperature=0,
                  extra_body={"logit_bias": READABLE})
    out = oai.responses.create(**kwargs)
    assert out.id.startswith("resp_") and out.object == "response"
    assert [item.type for item in out.output] == ["message"] and out.output[0].id.startswith("msg_")
    assert out.output_text == text
    # the limit cut it short: OpenAI's "incomplete", not "completed"
    assert out.status == "incomplete" and out.incomplete_details.reason == "max_output_tokens"
    assert (out.usage.input_tokens, out.usage.output_tokens, out.usage.total_tokens) == \
        (prompt_tokens, 12, prompt_tokens + 12)

    events = list(oai.responses.create(stream=True, **kwargs))
    kinds = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * len(deltas),
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.incomplete"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    item_id = events[2].item.id
    assert all(e.item_id == item_id for e in events[3:-2]) and events[-2].item.id == item_id
    assert "".join(e.delta for e in deltas) == events[-4].text == text
    final = events[-1].response
    assert final.id == events[0].response.id and final.status == "incomplete" and final.output_text == text
    assert final.usage.input_tokens == prompt_tokens


def test_responses_function_call_streamed_and_back(oai):
    tool = {"type": "function", "name": "get_weather", "parameters": CITY}
    with oai.responses.stream(model="tiny", input="weather in Oslo", tools=[tool], extra_body={
            "logit_bias": NO_HIGH_BYTES, "seed": 3}, tool_choice={"type": "function", "name": "get_weather"}) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.function_call_arguments.delta", "response.function_call_arguments.done",
                     "response.output_item.done", "response.completed"]
    call = final.output[0]
    assert final.status == "completed" and call.type == "function_call" and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), CITY)

    # the call and its output go back as input items, rendered into the prompt
    asked = [{"role": "user", "content": "weather in Oslo"}]
    answered = asked + [{"type": "function_call", "call_id": call.call_id, "name": call.name,
                         "arguments": call.arguments},
                        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}]
    counts = [oai.responses.input_tokens.count(model="tiny", input=items, tools=[tool]).input_tokens
              for items in (asked, answered)]
    assert counts[1] > counts[0] > 0
    reply = oai.responses.create(model="tiny", input=answered, tools=[tool], max_output_tokens=4)
    assert reply.usage.input_tokens == counts[1] and reply.output[0].type == "message"


def test_responses_reasoning_and_json_schema(oai):
    out = oai.responses.create(model="tiny", input="hi", extra_body={"grammar": THINKING})
    assert [item.type for item in out.output] == ["reasoning", "message"]
    assert out.output[0].content[0].text == "I ponder" and out.output_text == "Hello there friend"
    with oai.responses.stream(model="tiny", input="hi", extra_body={"grammar": THINKING}) as stream:
        events = list(stream)
        assert stream.get_final_response().output_text == "Hello there friend"
    added = [(e.output_index, e.item.type) for e in events if e.type == "response.output_item.added"]
    assert added == [(0, "reasoning"), (1, "message")]
    assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") == "I ponder"

    schema = {"type": "object", "properties": {"planet": {"enum": ["Mars", "Venus"]}}, "required": ["planet"],
              "additionalProperties": False}
    out = oai.responses.create(model="tiny", input="a planet", max_output_tokens=64, extra_body={"seed": 1},
                               text={"format": {"type": "json_schema", "name": "planet", "schema": schema}})
    jsonschema.validate(json.loads(out.output_text), schema)
    assert out.text.format.type == "json_schema"


def test_responses_refuses_what_needs_stored_state(oai, server):
    with pytest.raises(openai.BadRequestError, match="stores none") as error:
        oai.responses.create(model="tiny", input="hi", previous_response_id="resp_123")
    assert error.value.body["param"] == "previous_response_id"
    status, body = post(f"{server}/v1/responses", {"input": [{"type": "item_reference", "id": "msg_1"}]})
    assert status == 400 and body["error"]["param"] == "input[0]"
    status, body = post(f"{server}/v1/responses", {"input": [{"type": "web_search_call", "id": "ws_1"}]})
    assert status == 400 and "input[0]" in body["error"]["message"]


def test_responses_stream_carries_llama_telemetry_when_asked(server):
    request = urllib.request.Request(f"{server}/v1/responses", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}, data=json.dumps({
            "input": "the planets " * 10, "max_output_tokens": 6, "stream": True, "timings_per_token": True,
            "return_progress": True, "logit_bias": READABLE}).encode())
    with urllib.request.urlopen(request, timeout=120) as response:
        events = [json.loads(line[6:]) for line in response.read().decode().splitlines() if line.startswith("data: ")]
    progress = [e for e in events if "prompt_progress" in e]
    assert progress and all(e["type"] == "response.in_progress" for e in progress)
    assert progress[-1]["prompt_progress"]["processed"] == progress[-1]["prompt_progress"]["total"] > 0
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert deltas and all("predicted_per_second" in e["timings"] for e in deltas[:-1])
    assert events[-1]["type"] == "response.incomplete" and events[-1]["timings"]["predicted_n"] == 6


# --- Anthropic Messages -------------------------------------------------------------------------------
def test_messages_plain_and_streamed_agree_with_chat(claude, greedy):
    text, prompt_tokens = greedy
    kwargs = dict(model="tiny", max_tokens=12, system="Be brief.",
                  messages=[{"role": "user", "content": "the planets"}],
                  extra_body={"temperature": 0, "logit_bias": READABLE})  # this SDK has no temperature argument
    out = claude.messages.create(**kwargs)
    assert out.type == "message" and out.role == "assistant" and out.id.startswith("msg_")
    assert [block.type for block in out.content] == ["text"] and out.content[0].text == text
    assert out.stop_reason == "max_tokens" and out.stop_sequence is None
    # Anthropic counts prompt tokens read from the cache apart from input_tokens
    assert out.usage.input_tokens + out.usage.cache_read_input_tokens == prompt_tokens
    assert out.usage.output_tokens == 12

    events = list(claude.messages.create(stream=True, **kwargs))
    kinds = [e.type for e in events]
    assert kinds == ["message_start", "content_block_start", *["content_block_delta"] * (len(kinds) - 5),
                     "content_block_stop", "message_delta", "message_stop"]
    assert events[0].message.usage.input_tokens == prompt_tokens and events[0].message.content == []
    assert "".join(e.delta.text for e in events[2:-3]) == text
    assert {e.index for e in events[1:-2]} == {0}
    assert events[-2].delta.stop_reason == "max_tokens" and events[-2].usage.output_tokens == 12
    with claude.messages.stream(**kwargs) as stream:
        assert stream.get_final_message().content[0].text == text
    assert claude.messages.count_tokens(model="tiny", system="Be brief.", messages=kwargs["messages"]).input_tokens \
        == prompt_tokens


def test_messages_tool_use_streamed_and_back(claude):
    tool = {"name": "get_weather", "description": "the weather in a city", "input_schema": CITY}
    kwargs = dict(model="tiny", max_tokens=200, messages=[{"role": "user", "content": "weather in Oslo"}],
                  tools=[tool], extra_body={"logit_bias": NO_HIGH_BYTES, "seed": 1})
    out = claude.messages.create(tool_choice={"type": "any"}, **kwargs)
    assert out.stop_reason == "tool_use" and {block.type for block in out.content} == {"tool_use"}
    for use in out.content:
        assert use.name == "get_weather" and use.id.startswith("toolu_")
        jsonschema.validate(use.input, CITY)

    events = list(claude.messages.create(stream=True, tool_choice={"type": "tool", "name": "get_weather"}, **kwargs))
    assert [(e.type, getattr(e, "index", None)) for e in events] == [
        ("message_start", None), ("content_block_start", 0), ("content_block_delta", 0), ("content_block_stop", 0),
        ("message_delta", None), ("message_stop", None)]
    assert events[1].content_block.type == "tool_use" and events[2].delta.type == "input_json_delta"
    jsonschema.validate(json.loads(events[2].delta.partial_json), CITY)
    assert events[4].delta.stop_reason == "tool_use"

    # tool_use and tool_result (an error among them) go back into the prompt
    back = kwargs["messages"] + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"},
                                     {"type": "tool_result", "tool_use_id": use.id, "is_error": True,
                                      "content": [{"type": "text", "text": "no such city"}]},
                                     {"type": "text", "text": "and tomorrow?"}]}]
    counts = [claude.messages.count_tokens(model="tiny", messages=m, tools=[tool]).input_tokens
              for m in (kwargs["messages"], back)]
    assert counts[1] > counts[0] > 0
    reply = claude.messages.create(model="tiny", max_tokens=4, messages=back, tools=[tool])
    assert reply.usage.input_tokens + reply.usage.cache_read_input_tokens == counts[1]


def test_messages_thinking_and_stop_sequences(claude):
    kwargs = dict(model="tiny", max_tokens=64, messages=[{"role": "user", "content": "hi"}],
                  thinking={"type": "enabled", "budget_tokens": 1024}, extra_body={"grammar": THINKING})
    out = claude.messages.create(**kwargs)
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in out.content] == [
        ("thinking", "I ponder"), ("text", "Hello there friend")]
    assert out.stop_reason == "end_turn"
    events = list(claude.messages.create(stream=True, **kwargs))
    blocks = [(e.index, e.content_block.type) for e in events if e.type == "content_block_start"]
    assert blocks == [(0, "thinking"), (1, "text")]
    thinking = [e.delta.type for e in events if e.type == "content_block_delta" and e.index == 0]
    assert thinking[0] == "thinking_delta" and thinking[-1] == "signature_delta"  # clients wait for a signature
    assert [e.index for e in events if e.type == "content_block_stop"] == [0, 1]

    out = claude.messages.create(**kwargs | {"stop_sequences": ["friend", "zebra"]})
    assert out.stop_reason == "stop_sequence" and out.stop_sequence == "friend"
    assert out.content[-1].text == "Hello there "


def test_messages_errors_have_anthropics_shape(claude, server):
    with pytest.raises(anthropic.AuthenticationError) as error:
        anthropic.Anthropic(base_url=server, api_key="wrong", max_retries=0).messages.create(
            model="tiny", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert error.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                          "message": error.value.body["error"]["message"]}}
    status, body = post(f"{server}/v1/messages", {"messages": [{"role": "user", "content": "hi"}]})
    assert (status, body) == (400, {"type": "error", "error": {"type": "invalid_request_error",
                                                               "message": "'max_tokens': Field required"}})
    status, body = post(f"{server}/v1/messages", {"max_tokens": 4, "messages": [
        {"role": "user", "content": [{"type": "video", "url": "x"}]}]}, {"x-api-key": KEY})
    assert status == 400 and body["error"]["message"].startswith("'messages[0].content[0]'")
    status, body = post(f"{server}/v1/messages", {"max_tokens": 4, "min_p": 2, "messages": [
        {"role": "user", "content": "hi"}]})  # a llama.cpp field, checked as the chat route checks it
    assert status == 400 and body["error"]["message"].startswith("'min_p'")
    # the chat route keeps OpenAI's shape
    status, body = post(f"{server}/v1/chat/completions", {"messages": []})
    assert status == 400 and body["error"]["type"] == "invalid_request_error" and "type" not in body
