"""The Jinja2 sandbox templates run in, with a bound on every value and on the work of a render.

A template comes from an API caller and is rendered for every recipient, by the API
at creation and by a worker on its event loop, so a few bytes of it must not be able
to make a huge value or a long computation. Jinja's sandbox keeps a template away
from Python objects; this module adds the bounds:

* every value an operator or filter makes is at most :data:`MAX_TEXT` characters,
  and a list counts as the text it would print as (``[[1]*400]*400`` is refused);
* the inputs of a filter, a ``%`` or a ``~`` are weighed *before* it runs, since
  ``str()`` of a list, ``title`` or ``striptags`` cost time before their result
  can be checked;
* everything a render makes is charged to one budget per render (a
  :class:`~contextvars.ContextVar`, so that threads rendering the same template
  do not share it), which bounds a template with many expressions;
* only text, numbers, booleans and None are written out: a method, a list or any
  other object would otherwise print as its ``repr`` (a heap address).

Every refusal is a :class:`~jinja2.exceptions.SecurityError`, a TemplateError.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: The most characters a filter or operator may produce (and a list may print as).
MAX_TEXT = 100_000
#: The largest integer argument a filter accepts (widths, lengths, precisions).
_MAX_INT_ARG = 10_000
#: The largest integer an operator may produce, in bits.
_MAX_INT_BITS = 4096
#: The widest field a ``%`` format may ask for.
_MAX_FORMAT_WIDTH = 1000

#: Filters that cost much more per character than a copy (measured on 100k characters
#: of their worst input: title 35 ms, striptags 31 ms, urlencode 14 ms, wordcount 11 ms,
#: against about 0.2 ms for upper or escape): their input is charged this many times.
_SLOW_FILTERS = {"title": 32, "striptags": 32, "urlencode": 16, "wordcount": 8}

_ALLOWED_FILTERS = frozenset(
    {
        "abs",
        "capitalize",
        "count",
        "d",
        "default",
        "e",
        "escape",
        "filesizeformat",
        "first",
        "float",
        "forceescape",
        "format",
        "int",
        "last",
        "length",
        "lower",
        "replace",
        "round",
        "safe",
        "string",
        "striptags",
        "title",
        "trim",
        "truncate",
        "upper",
        "urlencode",
        "wordcount",
    }
)

_FORMAT_NUMBERS = re.compile(r"%[^a-zA-Z%]*")
_DIGITS = re.compile(r"\d+")

# What is left of the current render's budget, in characters; None outside a render.
_budget: ContextVar[list[int] | None] = ContextVar("mailsched_template_budget", default=None)


def _too_large() -> SecurityError:
    return SecurityError(f"a value may be at most {MAX_TEXT} characters")


@contextmanager
def budget(characters: int) -> Iterator[None]:
    """Charge everything rendered inside the block to a budget of ``characters``."""
    token = _budget.set([characters])
    try:
        yield
    finally:
        _budget.reset(token)


def _charge(characters: int) -> None:
    left = _budget.get()
    if left is not None:
        left[0] -= characters
        if left[0] < 0:
            raise SecurityError("the template does too much work for one message")


def weight(value: Any, limit: int = MAX_TEXT) -> int:
    """About how many characters ``value`` prints as; stops counting past ``limit``.

    Iterative, and it stops early, so weighing a deep or huge list costs at most
    ``limit`` steps, not the size of the list.
    """
    # Text and numbers first: nearly every value weighed is one.
    kind = type(value)
    if kind is str:
        return len(value)
    if kind is int or kind is bool:
        return int(value.bit_length()) // 3 + 1
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, list | tuple):
            total += 2 + 2 * len(item)
            stack.extend(item[: max(0, limit - total + 1)])
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend(list(item.items())[: max(0, limit - total + 1)])
        else:
            total += 24
    return total


def _check_format(spec: str) -> None:
    for directive in _FORMAT_NUMBERS.findall(spec):
        if "*" in directive or any(int(n) > _MAX_FORMAT_WIDTH for n in _DIGITS.findall(directive)):
            raise SecurityError(f"format widths are limited to {_MAX_FORMAT_WIDTH}")


def _check_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """The weight of the arguments; SecurityError for a number or a value too large."""
    total = 0
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_INT_ARG:
            raise SecurityError(f"numbers given to filters are limited to {_MAX_INT_ARG}")
        if isinstance(value, Context | Undefined):
            continue
        size = weight(value)
        if size > MAX_TEXT:
            raise _too_large()
        total += size
    return total


def _check_result(value: Any) -> Any:
    size = weight(value)
    if size > MAX_TEXT:
        raise _too_large()
    _charge(size)
    return value


def _guarded(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    slow = _SLOW_FILTERS.get(name, 1)

    @functools.wraps(func)  # keeps jinja_pass_arg: Jinja still passes the context it wants
    def call(*args: Any, **kwargs: Any) -> Any:
        _charge(_check_args(args, kwargs) * slow)
        strings = [a for a in args if isinstance(a, str)]
        if name == "replace" and len(strings) >= 3:
            text, old, new = strings[-3:]
            hits = text.count(old) if old else len(text) + 1
            if len(text) + hits * max(0, len(new) - len(old)) > MAX_TEXT:
                raise _too_large()
        if name == "format" and strings:
            _check_format(strings[0])
        return _check_result(func(*args, **kwargs))

    return call


def _bits(value: Any) -> int:
    return value.bit_length() if isinstance(value, int) else 0


def _check_operands(operator_: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too large, before it is made."""
    if operator_ == "*":
        if _bits(left) + _bits(right) > _MAX_INT_BITS:
            raise SecurityError("the number is too large")
        for sequence, times in ((left, right), (right, left)):
            if (
                isinstance(sequence, str | list | tuple)
                and isinstance(times, int)
                and weight(sequence) * max(times, 0) > MAX_TEXT
            ):
                raise _too_large()
    elif operator_ == "**" and isinstance(left, int) and isinstance(right, int):
        if max(_bits(left), 1) * abs(right) > _MAX_INT_BITS:
            raise SecurityError("the number is too large")
    elif operator_ == "%" and isinstance(left, str):
        _check_format(left)
        if weight(right) > MAX_TEXT:
            raise _too_large()
    elif operator_ == "+" and weight(left) + weight(right) > MAX_TEXT:
        raise _too_large()


