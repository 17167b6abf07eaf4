"""The Jinja2 sandbox templates run in, with a bound on every value and on the work of a render.

A template comes from an API caller and is rendered for every recipient, by the API
at creation and by a worker on its event loop, so a few bytes of it must not be able
to make a huge value or a long computation. Jinja's sandbox keeps a template away
from Python objects; this module adds the bounds:

* every value an operator or filter makes is at most :data:`MAX_TEXT` characters,
  and a list counts as the text it would print as (``[[1]*400]*400`` is refused);
* the inputs of a filter, a ``%`` or a ``~`` are weighed *before* it runs, since
  ``str()`` of a list, ``title`` or ``striptags`` cost time before their result
  can be checked; ``replace`` and ``format``/``%``, whose result can be the square
  of their inputs, weigh it from their inputs as they will convert them (``1`` is
  ``"1"``, ``"<"`` escaped is ``"&lt;"``, ``%(a)s`` may print ``a`` many times);
* everything a render makes is charged to one budget per render (a
  :class:`~contextvars.ContextVar`, so that threads rendering the same template
  do not share it), which bounds a template with many expressions; filters run
  only in a render, never while Jinja compiles (it would fold constants);
* only text, numbers, booleans and None are written out: a method, a list or any
  other object would otherwise print as its ``repr`` (a heap address); and looking
  up a method is refused, since it could otherwise be made text (``~``, ``string``)
  and calls are refused anyway.

Every refusal is a :class:`~jinja2.exceptions.SecurityError`, a TemplateError.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import FilterArgumentError, SecurityError
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape, soft_str

#: The most characters a filter or operator may produce (and a list may print as).
MAX_TEXT = 100_000
#: The largest integer argument a filter accepts (widths, lengths, precisions).
_MAX_INT_ARG = 10_000
#: The largest integer an operator may produce, in bits.
_MAX_INT_BITS = 4096
#: The widest field a ``%`` format may ask for.
_MAX_FORMAT_WIDTH = 1000
#: The most characters a number conversion of ``%`` may write for a float that weighs
#: 24 (316 for ``'%f' % 1e308``), and what a sign and ``0x`` may add to any other.
_NUMBER_CHARS = 330
_NUMBER_CONVERSIONS = frozenset("diufF")
_PREFIX_CHARS = 3
#: Weighing one ``%`` directive costs about 2 µs, 40 times what ``str %`` takes for it:
#: as much as the budget allows for about 250 characters of work.
_DIRECTIVE_WORK = 256
#: How many characters ``repr`` may write per character of text: ``'\U000e0001'``.
_REPR_GROWTH = 10
#: How many characters escaping may write per character: ``&#34;`` for ``"``.
_ESCAPE_GROWTH = 5

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

# What follows the ``%`` and mapping key of a directive, as ``str %`` reads it: flags,
# width, precision, a length modifier and the conversion.
_DIRECTIVE = re.compile(r"[-+ #0]*(\*|[0-9]*)(?:\.(\*|[0-9]*))?[hlL]?(.?)", re.DOTALL)
_PARENS = re.compile(r"[()]")

# What is left of the current render's budget, in characters; None outside a render.
_budget: ContextVar[list[int] | None] = ContextVar("mailsched_template_budget", default=None)
# Whether Jinja is compiling a template in this thread (see Environment.compile).
_compiling: ContextVar[bool] = ContextVar("mailsched_template_compiling", default=False)


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
    if isinstance(value, str):
        return len(value)
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            # Text in a list prints as its repr: quoted, and escaped.
            total += _repr_length(item)
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


def _repr_length(text: str) -> int:
    """At most how long ``repr(text)`` is, without making it."""
    if text.isprintable():
        return len(text) + text.count("\\") + text.count("'") + 2
    return _REPR_GROWTH * len(text) + 2


def _key_end(spec: str, start: int) -> int:
    """Where the mapping key opening at ``spec[start]`` ends: ``str %`` lets parentheses nest."""
    depth = 0
    for paren in _PARENS.finditer(spec, start):
        depth += 1 if paren.group() == "(" else -1
        if depth == 0:
            return paren.end()
    raise SecurityError("incomplete format key")


def _directive_chars(width: str, precision: str | None, conversion: str) -> int:
    """What one ``%`` directive may write besides its value; SecurityError for a width
    from the values (``*``) or over :data:`_MAX_FORMAT_WIDTH`."""
    chars = 0
    for number in (width, precision or ""):
        if number == "*" or len(number) > 4 or int(number or 0) > _MAX_FORMAT_WIDTH:
            raise SecurityError(f"format widths are limited to {_MAX_FORMAT_WIDTH}")
        chars += int(number or 0)
    if conversion in _NUMBER_CONVERSIONS:
        return chars + _NUMBER_CHARS
    return chars if conversion == "%" else chars + _PREFIX_CHARS


def _check_format(spec: str, values: Any) -> None:
    """Refuse ``spec % values`` when it could make more than MAX_TEXT characters.

    Every width and precision counts, and a value once per directive that may print
    it: ``'%(a)s%(a)s' % {'a': text}`` is twice ``text``. The weighing is charged to
    the render's budget first, since a spec can be mostly directives.
    """
    _charge(spec.count("%") * _DIRECTIVE_WORK)
    fixed = len(spec)
    keyed = 0
    shown = 1
    at = spec.find("%")
    while at >= 0:
        at += 1
        if spec.startswith("(", at):
            at = _key_end(spec, at)
            keyed += 1
        found = _DIRECTIVE.match(spec, at)
        assert found is not None  # every part of the pattern may be empty
        width, precision, conversion = found.groups()
        fixed += _directive_chars(width, precision, conversion)
        if conversion in ("r", "a"):
            shown = _REPR_GROWTH
        at = spec.find("%", found.end())
    given = weight(values) * shown
    if not isinstance(values, tuple):
        given *= max(keyed, 1)
    if isinstance(spec, Markup):
        given *= _ESCAPE_GROWTH  # Markup's % escapes the values
    if fixed + given > MAX_TEXT:
        raise _too_large()


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
        if _compiling.get():
            # Jinja then leaves the filter to the render, and its budget.
            raise SecurityError("filters run when a template is rendered")
        _charge(_check_args(args, kwargs) * slow)
        return _check_result(func(*args, **kwargs))

    return call


@pass_eval_context
def _replace(
    eval_ctx: nodes.EvalContext, s: Any, old: Any, new: Any, count: int | None = None
) -> str:
    """Jinja's ``replace``, refused before it runs when the result would be too long.

    The values are converted as Jinja's ``do_replace`` and Markup's ``replace``
    convert them, and weighed converted: ``1`` is ``"1"``; in HTML ``s`` may be
    escaped (``"<"`` is ``"&lt;"``), and into Markup ``new`` goes escaped.
    """
    if not eval_ctx.autoescape:
        s, old, new = str(s), str(old), str(new)
    else:
        # Jinja's own test, precedence and all: a safe ``old`` escapes ``s`` even when
        # it is Markup already (which changes nothing).
        if hasattr(old, "__html__") or (hasattr(new, "__html__") and not hasattr(s, "__html__")):
            s = escape(s)
        else:
            s = soft_str(s)
        old, new = soft_str(old), escape(new) if isinstance(s, Markup) else soft_str(new)
    hits = s.count(old)
    if count is not None and count >= 0:
        hits = min(hits, count)
    if len(s) + hits * max(0, len(new) - len(old)) > MAX_TEXT:
        raise _too_large()
    result = str.replace(s, old, new, -1 if count is None else count)
    return Markup(result) if isinstance(s, Markup) else result


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    """Jinja's ``format``, refused before it runs when the result would be too long."""
    if args and kwargs:
        raise FilterArgumentError("can't handle positional and keyword arguments at the same time")
    spec = soft_str(value)
    values = kwargs or args
    _check_format(spec, values)
    return spec % values


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
        _check_format(left, right)
    elif operator_ == "+" and weight(left) + weight(right) > MAX_TEXT:
        raise _too_large()


