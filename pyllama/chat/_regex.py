"""JSON Schema ``pattern`` regexes as GBNF, for the text inside a JSON string.

Covers what schemas use in practice: literals, escapes (\\d \\w \\s and their negations),
character classes, ``.``, groups (also ``(?:``), alternation, and the quantifiers
``* + ? {m} {m,} {m,n}``; ``^``/``$`` at the ends. Generated characters never include a
raw quote, backslash or control character, so the string stays valid JSON.
"""

from __future__ import annotations

import json

from ..errors import RegexError

JSON_UNSAFE = '"\\\\\\x00-\\x1F'  # inside a GBNF class: quote, backslash, control characters
ANY = f"[^{JSON_UNSAFE}]"
SHORTHANDS = {"d": "[0-9]", "w": "[a-zA-Z0-9_]", "s": "[ \\t]",
              "D": f"[^0-9{JSON_UNSAFE}]", "W": f"[^a-zA-Z0-9_{JSON_UNSAFE}]", "S": f"[^ \\t{JSON_UNSAFE}]"}


def _literal(char: str) -> str:
    return json.dumps(json.dumps(char)[1:-1])


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.text, self.pos = pattern, 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        char = self.peek()
        if not char:
            raise RegexError("the pattern ends too early")
        self.pos += 1
        return char

    def alternation(self) -> str:
        options = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else "( " + " | ".join(o or '""' for o in options) + " )"

    def sequence(self) -> str:
        parts = []
        while self.peek() not in ("", "|", ")"):
            atom = self.atom()
            parts.append(atom + self.quantifier())
        return " ".join(parts)

    def atom(self) -> str:
        char = self.take()
        if char == "(":
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self.peek() == "?":
                raise RegexError(f"group syntax '(?{self.text[self.pos + 1:self.pos + 2]}' is not supported")
            inner = self.alternation()
            if self.take() != ")":
                raise RegexError("unbalanced parenthesis")
            return f"( {inner or chr(34) * 2} )"
        if char == "[":
            return self.char_class()
        if char == ".":
            return ANY
        if char == "\\":
            escaped = self.take()
            if escaped in SHORTHANDS:
                return SHORTHANDS[escaped]
            if escaped.isalnum() and escaped not in "nt":
                raise RegexError(f"escape \\{escaped} is not supported")
            return _literal({"n": "\n", "t": "\t"}.get(escaped, escaped))
        if char in "*+?{":
            raise RegexError(f"quantifier {char!r} has nothing to repeat")
        if char in "^$":
            raise RegexError("anchors are only supported at the ends of the pattern")
        return _literal(char)

    def char_class(self) -> str:
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        body = ""
        first = True
        while True:
            char = self.take()
            if char == "]" and not first:
                break
            first = False
            if char == "\\":
                escaped = self.take()
                if escaped in "dws":
                    body += SHORTHANDS[escaped][1:-1]
                elif escaped in "DWS":
                    raise RegexError(f"\\{escaped} inside a character class is not supported")
                else:
                    body += {"n": "\\n", "t": "\\t"}.get(escaped, "\\" + escaped)
            elif char in '"':
                body += '\\"'
            else:
                body += char
        return f"[^{body}{JSON_UNSAFE}]" if negated else f"[{body}]"

    def quantifier(self) -> str:
        char = self.peek()
        if char in ("*", "+", "?"):
            self.pos += 1
            result = char
        elif char == "{":
            end = self.text.find("}", self.pos)
            if end < 0:
                raise RegexError("unclosed {")
            spec = self.text[self.pos + 1:end]
            low, _, high = spec.partition(",")
            if not low.isdigit() or (high and not high.isdigit()):
                raise RegexError(f"bad repetition {{{spec}}}")
            self.pos = end + 1
            result = f"{{{spec}}}"
        else:
            return ""
        if self.peek() == "?":  # lazy: the same set of strings
            self.pos += 1
        return result


def regex_to_gbnf(pattern: str) -> str:
    body = pattern[1:] if pattern.startswith("^") else ".*" + pattern
    body = body[:-1] if body.endswith("$") and not body.endswith("\\$") else body + ".*"
    parser = _Parser(body)
    result = parser.alternation()
    if parser.pos != len(body):
        raise RegexError(f"unexpected {body[parser.pos]!r} at {parser.pos}")
    return f"( {result} )" if result else '""'
