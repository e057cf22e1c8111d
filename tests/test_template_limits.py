"""Issue 26: a chat template (code from whoever made the model file) is bounded in what it may
make and how long it may take; past a limit, a clear error names it."""

from __future__ import annotations

import sys
import time

import pytest

from pyllama.chat import sandbox
from pyllama.chat.template import ChatTemplate
from pyllama.errors import ChatTemplateError, TemplateLimitError

MESSAGES = [{"role": "user", "content": "hi"}]

TOO_LARGE = [
    "{{ 'x' * 1000000000 }}",
    "{{ 1000000000 * 'x' }}",
    "{{ ['x'] * 1000000000 }}",
    "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{{ 'x'|center(1000000000) }}",
    "{{ 'x'|indent(1000000000, true) }}",
    "{{ '%1000000000s' % 'x' }}",
    "{{ '%*s' % (1000000000, 'x') }}",
    "{{ '%1000000000s'|format('x') }}",
    "{{ '{:>1000000000}'.format('x') }}",
    "{{ ('x' * 9999)|replace('x', 'x' * 9999) }}",
    "{{ (['x' * 999999] * 99)|join }}",
    "{% for i in range(100000) %}{{ 'y' * 99 }}{% endfor %}",  # each piece small, the prompt not
]


@pytest.mark.parametrize("source", TOO_LARGE)
def test_a_template_that_makes_too_much_is_refused_naming_the_limit(source):
    started = time.perf_counter()
    with pytest.raises(TemplateLimitError, match=f"at most {sandbox.MAX_LENGTH:,}"):
        ChatTemplate(source).render(MESSAGES)
    assert time.perf_counter() - started < 30  # refused, not built (1 GB took 12.8 s)


def test_a_huge_power_is_refused():
    with pytest.raises(TemplateLimitError, match="bits"):
        ChatTemplate("{{ 10 ** 100000000 }}").render(MESSAGES)


def test_a_template_that_runs_too_long_is_stopped(monkeypatch):
    monkeypatch.setattr(sandbox, "MAX_SECONDS", 0.2)
    before = sys.gettrace()
    with pytest.raises(TemplateLimitError, match="0.2 s"):  # a loop that makes nothing at all
        ChatTemplate("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}").render(
            MESSAGES)
    assert sys.gettrace() is before  # a debugger's or coverage's trace is given back


def test_what_a_template_raises_is_a_template_error():
    with pytest.raises(ChatTemplateError, match="ZeroDivisionError"):
        ChatTemplate("{{ 1 / 0 }}").render(MESSAGES)
    assert issubclass(TemplateLimitError, ValueError)  # a bad input, as the server's 400 says


def test_ordinary_templates_render_as_before():
    source = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content ~ '!' }}{{ '%-3s' % 'x' }}{{ m|tojson }}"
              "{{ '{}'.format(loop.index) }}{{ 'ab' * 2 }}{{ [1] + [2] }}{{ 'x'|center(5) }}{{ ['a', 'b']|join(',') }}"
              "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert ChatTemplate(source).render(MESSAGES) == ('<|user|>hi!x  {"role": "user", "content": "hi"}1abab[1, 2]'
                                                     '  x  a,b<|assistant|>')
