"""Chat completions: templates (against transformers), tools, JSON output, streaming, sessions."""

from __future__ import annotations

import json

import jsonschema
import pytest
import tokenizers
import transformers

from models import write_llama
from pyllama import ContextOverflowError, Llama
from pyllama import ChatSession
from pyllama.chat import ChatTemplate, ChatTemplateError, parse_tool_calls
from pyllama.chat.formats import FORMATS
from pyllama.chat.tools import resolve_choice

USER_DETAIL = {"type": "function", "function": {"name": "UserDetail", "parameters": {
    "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"]}}}
SEED_MESSAGES = [{"role": "system", "content": "You extract user details from text."},
                 {"role": "user", "content": "Extract Jason is 25 years old"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                     "unit": {"enum": ["C", "F"]}}, "required": ["city", "unit"]}}}
NO_HIGH_BYTES = {3 + b: -100.0 for b in range(0x80, 0x100)}  # see test_json_schema

HERMES_STYLE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools><|im_end|>\n"
    "{% endif %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def chat_model(models_dir):
    path = models_dir / "tiny-chat.gguf"
    write_llama(path, "spm", seed=4, chat_template=HERMES_STYLE)
    return path


@pytest.fixture(scope="module")
def llm(tiny_spm):
    with Llama(str(tiny_spm[0]), n_ctx=4096, seed=1337) as loaded:
        yield loaded


# --- templates ----------------------------------------------------------------------------
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 你好 👋"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name the planets?"}]
TEMPLATES = {name: f.template for name, f in FORMATS.items() if name != "functionary"} | {
    "hermes-tools": HERMES_STYLE,
    "raise": "{% if messages[0].role != 'system' %}{{ raise_exception('system first') }}{% endif %}"
             "{% for m in messages %}{{ m.role | upper }}: {{ m.content }}\n{% endfor %}",
    "tojson-loop-controls": "{% for m in messages %}{% if loop.index > 3 %}{% break %}{% endif %}"
                            "{{ m | tojson(indent=2) }}{% endfor %}{{ bos_token }}{{ eos_token }}",
}


@pytest.mark.parametrize("name", TEMPLATES)
def test_templates_render_like_transformers(name):
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer(tokenizers.models.BPE()),
                                                     bos_token="<s>", eos_token="</s>")
    for add_generation_prompt in (True, False):
        kwargs = dict(add_generation_prompt=add_generation_prompt, tools=[WEATHER] if "tools" in name else None)
        expected = tokenizer.apply_chat_template(MESSAGES, chat_template=TEMPLATES[name], tokenize=False, **kwargs)
        assert ChatTemplate(TEMPLATES[name], "<s>", "</s>").render(MESSAGES, **kwargs) == expected


def test_template_errors_are_clear():
    with pytest.raises(ChatTemplateError, match="system first"):
        ChatTemplate(TEMPLATES["raise"]).render([{"role": "user", "content": "x"}])
    with pytest.raises(ChatTemplateError, match="does not parse"):
        ChatTemplate("{% for %}")
    with pytest.raises(ChatTemplateError):  # the sandbox keeps templates away from Python internals
        ChatTemplate("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}").render(MESSAGES)


def test_the_gguf_template_is_the_default(chat_model, tiny_spm):
    with Llama(str(chat_model), n_ctx=256) as llm:
        assert llm.chat_template.source == HERMES_STYLE
    with Llama(str(chat_model), n_ctx=256, chat_format="llama-3") as llm:
        assert llm.chat_template.source == FORMATS["llama-3"].template
    with Llama(str(chat_model), n_ctx=256, chat_format="{{ messages[0].content }}") as llm:
        assert llm.chat_template.render(MESSAGES) == "Be brief."
    with Llama(str(tiny_spm[0]), n_ctx=256, chat_format="no-such-format") as llm:
        with pytest.raises(ValueError, match="unknown chat_format"):
            llm.create_chat_completion(MESSAGES)