def _finalize(value: Any) -> Any:
    """What an expression may write into a message: text, a number, a boolean or None."""
    if value is None or isinstance(value, str | int | float | Undefined):
        return value
    kind = "a method or function" if callable(value) else f"a {type(value).__name__}"
    raise SecurityError(f"{kind} cannot be written into a message; write text or a number")


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with ``~`` weighed before it joins (it is no operator
    the sandbox can intercept)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_checked(context.eval_ctx.autoescape, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with the operators that can make huge values checked first."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        _check_operands(operator_, left, right)
        return _check_result(self.binop_table[operator_](left, right))

    def concat_checked(self, autoescape: bool, parts: tuple[Any, ...]) -> str:
        """``a ~ b``: refused when the parts would print as more than MAX_TEXT."""
        if sum(weight(part) for part in parts) > MAX_TEXT:
            raise _too_large()
        return _check_result((markup_join if autoescape else str_join)(parts))  # type: ignore[no-any-return]

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        if isinstance(argument, slice):
            # A slice is a copy: charged like any other value made.
            _charge(weight(value))
        return value

    def is_safe_callable(self, obj: Any) -> bool:
        # Calls are refused when the template is compiled; this is the second lock.
        return False


def environment(*, html: bool) -> Environment:
    """A sandbox with the allowed filters only; ``html`` escapes every value not marked safe."""
    env = Environment(
        autoescape=html,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,
        finalize=_finalize,
    )
    env.globals.clear()
    env.filters = {
        name: _guarded(name, func) for name, func in env.filters.items() if name in _ALLOWED_FILTERS
    }
    return env


__all__ = ["MAX_TEXT", "Environment", "budget", "environment", "weight"]
