"""How complex a request's grammar may be before llama.cpp sees it.

llama.cpp's GBNF parser recurses once per nested group, and compiling a grammar (and advancing
it while sampling) recurses once per rule in a chain of leading references (``a ::= b``,
``b ::= c``, ...). Neither is bounded upstream: about 30,000 nested parentheses (a 60 KB
request) or 85,000 chained rules overflow a thread's 8 MB stack and end the whole server
process with a segfault. Real grammars, those written by hand and those made from JSON
schemas, nest a few levels and have at most thousands of rules, so the limits here are far
above them and far below the crash.
"""

from __future__ import annotations

import itertools
import re

MAX_GRAMMAR_DEPTH = 1000  # nested groups
MAX_GRAMMAR_RULES = 40000  # definitions plus groups (each group is a rule of its own)

# what can hold "(" or "::=" without meaning them: literals, character classes, comments
_OPAQUE = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\r\n]*')


def grammar_shape(grammar: str) -> tuple[int, int]:
    """``(deepest nesting of groups, rules)`` of a GBNF text; an unterminated literal counts the
    parentheses inside it too, which only errs on the side of refusing."""
    structure = _OPAQUE.sub(" ", grammar)
    parens = [1 if c == "(" else -1 for c in re.findall(r"[()]", structure)]
    deepest = max(itertools.accumulate(parens), default=0)
    return max(deepest, 0), structure.count("::=") + parens.count(1)


def grammar_problem(grammar: str) -> str | None:
    """Why llama.cpp must not be given this grammar, or None."""
    depth, rules = grammar_shape(grammar)
    if depth > MAX_GRAMMAR_DEPTH:
        return f"the grammar nests groups {depth} deep; the limit is {MAX_GRAMMAR_DEPTH}"
    if rules > MAX_GRAMMAR_RULES:
        return f"the grammar has {rules} rules and groups; the limit is {MAX_GRAMMAR_RULES}"
    return None