def _finalize(value: Any) -> Any:
    """What an expression may write into a message: text, a number, a boolean or None."""
    if value is None or isinstance(value, str | int | float | Undefined):
        return value
    kind = "a method or function" if callable(value) else f"a {type(value).__name__}"
    raise SecurityError(f"{kind} cannot be written into a message; write text or a number")


def _no_method(value: Any) -> Any:
    """``value``, unless it is a method: a template cannot call one, and written out
    (``name.upper ~ ''``, ``name.upper|string``) it prints as a heap address."""
    if callable(value) and not isinstance(value, Undefined):
        raise SecurityError(
            "a method cannot be written into a message nor called; use a filter (name|upper)"
        )
    return value


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

    def compile(self, *args: Any, **kwargs: Any) -> Any:
        """Jinja's compile, with no filter run on the way.

        Jinja writes an expression of constants into the code as its value, running
        its filters while compiling, outside any render's budget: 60 ``title``s of a
        64 kB literal took a second, for each of the three times a campaign was
        compiled. A filter refuses to run here, and Jinja leaves it to the render.
        """
        token = _compiling.set(True)
        try:
            return super().compile(*args, **kwargs)
        finally:
            _compiling.reset(token)

    def getattr(self, obj: Any, attribute: str) -> Any:
        return _no_method(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = _no_method(super().getitem(obj, argument))
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
        # Compiling leaves the syntax tree as parsed, so that it can be shared; the
        # optimizer would only fold constants, which Environment.compile stops anyway.
        optimized=False,
    )
    env.globals.clear()
    filters = {**env.filters, "format": _format, "replace": _replace}
    env.filters = {
        name: _guarded(name, func) for name, func in filters.items() if name in _ALLOWED_FILTERS
    }
    return env


__all__ = ["MAX_TEXT", "Environment", "budget", "environment", "weight"]
