"""Planning a chat request: messages in, a prompt and constraints out.

:func:`plan_chat` renders the messages with a chat template (the model's own, a named
format, or a custom string) and turns tools and response formats into grammars; whoever
generates (``Llama``, the server's engine) runs the plan, and :mod:`.reply` shapes the text
back into a ``chat.completion``. Planning needs a template and a vocabulary, never a whole
model or Llama.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..vocab import Vocab
from ..multimodal import MediaChunk, default_marker
from . import tools as tooling
from ..errors import SchemaError
from .json_schema import json_grammar, schema_to_gbnf
from .media import MEDIA_PARTS, MediaParts, MediaReader
from .template import ChatTemplate

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
THINK_TAGS = ((THINK_OPEN, THINK_CLOSE), ("<|START_THINKING|>", "<|END_THINKING|>"))


def _text_of(content: Any, where: str, media: MediaParts | None = None, joiner: str = "\n") -> str | None:
    """A message's content as one string: text parts joined by ``joiner`` (llama.cpp's newline),
    media parts as ``media``'s markers, which join without one."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        text, after_text = "", False
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind in MEDIA_PARTS and media is not None:
                text, after_text = text + media.add(part, f"{where}.content[{j}]"), False
            elif kind in MEDIA_PARTS:
                raise ValueError(f"{where}.content[{j}]: {kind} parts need a model loaded with a multimodal "
                                 "projector (mmproj)")
            elif kind != "text":
                raise ValueError(f"{where}.content[{j}]: content parts are text, image_url or input_audio")
            else:
                text, after_text = text + (joiner if after_text else "") + str(part.get("text", "")), True
        return text
    raise ValueError(f"{where}: content must be a string, a list of parts or null")


def normalize_messages(messages: Sequence[Mapping[str, Any]], media: MediaParts | None = None) -> list[dict[str, Any]]:
    """Messages with their content as text; media parts become ``media``'s marker (without
    ``media``, they are an error)."""
    if not isinstance(messages, Sequence) or not messages:
        raise ValueError("messages must be a non-empty list")
    result = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ROLES:
            raise ValueError(f"messages[{i}] needs a role among {sorted(ROLES)}")
        normalized = dict(message)
        # a final assistant message is continued, its parts joined by a blank line (as llama.cpp does)
        joiner = "\n\n" if i == len(messages) - 1 and message["role"] == "assistant" else "\n"
        normalized["content"] = _text_of(message.get("content"), f"messages[{i}]", media, joiner)
        if normalized["role"] == "developer":
            normalized["role"] = "system"
        result.append(normalized)
    return result


def _legacy_functions(functions: Any, function_call: Any) -> tuple[list[dict], Any]:
    tools = [{"type": "function", "function": f} for f in functions]
    if function_call is None or function_call in ("auto", "none"):
        return tools, function_call
    return tools, {"type": "function", "function": {"name": function_call.get("name")}}


def response_grammar(response_format: Mapping[str, Any] | None) -> str | None:
    if not response_format or response_format.get("type") in (None, "text"):
        return None
    kind = response_format.get("type")
    schema = response_format.get("schema")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema", schema)
    elif kind != "json_object":
        raise ValueError(f"response_format type must be text, json_object or json_schema, not {kind!r}")
    try:
        return schema_to_gbnf(schema) if schema is not None else json_grammar()
    except SchemaError as exc:
        raise ValueError(f"response_format schema: {exc}") from exc


@dataclasses.dataclass
class ChatPlan:
    """What a chat request becomes before generation: a prompt, stops and constraints."""

    prompt: str  # the rendered template
    prompt_tokens: list[int]
    stops: list[str]
    grammar: str | None
    grammar_triggers: tuple[str, ...]
    known_tools: Mapping[str, Any]  # tools whose calls are read back from the output
    legacy_functions: bool
    reasoning: bool
    media: Mapping[int, MediaChunk] = dataclasses.field(default_factory=dict)  # by position in prompt_tokens