def test_llama_cpp_builtin_templates_by_name(tiny_spm):
    with Llama(str(tiny_spm[0]), n_ctx=1024, chat_format="command-r") as llm:
        prompt = llm.chat_template.render([{"role": "system", "content": "You are a test."},
                                           {"role": "user", "content": "Hi there"}])
        assert prompt == ("<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a test.<|END_OF_TURN_TOKEN|>"
                          "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi there<|END_OF_TURN_TOKEN|>"
                          "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>")  # what llama-server renders
        long = [{"role": "user", "content": "word " * 2000}]  # past the first buffer's guess
        assert llm.chat_template.render(long).count("word") == 2000
        assert llm.create_chat_completion(MESSAGES, max_tokens=2)["choices"][0]["finish_reason"] == "length"
        with pytest.raises(ChatTemplateError, match="no tools"):
            llm.create_chat_completion(MESSAGES, tools=[{"type": "function", "function": {"name": "f"}}])


# --- completions --------------------------------------------------------------------------
def test_chat_completion_shape_and_stream_agreement(llm):
    kwargs = dict(max_tokens=24, seed=9, temperature=0.8)
    out = llm.create_chat_completion(MESSAGES, **kwargs)
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    message = out["choices"][0]["message"]
    assert message["role"] == "assistant" and isinstance(message["content"], str)
    assert out["usage"]["completion_tokens"] <= 24
    chunks = list(llm.create_chat_completion(MESSAGES, stream=True, **kwargs))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == message["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == out["choices"][0]["finish_reason"]


def test_seed_example_forced_tool_call_validates(tiny_spm):
    with Llama(str(tiny_spm[0]), chat_format="functionary", n_ctx=4096, seed=1337) as llm:
        for seed in range(3):
            out = llm.create_chat_completion(messages=SEED_MESSAGES, tools=[USER_DETAIL], max_tokens=None, seed=seed,
                                             tool_choice={"type": "function", "function": {"name": "UserDetail"}})
            choice = out["choices"][0]
            assert choice["finish_reason"] == "tool_calls"
            call = choice["message"]["tool_calls"][0]
            assert call["type"] == "function" and call["function"]["name"] == "UserDetail"
            arguments = json.loads(call["function"]["arguments"])
            jsonschema.validate(arguments, USER_DETAIL["function"]["parameters"])
            assert set(arguments) == {"name", "age"}


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_generic_forced_calls_always_validate(llm, tool_choice):
    for seed in range(8):
        out = llm.create_chat_completion(messages=[{"role": "user", "content": "weather in Paris?"}],
                                         tools=[WEATHER, USER_DETAIL] if tool_choice == "required" else [WEATHER],
                                         tool_choice=tool_choice, seed=seed, max_tokens=None, logit_bias=NO_HIGH_BYTES)
        calls = out["choices"][0]["message"]["tool_calls"]
        assert calls, out
        for call in calls:
            schema = {"get_weather": WEATHER, "UserDetail": USER_DETAIL}[call["function"]["name"]]
            jsonschema.validate(json.loads(call["function"]["arguments"]), schema["function"]["parameters"])


def test_a_tool_named_by_a_bare_string_is_forced(llm):
    # LangChain's bind_tools(..., tool_choice="UserDetail") passes the bare name
    kwargs = dict(messages=[{"role": "user", "content": "weather in Paris?"}], tools=[WEATHER, USER_DETAIL], seed=3,
                  max_tokens=None, logit_bias=NO_HIGH_BYTES)
    by_name = llm.create_chat_completion(tool_choice="UserDetail", **kwargs)["choices"][0]["message"]["tool_calls"]
    as_dict = llm.create_chat_completion(tool_choice={"type": "function", "function": {"name": "UserDetail"}},
                                         **kwargs)["choices"][0]["message"]["tool_calls"]
    assert [call["function"] for call in by_name] == [call["function"] for call in as_dict]
    assert [call["function"]["name"] for call in by_name] == ["UserDetail"]
    with pytest.raises(ValueError, match=r"'Person', which is not among the tools \('get_weather', 'UserDetail'\)"):
        llm.create_chat_completion(tool_choice="Person", **kwargs)


def test_tool_choice_keywords_keep_their_meaning_beside_names():
    functions = {"none": {}, "get_weather": {}}  # a tool may even be called "none"
    assert [resolve_choice(choice, functions) for choice in ("auto", "none", "required", "get_weather")] == \
        ["auto", "none", "required", "get_weather"]
    assert resolve_choice(None, {}) == "none" and resolve_choice(None, functions) == "auto"
    with pytest.raises(ValueError, match=r"not among the tools \(none given\)"):
        resolve_choice("get_weather", {})
    with pytest.raises(ValueError, match="must be 'auto', 'none', 'required' or a function"):
        resolve_choice(3, functions)


def test_streamed_tool_call_matches_non_streamed(llm):
    kwargs = dict(messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER], tool_choice="required",
                  seed=4, max_tokens=None, logit_bias=NO_HIGH_BYTES)
    plain = llm.create_chat_completion(**kwargs)["choices"][0]["message"]["tool_calls"]
    chunks = list(llm.create_chat_completion(stream=True, **kwargs))
    deltas = [c["choices"][0]["delta"]["tool_calls"] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert len(deltas) == 1 and deltas[0][0]["index"] == 0
    assert deltas[0][0]["function"] == plain[0]["function"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_legacy_functions(llm):
    out = llm.create_chat_completion(messages=[{"role": "user", "content": "weather?"}],
                                     functions=[WEATHER["function"]], function_call={"name": "get_weather"},
                                     seed=1, max_tokens=None, logit_bias=NO_HIGH_BYTES)
    message = out["choices"][0]["message"]
    assert message["function_call"]["name"] == "get_weather"
    jsonschema.validate(json.loads(message["function_call"]["arguments"]), WEATHER["function"]["parameters"])


def test_response_format_json_schema(llm):
    schema = {"type": "object", "properties": {"planets": {"type": "array", "items": {"enum": ["Mercury", "Venus"]},
                                                           "maxItems": 3}}, "required": ["planets"]}
    for seed in range(4):
        out = llm.create_chat_completion(MESSAGES, seed=seed, max_tokens=None,
                                         response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
        jsonschema.validate(json.loads(out["choices"][0]["message"]["content"]), schema)
    out = llm.create_chat_completion(MESSAGES, seed=1, max_tokens=None, logit_bias=NO_HIGH_BYTES,
                                     response_format={"type": "json_object"})
    assert isinstance(json.loads(out["choices"][0]["message"]["content"]), dict)


@pytest.mark.parametrize("bad, message", [
    (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "wat"}}}]), "unknown type"),
    (dict(tools=[{"type": "function", "function": {"name": "bad name!"}}]), "name"),
    (dict(tools=[USER_DETAIL], tool_choice={"type": "function", "function": {"name": "other"}}), "not among"),
    (dict(response_format={"type": "xml"}), "response_format"),
])
def test_bad_requests_raise_value_errors(llm, bad, message):
    with pytest.raises(ValueError, match=message):
        llm.create_chat_completion(MESSAGES, **bad)
    with pytest.raises(ValueError, match="role"):
        llm.create_chat_completion([{"role": "wizard", "content": "hi"}])
    with pytest.raises(ValueError, match="non-empty"):
        llm.create_chat_completion([])
    with pytest.raises(ValueError, match="2 or more assistant messages"):
        llm.create_chat_completion([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"},
                                    {"role": "assistant", "content": "b"}])


