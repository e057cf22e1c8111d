"""``llama_cpp.LlamaGrammar``: GBNF text for the ``grammar=`` argument.

llama.cpp parses it when a generation starts, against that model's vocabulary: a grammar
that does not parse raises ValueError there.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ...chat.json_schema import json_grammar, schema_to_gbnf

JSON_GBNF = json_grammar()  # any JSON object


class LlamaGrammar:
    def __init__(self, *, _grammar: str, root: str = "root") -> None:
        if root != "root":
            raise ValueError(f"a grammar's start rule is 'root' here, got {root!r}")
        self._grammar = _grammar
        self.root = root

    @classmethod
    def from_string(cls, grammar: str, verbose: bool = True) -> LlamaGrammar:
        return cls(_grammar=grammar)

    @classmethod
    def from_file(cls, file: str | os.PathLike[str], verbose: bool = True) -> LlamaGrammar:
        with open(file, encoding="utf-8") as f:
            return cls.from_string(f.read())

    @classmethod
    def from_json_schema(cls, json_schema: str | dict[str, Any], verbose: bool = True) -> LlamaGrammar:
        """The grammar of the JSON documents a JSON schema (text, or already parsed) accepts."""
        schema = json.loads(json_schema) if isinstance(json_schema, str) else json_schema
        return cls.from_string(schema_to_gbnf(schema))

    def __str__(self) -> str:
        return self._grammar

    def __repr__(self) -> str:
        return f"LlamaGrammar.from_string({self._grammar!r})"
