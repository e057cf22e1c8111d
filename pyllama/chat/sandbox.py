"""Limits on what a chat template may make and take.

A GGUF's template is code from whoever made the file. jinja's sandbox already refuses attribute
tricks and ranges over 100,000 items, but ``{{ 'x' * 1000000000 }}`` still built a 1 GB string
(12.8 s, on every request). Here every value a template makes is bounded in size: operators
that multiply (``*``, ``**``, ``+``, ``%``), concatenation (``~``), filters and calls are checked,
before the work where its size can be known ahead, after it otherwise (growth then stops at
the first step past the limit); so is the output. Rendering is bounded in time by a trace of
the template's own lines (a loop that makes nothing still ends). Past a limit,
:class:`~pyllama.errors.TemplateLimitError` names it.
"""

from __future__ import annotations

import functools
import operator
import re
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import Concat
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import ChatTemplateError, TemplateLimitError

MAX_LENGTH = 8 << 20  # characters of a text, or items of a list, a template may make (a 2M-token prompt)
MAX_INT_BITS = 1 << 16  # how large a number ``**`` may make
MAX_SECONDS = 5.0  # how long one rendering may take (chat templates render in milliseconds)

_SIZED = (str, bytes, list, tuple, dict)
_NUMBER = re.compile(r"\d+")


def _limit(length: int, what: str) -> None:
    if length > MAX_LENGTH:
        raise TemplateLimitError(f"the chat template made {what} of {length:,} characters or items; a template "
                                 f"may make at most {MAX_LENGTH:,}")


def _checked(value: Any, what: str) -> Any:
    if isinstance(value, _SIZED):
        _limit(len(value), what)
    return value


def _check_widths(text: Any, args: Any = ()) -> None:
    """A format string's widths (``%1000000000s``, ``{:>1000000000}``, ``%*s``) before formatting."""
    if not isinstance(text, str):
        return
    widest = max((int(n) for n in _NUMBER.findall(text)), default=0)
    if "*" in text:
        widest = max([widest, *(a for a in (args if isinstance(args, tuple) else (args,)) if type(a) is int)])
    _limit(widest, "a formatted text")


def _check_binop(op: str, left: Any, right: Any) -> None:
    if op == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, _SIZED) and type(times) is int:
                _limit(len(seq) * times, f"a {type(seq).__name__}")
    elif op == "**" and type(left) is int and type(right) is int and right > 0:
        if abs(left).bit_length() * right > MAX_INT_BITS:
            raise TemplateLimitError(f"the chat template computed {left} ** {right}; a template's numbers may have "
                                     f"at most {MAX_INT_BITS:,} bits")
    elif op == "+" and isinstance(left, _SIZED) and isinstance(right, _SIZED):
        _limit(len(left) + len(right), "a sum")
    elif op == "%":
        _check_widths(left, right)


def _check_filter(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """The filters whose arguments say how large their result gets, before they make it."""
    value = args[0] if args else None
    if name in ("center", "indent"):
        width = args[1] if len(args) > 1 else kwargs.get("width", 0)
        if type(width) is int and isinstance(value, str):
            _limit(len(value) + (value.count("\n") + 1) * width, f"a text (filter {name})")
    elif name == "format":
        _check_widths(value, tuple(args[1:]))
    elif name == "replace" and len(args) >= 3 and all(isinstance(a, str) for a in args[:3]) and args[1]:
        _limit(len(value) + value.count(args[1]) * max(0, len(args[2]) - len(args[1])), "a text (filter replace)")
    elif name == "join" and isinstance(value, (list, tuple)):
        _limit(sum(len(item) for item in value if isinstance(item, str)), "a text (filter join)")


def _size_limited(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """The filter, with its result checked (and its arguments first where they tell the size)."""
    skip = 1 if getattr(function, "jinja_pass_arg", None) else 0  # the context or environment it is passed

    @functools.wraps(function)  # (keeps jinja_pass_arg)
    def limited(*args: Any, **kwargs: Any) -> Any:
        _check_filter(name, args[skip:], kwargs)
        return _checked(function(*args, **kwargs), f"a value (filter {name})")
    return limited


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {"*": operator.mul, "**": operator.pow, "+": operator.add,
                                                 "%": operator.mod}


class _CheckedConcat(CodeGenerator):
    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        """``a ~ b`` joined, then checked (a doubling loop stops at the first join past the limit)."""
        self.write("environment.checked(")
        super().visit_Concat(node, frame)
        self.write(")")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """jinja's immutable sandbox, with every value a template makes bounded in size."""

    code_generator_class = _CheckedConcat
    intercepted_binops = frozenset(_BINOPS)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _size_limited(name, f) for name, f in self.filters.items()}

    def checked(self, value: Any) -> Any:
        return _checked(value, "a text (operator ~)")

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        _check_binop(op, left, right)
        return _checked(_BINOPS[op](left, right), f"a value (operator {op})")

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        return _checked(super().call(__context, __obj, *args, **kwargs), "a value (a call)")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``"{:>1000000000}".format(x)``: its widths are checked when the method is looked up."""
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_widths(value.__self__)
        return wrapped

    def set_filter(self, name: str, function: Callable[..., Any]) -> None:
        """Add a filter of one's own, checked as the built-in ones are."""
        self.filters[name] = _size_limited(name, function)


def render(template: jinja2.Template, **context: Any) -> str:
    """The template's text, within the limits; whatever else it raises is a ChatTemplateError."""
    deadline = time.monotonic() + MAX_SECONDS

    def each_line(frame: FrameType, event: str, arg: Any) -> Callable[..., Any]:
        if time.monotonic() > deadline:
            raise TemplateLimitError(f"the chat template ran for more than {MAX_SECONDS:g} s, the most a template "
                                     "may take")
        return each_line

    def on_call(frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        return each_line if frame.f_code.co_filename == "<template>" else None  # the template's code only

    pieces, length = [], 0
    previous = sys.gettrace()  # a debugger's or coverage's, given back after
    sys.settrace(on_call)
    try:
        for piece in template.generate(**context):
            length += len(piece)
            _limit(length, "a prompt")
            pieces.append(piece)
    except (ChatTemplateError, jinja2.exceptions.TemplateError):
        raise
    except Exception as exc:  # noqa: BLE001 - {{ 1 / 0 }} and the like: the template's own failure
        raise ChatTemplateError(f"the chat template failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.settrace(previous)
    return "".join(pieces)
