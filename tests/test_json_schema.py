"""JSON Schema -> GBNF: llama.cpp accepts every grammar and every sampled output validates."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from pyllama import Llama
from pyllama.chat.json_schema import integer_range, schema_to_gbnf
from pyllama.errors import SchemaError

SCHEMAS = {
    "object-required-optional": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 10}, "age": {"type": "integer", "minimum": 0,
                                                                          "maximum": 120},
                       "nickname": {"type": "string"}},
        "required": ["name", "age"]},
    "all-optional": {"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": "null"}}},
    "additional-properties": {"type": "object", "properties": {"id": {"type": "integer"}},
                              "required": ["id"], "additionalProperties": {"type": "number"}},
    "enum-const": {"type": "object", "properties": {"color": {"enum": ["red", "green", 3, None]},
                                                    "kind": {"const": "point"}}, "required": ["color", "kind"]},
    "array-bounds": {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5},
                     "minItems": 2, "maxItems": 4},
    "tuple": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]},
    "string-formats": {"type": "object", "properties": {"d": {"type": "string", "format": "date"},
                                                        "u": {"type": "string", "format": "uuid"},
                                                        "t": {"type": "string", "format": "date-time"}},
                       "required": ["d", "u", "t"]},
    "pattern": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}(x|yz)?$"},
    "string-length": {"type": "string", "minLength": 3, "maxLength": 5},
    "any-of": {"anyOf": [{"type": "integer", "exclusiveMinimum": 10}, {"type": "string", "maxLength": 3}]},
    "one-of-objects": {"oneOf": [{"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
                                 {"type": "object", "properties": {"y": {"type": "string"}}, "required": ["y"]}]},
    "all-of": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                         {"type": "object", "properties": {"b": {"type": "string", "maxLength": 4}},
                          "required": ["b"]}]},
    "refs-recursive": {"$defs": {"node": {"type": "object", "properties": {
        "v": {"type": "integer", "minimum": 0, "maximum": 9},
        "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}}, "required": ["v", "next"]}},
        "$ref": "#/$defs/node"},
    "type-list": {"type": ["integer", "null"]},
    "tuple-items": {"$schema": "http://json-schema.org/draft-04/schema#", "type": "array",  # items as a list
                    "items": [{"type": "integer"}, {"type": "string", "maxLength": 3}]},
    "number": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]},
}


# Byte tokens 0x80-0xFF can spell overlong or surrogate UTF-8 that llama.cpp's grammar takes for
# code points and Python rejects; a random model picks them freely, real models do not.
NO_HIGH_BYTES = {3 + b: -100.0 for b in range(0x80, 0x100)}


@pytest.fixture(scope="module")
def llm(tiny_spm):
    with Llama(str(tiny_spm[0]), n_ctx=512, seed=3) as loaded:
        yield loaded


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_sample_validates(llm, name):
    schema = SCHEMAS[name]
    grammar = schema_to_gbnf(schema)
    for seed in range(6):
        text = llm("{", max_tokens=300, temperature=1.0, seed=seed, grammar=grammar,
                   logit_bias=NO_HIGH_BYTES)["choices"][0]["text"]
        try:
            value = json.loads(text)
        except json.JSONDecodeError:  # a sample cut off by max_tokens is the only excuse
            assert len(llm.tokenize(text.encode(), add_bos=False)) >= 290, text
            continue
        jsonschema.validate(value, schema)


@pytest.mark.parametrize("low, high", [(0, 0), (-15, 237), (18, None), (None, -3), (None, 7), (-1000, -998),
                                       (5, 5), (99, 1001)])
def test_integer_ranges_are_exact(low, high):
    grammar = integer_range(low, high)
    regex = _gbnf_to_regex(grammar)
    for n in range(-1200, 1200):
        inside = (low is None or n >= low) and (high is None or n <= high)
        assert bool(re.fullmatch(regex, str(n))) == inside, (n, grammar)


def _gbnf_to_regex(expression: str) -> str:
    """The tiny GBNF subset integer_range emits, as a Python regex (for checking it exhaustively)."""
    regex = re.sub(r'"([^"]*)"', lambda m: re.escape(m.group(1)), expression)
    return regex.replace(" ", "")


@pytest.mark.parametrize("schema, message", [
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "not": {}}, "'not' is not supported"),
    ({"$ref": "#/$defs/missing"}, "does not point"),
    ({"type": "wat"}, "unknown type"),
    ({"type": "integer", "minimum": 5, "maximum": 1}, "empty"),
    ({"type": "string", "pattern": "(?<=a)b"}, "not supported"),
    ({"type": "array", "minItems": 3, "maxItems": 1}, "maxItems"),
    ({"enum": []}, "non-empty"),
    ({"allOf": [{"type": "string"}]}, "only objects"),
])
def test_unsupported_or_invalid_schemas_raise(schema, message):
    with pytest.raises(SchemaError, match=message):
        schema_to_gbnf(schema)