def test_a_final_assistant_message_is_continued(llm):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The answer is"}]
    prompt = llm.chat_template.render(messages[:1], add_generation_prompt=True) + "The answer is"
    out = llm.create_chat_completion(messages, max_tokens=3, temperature=0)
    expected = llm(llm.tokenize(prompt, special=True), max_tokens=3, temperature=0)
    assert out["choices"][0]["message"]["content"] == expected["choices"][0]["text"]


def test_reasoning_is_separated(llm):
    grammar = 'root ::= "<think>" [a-z ]{2,8} "</think>" " hello"'
    out = llm.create_chat_completion(MESSAGES, grammar=grammar, reasoning=True, seed=2, max_tokens=40)
    message = out["choices"][0]["message"]
    assert message["content"] == "hello" and message["reasoning_content"]
    chunks = list(llm.create_chat_completion(MESSAGES, grammar=grammar, reasoning=True, seed=2, max_tokens=40,
                                             stream=True))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == message["reasoning_content"]
    assert "".join(d.get("content") or "" for d in deltas) == "hello"


# --- reading native tool-call syntaxes ----------------------------------------------------
KNOWN = {"get_weather": {}, "UserDetail": {}}


@pytest.mark.parametrize("text, content, calls", [
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', None,
     [("get_weather", {"city": "Paris"})]),
    ('Let me check.<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
     '<tool_call>{"name": "UserDetail", "arguments": {"name": "Jo", "age": 3}}</tool_call>', "Let me check.",
     [("get_weather", {"city": "Oslo"}), ("UserDetail", {"name": "Jo", "age": 3})]),
    ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Rome"}}', None, [("get_weather", {"city": "Rome"})]),
    ('{"name": "UserDetail", "parameters": {"name": "Ann", "age": 40}}', None, [("UserDetail", {"name": "Ann", "age": 40})]),
    ('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Lima"}}]', None, [("get_weather", {"city": "Lima"})]),
    ('[TOOL_CALLS]get_weather[ARGS]{"city": "Kyiv"}', None, [("get_weather", {"city": "Kyiv"})]),
    ('to=functions.UserDetail:\n{"name": "Jason", "age": 25}', None, [("UserDetail", {"name": "Jason", "age": 25})]),
    ('{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Pune"}}]}', None,
     [("get_weather", {"city": "Pune"})]),
    ('<tool_call>{"name": "unknown_fn", "arguments": {}}</tool_call>', None, []),
    ("Just text, {not json}", "Just text, {not json}", []),
])
def test_native_tool_call_syntaxes(text, content, calls):
    got_content, got_calls = parse_tool_calls(text, KNOWN)
    assert [(c.name, json.loads(c.arguments)) for c in got_calls] == calls
    if calls:
        assert got_content == content


