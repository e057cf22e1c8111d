"""JSON Schema to GBNF, so that sampling can only produce JSON that validates.

Supported: objects (required and optional properties, additionalProperties), enum and const,
arrays (items, prefixItems, minItems/maxItems), strings (minLength/maxLength, the date, time,
date-time and uuid formats, patterns), integers with bounds (exact), numbers, booleans, null,
anyOf/oneOf, allOf of objects, local $ref into $defs/definitions (recursion included).
Number bounds on non-integers are not enforced. Anything else raises SchemaError naming it.
An object's properties come out in the schema's order, and an object with ``properties``
and no ``additionalProperties`` accepts no other keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..errors import RegexError, SchemaError
from ._regex import regex_to_gbnf


SPACE = '| " " | "\\n" [ \\t]{0,20}'
PRIMITIVES = {
    "ws": SPACE,
    "value": "object | array | string | number | boolean | null",
    "object": '"{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? "}" ws',
    "array": '"[" ws ( value ( "," ws value )* )? "]" ws',
    "char": '[^"\\\\\\x7F\\x00-\\x1F] | "\\\\" ( ["\\\\/bfnrt] | "u" [0-9a-fA-F]{4} )',
    "string": '"\\"" char* "\\"" ws',
    "number": '"-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]{1,4} )? ws',
    "integer": '"-"? ( "0" | [1-9] [0-9]{0,15} ) ws',
    "boolean": '( "true" | "false" ) ws',
    "null": '"null" ws',
}
FORMATS = {
    "date": '[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )',
    "time": '( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? '
            '( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )',
    "uuid": '[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}',
}
FORMATS["date-time"] = f'{FORMATS["date"]} "T" {FORMATS["time"]}'
UNSUPPORTED = ("not", "if", "then", "else", "patternProperties", "dependentRequired", "dependentSchemas",
               "propertyNames", "contains", "unevaluatedProperties", "uniqueItems")


def literal(text: str) -> str:
    """A GBNF string literal for ``text``."""
    return json.dumps(text, ensure_ascii=False)


def json_literal(value: Any) -> str:
    return literal(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


# --- integer ranges -----------------------------------------------------------------------
def _same_length(low: str, high: str) -> str:
    """Digits from ``low`` to ``high`` (equal lengths), as a GBNF sequence."""
    if not low:
        return ""
    if low == high:
        return literal(low)
    if len(low) == 1:
        return f"[{low}-{high}]"
    if low[0] == high[0]:
        return f"{literal(low[0])} {_same_length(low[1:], high[1:])}"
    rest = len(low) - 1
    if set(low[1:]) == {"0"} and set(high[1:]) == {"9"}:
        return f"[{low[0]}-{high[0]}] [0-9]{{{rest}}}"
    parts = [f"{literal(low[0])} {_same_length(low[1:], '9' * rest)}"]
    if int(high[0]) - int(low[0]) > 1:
        parts.append(f"[{int(low[0]) + 1}-{int(high[0]) - 1}] [0-9]{{{rest}}}")
    parts.append(f"{literal(high[0])} {_same_length('0' * rest, high[1:])}")
    return "( " + " | ".join(parts) + " )"


def _naturals(low: int, high: int | None) -> str:
    """Non-negative integers in [low, high] (high None: unbounded), without leading zeros."""
    parts = []
    length = len(str(low))
    top = len(str(high)) if high is not None else length
    for n in range(length, top + 1):
        start = max(low, 10 ** (n - 1) if n > 1 else 0)
        end = min(high, 10 ** n - 1) if high is not None else 10 ** n - 1
        if start <= end:
            parts.append(_same_length(str(start), str(end)))
    if high is None:
        parts.append(f"[1-9] [0-9]{{{length},}}")
    return parts[0] if len(parts) == 1 else "( " + " | ".join(parts) + " )"


def integer_range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None and low > high:
        raise SchemaError(f"integer bounds are empty: minimum {low} > maximum {high}")
    parts = []
    if low is None or low < 0:  # negative part: magnitudes from max(1, -high) up to -low
        smallest = 1 if high is None or high >= 0 else -high
        parts.append(f'"-" {_naturals(smallest, None if low is None else -low)}')
    if high is None or high >= 0:
        parts.append(_naturals(max(0, low or 0), high))
    return "( " + " | ".join(parts) + " )"


# --- the converter ------------------------------------------------------------------------
class _Converter:
    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.root_schema = schema
        self.rules: dict[str, str] = {}
        self._refs: dict[str, str] = {}

    def rule(self, name: str, body: str) -> str:
        name = re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-") or "r"
        if self.rules.get(name, body) != body:
            i = 2
            while self.rules.get(f"{name}{i}", body) != body:
                i += 1
            name = f"{name}{i}"
        self.rules[name] = body
        return name

    def primitive(self, name: str) -> str:
        if name not in self.rules:
            self.rules[name] = PRIMITIVES[name]  # before its dependencies: value and object refer to each other
            for dependency in re.findall(r"\b(ws|value|object|array|char|string|number|boolean|null)\b",
                                         PRIMITIVES[name]):
                self.primitive(dependency)
        return name

    def resolve(self, ref: str) -> tuple[str, Mapping[str, Any]]:
        match = re.fullmatch(r"#/(\$defs|definitions)/(.+)", ref)
        if not match or not isinstance(self.root_schema.get(match.group(1)), Mapping) or \
                match.group(2) not in self.root_schema[match.group(1)]:
            raise SchemaError(f"$ref {ref!r} does not point into this schema's $defs/definitions")
        return match.group(2), self.root_schema[match.group(1)][match.group(2)]

    def visit(self, schema: Any, name: str, path: str) -> str:
        if schema is True or schema == {}:
            return self.primitive("value")
        if not isinstance(schema, Mapping):
            raise SchemaError(f"{path}: a schema must be an object, got {schema!r}")
        for keyword in UNSUPPORTED:
            if keyword in schema:
                raise SchemaError(f"{path}: '{keyword}' is not supported")
        if "$ref" in schema:
            ref = schema["$ref"]
            if ref not in self._refs:
                ref_name, target = self.resolve(ref)
                self._refs[ref] = rule_name = self.rule(ref_name, "")  # reserve: recursion refers to it
                self.rules[rule_name] = self.visit(target, ref_name, ref)
            return self._refs[ref]
        if "const" in schema or "enum" in schema:
            self.primitive("ws")  # their rules end in ws; a top-level enum had no ws rule, so llama.cpp refused it
        if "const" in schema:
            return self.rule(name, f"{json_literal(schema['const'])} ws")
        if "enum" in schema:
            if not isinstance(schema["enum"], list) or not schema["enum"]:
                raise SchemaError(f"{path}: enum must be a non-empty list")
            return self.rule(name, "( " + " | ".join(json_literal(v) for v in schema["enum"]) + " ) ws")
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                options = [self.visit(s, f"{name}-{i}", f"{path}/{keyword}/{i}") for i, s in enumerate(schema[keyword])]
                return self.rule(name, " | ".join(options))
        if "allOf" in schema:
            return self.visit(self._merge(schema, path), name, path)
        kind = schema.get("type")
        if isinstance(kind, list):
            options = [self.visit({**schema, "type": k}, f"{name}-{k}", path) for k in kind]
            return self.rule(name, " | ".join(options))
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else None
        handler = {"object": self.object, "array": self.array, "string": self.string, "integer": self.integer,
                   "number": lambda s, n, p: self.primitive("number"),
                   "boolean": lambda s, n, p: self.primitive("boolean"),
                   "null": lambda s, n, p: self.primitive("null")}.get(kind)
        if kind is None:
            return self.primitive("value")
        if handler is None:
            raise SchemaError(f"{path}: unknown type {kind!r}")
        return handler(schema, name, path)

    def _merge(self, schema: Mapping[str, Any], path: str) -> dict[str, Any]:
        merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        for i, part in enumerate(schema["allOf"]):
            if "$ref" in part:
                part = self.resolve(part["$ref"])[1]
            if part.get("type", "object") != "object":
                raise SchemaError(f"{path}/allOf/{i}: only objects can be combined with allOf")
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += [r for r in part.get("required", []) if r not in merged["required"]]
            if "additionalProperties" in part:
                merged["additionalProperties"] = part["additionalProperties"]
        return merged

    def object(self, schema: Mapping[str, Any], name: str, path: str) -> str:
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(properties, Mapping) or not isinstance(required, list):
            raise SchemaError(f"{path}: properties must be an object and required a list")
        missing = [r for r in required if r not in properties]
        extra = schema.get("additionalProperties", not properties)
        if missing and extra is False:
            raise SchemaError(f"{path}: required {missing} are not among the properties")
        self.primitive("ws")
        pairs = {}
        for key, sub in properties.items():
            value = self.visit(sub, f"{name}-{key}", f"{path}/properties/{key}")
            pairs[key] = f'{literal(json.dumps(key, ensure_ascii=False))} ":" ws {value}'
        mandatory = [pairs[k] for k in required if k in pairs]
        optional = [pairs[k] for k in properties if k not in required]
        if extra is not False:
            value = self.primitive("value") if extra is True else self.visit(extra, f"{name}-extra", f"{path}/additionalProperties")
            self.primitive("string")
            optional.append(f'string ":" ws {value} ( "," ws string ":" ws {value} )*')
        body = " \",\" ws ".join(mandatory)
        if mandatory:
            body += "".join(f' ( "," ws {item} )?' for item in optional)
        elif optional:  # any subset of the optional ones, in order
            alternatives = [optional[i] + "".join(f' ( "," ws {o} )?' for o in optional[i + 1:])
                            for i in range(len(optional))]
            body = "( " + " | ".join(alternatives) + " )?"
        return self.rule(name, f'"{{" ws {body} "}}" ws')

    def array(self, schema: Mapping[str, Any], name: str, path: str) -> str:
        self.primitive("ws")
        tuple_items = schema.get("prefixItems", schema.get("items") if isinstance(schema.get("items"), list) else None)
        if tuple_items is not None:  # prefixItems, or draft-04's list form of items
            key = "prefixItems" if "prefixItems" in schema else "items"
            items = [self.visit(s, f"{name}-{i}", f"{path}/{key}/{i}") for i, s in enumerate(tuple_items)]
            return self.rule(name, '"[" ws ' + ' "," ws '.join(items) + ' "]" ws')
        item = self.visit(schema.get("items", True), f"{name}-item", f"{path}/items")
        low, high = int(schema.get("minItems", 0)), schema.get("maxItems")
        if high is not None and int(high) < low:
            raise SchemaError(f"{path}: maxItems {high} < minItems {low}")
        if high is not None and int(high) == 0:
            return self.rule(name, '"[" ws "]" ws')
        more = f'( "," ws {item} ){{{max(low - 1, 0)},{"" if high is None else int(high) - 1}}}'
        body = f"{item} {more}"
        return self.rule(name, f'"[" ws {body if low > 0 else f"( {body} )?"} "]" ws')

    def string(self, schema: Mapping[str, Any], name: str, path: str) -> str:
        self.primitive("ws")
        if "format" in schema and schema["format"] in FORMATS:
            return self.rule(name, f'"\\"" {FORMATS[schema["format"]]} "\\"" ws')
        if "pattern" in schema:
            try:
                return self.rule(name, f'"\\"" {regex_to_gbnf(schema["pattern"])} "\\"" ws')
            except RegexError as exc:
                raise SchemaError(f"{path}: pattern {schema['pattern']!r}: {exc}") from exc
        self.primitive("char")
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        if high is not None and int(high) < low:
            raise SchemaError(f"{path}: maxLength {high} < minLength {low}")
        repeat = "*" if low == 0 and high is None else f"{{{low},{'' if high is None else int(high)}}}"
        return self.rule(name, f'"\\"" char{repeat} "\\"" ws')

    def integer(self, schema: Mapping[str, Any], name: str, path: str) -> str:
        self.primitive("ws")
        low = schema.get("minimum")
        high = schema.get("maximum")
        if "exclusiveMinimum" in schema:
            low = int(schema["exclusiveMinimum"]) + 1
        if "exclusiveMaximum" in schema:
            high = int(schema["exclusiveMaximum"]) - 1
        if low is None and high is None:
            return self.primitive("integer")
        low = None if low is None else int(-(-low // 1))  # round a fractional minimum up
        high = None if high is None else int(high // 1)
        return self.rule(name, f"{integer_range(low, high)} ws")


def schema_to_gbnf(schema: Mapping[str, Any] | bool) -> str:
    """A GBNF grammar (root rule ``root``) whose strings are exactly the JSON values the schema allows."""
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    converter = _Converter(schema)
    root = converter.visit(schema, "root", "#")
    rules = dict(converter.rules)
    if root != "root":
        rules["root"] = root
    return "\n".join(f"{name} ::= {body}" for name, body in rules.items()) + "\n"


def json_grammar() -> str:
    """Any JSON object (``response_format={"type": "json_object"}``)."""
    return schema_to_gbnf({"type": "object"})