def plan_chat(template: ChatTemplate, vocab: Vocab, messages: Sequence[Mapping[str, Any]], *,
              tools: Sequence[Mapping[str, Any]] | None = None, tool_choice: Any = None,
              functions: Sequence[Mapping[str, Any]] | None = None, function_call: Any = None,
              response_format: Mapping[str, Any] | None = None, stop: str | Sequence[str] | None = None,
              grammar: str | None = None, reasoning: bool = False, media: MediaReader | None = None,
              add_generation_prompt: bool = True, continue_final_message: bool = False,
              template_kwargs: Mapping[str, Any] | None = None) -> ChatPlan:
    """Render and constrain a chat request; bad requests raise ValueError. ``media`` reads the
    image and audio parts (for a model with a projector); without it they are refused. A final
    assistant message is continued (a prefill); ``template_kwargs`` reach the template."""
    collected = MediaParts() if media is not None else None
    messages = normalize_messages(messages, collected)
    if functions:
        tools, tool_choice = _legacy_functions(functions, function_call)
    known = tooling.validate_tools(tools or [])
    choice = tooling.resolve_choice(tool_choice, known)
    functionary = template.format == "functionary"
    grammar, triggers = response_grammar(response_format) or grammar, ()
    offered = tools if known and choice != "none" else None
    if offered and not functionary and "tools" not in template.source:
        messages = _with_system_note(messages, tooling.generic_instructions(offered, choice))
    if offered and grammar is None:
        if functionary and choice != "auto":
            grammar = tooling.functionary_grammar(known, choice)
        elif not functionary and (choice != "auto" or "tools" not in template.source):
            grammar = tooling.generic_grammar(known, choice)
            triggers = (tooling.GENERIC_TRIGGER,) if choice == "auto" else ()
    prompt = _rendered(template, messages, offered, add_generation_prompt, continue_final_message,
                       {**_context(template, offered), **(template_kwargs or {})})
    if vocab.add_bos and template.bos_token and prompt.startswith(template.bos_token):
        prompt = prompt[len(template.bos_token):]  # tokenizing adds BOS; llama.cpp drops the template's too
    chunks: Mapping[int, MediaChunk] = {}
    if collected is not None and collected.parts:
        tokenized = collected.tokenize(prompt, media)
        prompt_tokens, chunks = tokenized.tokens, tokenized.media
        prompt = prompt.replace(collected.marker, default_marker())
    else:
        prompt_tokens = vocab.tokenize(prompt, add_special=True, parse_special=True)
        if len(prompt_tokens) > 1 and prompt_tokens[0] == prompt_tokens[1] == vocab.bos:
            prompt_tokens = prompt_tokens[1:]  # the template wrote BOS itself
    stops = list(template.stop) + ([stop] if isinstance(stop, str) else list(stop or []))
    return ChatPlan(prompt, prompt_tokens, stops, grammar, triggers, known if offered else {}, bool(functions),
                    reasoning, chunks)


def _context(template: ChatTemplate, tools: Sequence[Mapping[str, Any]] | None) -> dict[str, str]:
    """What llama.cpp gives templates besides the messages: today's date (Llama 3.x prints
    ``date_string``, FireFunction ``datetime``), and to a template that adds ``functions`` to its
    text (FireFunction) the tools' specs as that text."""
    now = datetime.datetime.now()
    context = {"date_string": now.strftime("%d %b %Y"), "datetime": now.strftime("%b %d %Y")}
    if "+ functions" in template.source:
        context["functions"] = json.dumps([tool.get("function", tool) for tool in tools or []], indent=2)
    return context


def _rendered(template: ChatTemplate, messages: list[dict[str, Any]], tools: Any, add_generation_prompt: bool,
              continue_final: bool, extra: dict[str, Any]) -> str:
    """The prompt. A final assistant message with text is a prefill: the reply continues it
    instead of starting a new turn (llama-server's behaviour; vLLM's continue_final_message).
    With ``enable_thinking`` false, a thinking block the generation prompt opens is closed at
    once, so the reply starts with the answer (what llama.cpp does for such templates)."""
    last = messages[-1]
    if last["role"] == "assistant" and len(messages) > 1 and messages[-2]["role"] == "assistant":
        raise ValueError("cannot have 2 or more assistant messages at the end of the list")
    if (continue_final or add_generation_prompt) and last["role"] == "assistant" and len(messages) > 1 \
            and isinstance(last.get("content"), str) and not last.get("tool_calls"):
        return template.render(messages[:-1], tools=tools, add_generation_prompt=True, **extra) + last["content"]
    if continue_final:
        raise ValueError("continue_final_message needs a final assistant message with text")
    prompt = template.render(messages, tools=tools, add_generation_prompt=add_generation_prompt, **extra)
    if add_generation_prompt and extra.get("enable_thinking") is False:
        opened = next((pair for pair in THINK_TAGS if prompt.rstrip().endswith(pair[0])), None)
        if opened is not None:
            prompt += opened[1]
        elif THINK_TAGS[1][0] in template.source and THINK_TAGS[1][0] not in prompt[-200:]:
            prompt += "".join(THINK_TAGS[1])  # Command R7B: an empty thinking block
    return prompt


def _with_system_note(messages: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content'] or ''}\n\n{note}".strip()}] + messages[1:]
    return [{"role": "system", "content": note}] + messages