def test_model_with_native_template_gets_tools_in_its_own_prompt(chat_model):
    with Llama(str(chat_model), n_ctx=2048, seed=3) as llm:
        template = llm.chat_template
        prompt = template.render([{"role": "user", "content": "weather?"}], tools=[WEATHER])
        assert "<tools>" in prompt and '"get_weather"' in prompt
        out = llm.create_chat_completion([{"role": "user", "content": "weather?"}], tools=[WEATHER],
                                         tool_choice="required", max_tokens=None, logit_bias=NO_HIGH_BYTES, seed=5)
        assert out["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


# --- ChatSession --------------------------------------------------------------------------
def test_chat_session_drops_oldest_turns_and_keeps_the_system_prompt(tiny_spm):
    with Llama(str(tiny_spm[0]), n_ctx=256, seed=1) as llm:
        session = ChatSession(llm, "You are Bob.", max_tokens=16, temperature=0)
        for i in range(30):
            reply = session.send(f"turn {i}: tell me about the planets of the solar system")
            assert isinstance(reply, str)
        assert session.history[0] == {"role": "system", "content": "You are Bob."}
        assert session.dropped > 0
        assert session.history[-2]["content"].startswith("turn 29")
        streamed = "".join(session.stream("one more"))
        assert session.history[-1]["content"] == streamed


def test_chat_session_error_mode_and_anti_prompts(tiny_spm):
    with Llama(str(tiny_spm[0]), n_ctx=256, seed=1) as llm:
        strict = ChatSession(llm, "sys", max_tokens=16, overflow="error", temperature=0)
        strict.send("hello")
        before = list(strict.history)
        with pytest.raises(ContextOverflowError, match="context holds 256"):
            strict.send("the planets " * 200)
        assert strict.history == before
        shouting = ChatSession(llm, max_tokens=16, output_transform=str.upper, anti_prompts=["User:"], temperature=0)
        assert shouting.send("hi") == shouting.history[-1]["content"] == shouting.history[-1]["content"].upper()
