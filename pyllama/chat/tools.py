"""Tool (function) calling: describing tools to a model, constraining its calls, reading them back.

Three ways in:
- ``generic``: works with any model. The tools are described in the system message and the
  model answers ``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` when it calls one; a
  grammar built from the functions' JSON schemas makes a forced call always valid.
- ``functionary``: the functionary chat format's ``to=functions.NAME:`` followed by JSON.
- native syntaxes, parsed from output of models using their own templates: Hermes/Qwen
  ``<tool_call>{...}</tool_call>``, Llama 3.x ``{"name": ..., "parameters": {...}}`` (optionally
  after ``<|python_tag|>``), Mistral ``[TOOL_CALLS][{...}]`` and ``[TOOL_CALLS]name[ARGS]{...}``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import SchemaError
from .json_schema import literal, schema_to_gbnf

Tool = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI returns it
    id: str = dataclasses.field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def as_openai(self, index: int | None = None) -> dict[str, Any]:
        call = {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}
        return call if index is None else {"index": index, **call}


def validate_tools(tools: Sequence[Tool]) -> dict[str, Mapping[str, Any]]:
    """name -> parameters schema; malformed tools raise ValueError (the server answers 400)."""
    functions = {}
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function" or \
                not isinstance(tool.get("function"), Mapping):
            raise ValueError(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}")
        function = tool["function"]
        name = function.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise ValueError(f"tools[{i}].function.name must be 1-64 letters, digits, '_', '.' or '-'")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        try:
            schema_to_gbnf(parameters)
        except SchemaError as exc:
            raise ValueError(f"tools[{i}] ({name}): invalid parameters schema: {exc}") from exc
        functions[name] = parameters
    return functions


def resolve_choice(tool_choice: Any, functions: Mapping[str, Any]) -> str | None:
    """'auto', 'none', 'required', or the name of a forced function.

    A function is forced by ``{"type": "function", "function": {"name": ...}}`` (OpenAI), by
    ``{"name": ...}`` (legacy function_call) or by its bare name (LangChain's
    ``bind_tools(..., tool_choice="Person")``); the three keywords win over a tool of that name."""
    if tool_choice is None:
        return "auto" if functions else "none"
    if tool_choice in ("auto", "none", "required"):
        return tool_choice
    if isinstance(tool_choice, Mapping):
        name = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    elif isinstance(tool_choice, str):
        name = tool_choice
    else:
        raise ValueError(f"tool_choice must be 'auto', 'none', 'required' or a function, not {tool_choice!r}")
    if name not in functions:
        raise ValueError(f"tool_choice names {name!r}, which is not among the tools "
                         f"({', '.join(map(repr, functions)) or 'none given'})")
    return name


# --- the generic format ------------------------------------------------------------------
def generic_instructions(tools: Sequence[Tool], choice: str) -> str:
    lines = ["You can call these functions:"]
    for tool in tools:
        f = tool["function"]
        lines.append(f"- {f['name']}: {f.get('description', '')} Parameters (JSON schema): "
                     f"{json.dumps(f.get('parameters', {}), ensure_ascii=False)}")
    lines.append('To call functions, answer only with JSON: {"tool_calls": [{"name": "<function name>", '
                 '"arguments": {<arguments>}}]}.')
    if choice == "auto":
        lines.append("If no function is needed, answer normally in plain text.")
    return "\n".join(lines)


def generic_grammar(functions: Mapping[str, Any], choice: str) -> str:
    """Grammar for ``{"tool_calls": [...]}`` with each call's arguments valid for its function."""
    names = list(functions) if choice in ("auto", "required") else [choice]
    call_schemas = [{"type": "object", "properties": {"name": {"const": name}, "arguments": functions[name]},
                     "required": ["name", "arguments"]} for name in names]
    call = call_schemas[0] if len(call_schemas) == 1 else {"anyOf": call_schemas}
    many = {"type": "array", "items": call, "minItems": 1}
    if choice not in ("auto", "required"):
        many["maxItems"] = 1
    return schema_to_gbnf({"type": "object", "properties": {"tool_calls": many}, "required": ["tool_calls"]})


GENERIC_TRIGGER = r'\{\s*"tool_calls"'


def functionary_grammar(functions: Mapping[str, Any], choice: str) -> str:
    names = list(functions) if choice in ("auto", "required") else [choice]
    grammar = schema_to_gbnf({"anyOf": [functions[n] for n in names]} if len(names) > 1 else functions[names[0]])
    heads = " | ".join(literal(f"to=functions.{n}:\n") for n in names)
    return grammar.replace("root ::=", "arguments ::=", 1) + f'root ::= " "? ( {heads} ) arguments\n'


# --- reading calls back -------------------------------------------------------------------
def _json_values(text: str) -> list[Any]:
    """Every JSON value that starts at a '{' or '[' and parses (raw_decode), left to right."""
    decoder, values, pos = json.JSONDecoder(), [], 0
    while True:
        starts = [i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0]
        if not starts:
            return values
        start = min(starts)
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        values.append(value)
        pos = end


def _call(entry: Any) -> ToolCall | None:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        return None
    arguments = entry.get("arguments", entry.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    return ToolCall(entry["name"], json.dumps(arguments, ensure_ascii=False))


def parse_tool_calls(text: str, known: Mapping[str, Any]) -> tuple[str | None, list[ToolCall]]:
    """Split model output into (content, tool calls); only calls to ``known`` functions count."""
    stripped = text.strip()
    found: list[ToolCall] = []
    content: str | None = text

    def keep(calls: list[ToolCall | None]) -> list[ToolCall]:
        return [c for c in calls if c is not None and c.name in known]

    if "<tool_call>" in stripped:  # Hermes / Qwen
        bodies = re.findall(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", stripped, re.S)
        found = keep([_call(v) for body in bodies for v in _json_values(body)[:1]])
        content = stripped.split("<tool_call>", 1)[0].strip() or None
    elif "[TOOL_CALLS]" in stripped:  # Mistral
        rest = stripped.split("[TOOL_CALLS]", 1)[1]
        named = re.findall(r"([A-Za-z0-9_.-]+)\[ARGS\]", rest)
        if named:
            values = _json_values(rest)
            found = keep([_call({"name": n, "arguments": v}) for n, v in zip(named, values)])
        else:
            values = _json_values(rest)
            entries = values[0] if values and isinstance(values[0], list) else values
            found = keep([_call(e) for e in entries])
        content = stripped.split("[TOOL_CALLS]", 1)[0].strip() or None
    elif re.search(r"to=functions\.", stripped):  # functionary
        matches = list(re.finditer(r"to=functions\.([A-Za-z0-9_.-]+):", stripped))
        for match, following in zip(matches, matches[1:] + [None]):
            body = stripped[match.end():following.start() if following else None]
            values = _json_values(body)
            if values:
                found += keep([_call({"name": match.group(1), "arguments": values[0]})])
        content = stripped[:matches[0].start()].strip() or None
    else:
        body = stripped.removeprefix("<|python_tag|>")
        values = _json_values(body) if body.startswith(("{", "[")) else []
        if values and isinstance(values[0], Mapping) and "tool_calls" in values[0]:  # generic
            found = keep([_call(e) for e in values[0]["tool_calls"] or []])
        elif values:  # Llama 3.x: one object, or several separated by ';'
            entries = values[0] if isinstance(values[0], list) else values
            found = keep([_call(e) for e in entries])
        if found:
            content = None
    return content, found
