"""The template language of personalized campaigns: Jinja2, sandboxed and cut down.

A campaign's subject, text body and HTML body may use ``{{ name }}``, ``{{ vars }}``,
filters and ``{% if %}``. Templates come from API callers and run in the workers,
so a template must not be able to reach Python objects (the sandbox), nor take a
worker's memory or CPU with a few bytes of input. For that:

* statements are limited to ``if``, ``filter``, ``autoescape`` and ``raw``: no loops,
  macros, ``set``, ``with``, blocks or includes, which are what let a short template
  run for ever or grow exponentially;
* no function or method calls, and no globals: filters do the work, from an allowlist;
* ``*``, ``**`` and ``%`` refuse results that would be huge, and every filter's
  result is capped at :data:`MAX_TEXT` characters (``replace`` is checked before it
  runs, as the one filter whose output can be its input times its argument).

A name that is not defined is an error (:class:`~jinja2.StrictUndefined`), never
an empty string. The text environment does not escape; the HTML one escapes
every value that is not marked safe.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: The most characters a filter or operator may produce.
MAX_TEXT = 100_000
#: The largest integer argument a filter accepts (widths, lengths, precisions).
_MAX_INT_ARG = 10_000
#: The largest integer an operator may produce, in bits.
_MAX_INT_BITS = 4096
#: The widest field a ``%`` format may ask for.
_MAX_FORMAT_WIDTH = 1000

#: What each field is called in the API, for error messages.
SUBJECT, BODY, HTML_BODY = "subject", "body", "htmlBody"

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

#: Statements a template may use; anything else is refused when it is compiled.
_ALLOWED_STATEMENTS: tuple[type[nodes.Node], ...] = (
    nodes.Template,
    nodes.Output,
    nodes.If,
    nodes.FilterBlock,
    nodes.ScopedEvalContextModifier,
    nodes.EvalContextModifier,
)

_FORMAT_NUMBERS = re.compile(r"%[^a-zA-Z%]*")
_DIGITS = re.compile(r"\d+")


class TemplateProblem(ValueError):
    """A subject or body template that cannot be used; ``field`` names it as the API does."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _check_format(spec: str) -> None:
    for directive in _FORMAT_NUMBERS.findall(spec):
        if "*" in directive or any(int(n) > _MAX_FORMAT_WIDTH for n in _DIGITS.findall(directive)):
            raise SecurityError("format widths are limited to 1000")


def _check_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_INT_ARG:
            raise SecurityError(f"numbers given to filters are limited to {_MAX_INT_ARG}")


def _check_result(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise SecurityError(f"a value may be at most {MAX_TEXT} characters")
    return value


def _guarded(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)  # keeps jinja_pass_arg: Jinja still passes the context it wants
    def call(*args: Any, **kwargs: Any) -> Any:
        _check_args(args, kwargs)
        strings = [a for a in args if isinstance(a, str)]
        if name == "replace" and len(strings) >= 3:
            text, old, new = strings[-3:]
            hits = text.count(old) if old else len(text) + 1
            if len(text) + hits * max(0, len(new) - len(old)) > MAX_TEXT:
                raise SecurityError(f"a value may be at most {MAX_TEXT} characters")
        if name == "format" and strings:
            _check_format(strings[0])
        return _check_result(func(*args, **kwargs))

    return call


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


def _bits(value: Any) -> int:
    return value.bit_length() if isinstance(value, int) else 0


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with the operators that can make huge values checked first."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "*":
            for sequence, times in ((left, right), (right, left)):
                size = _size(sequence)
                if size is not None and isinstance(times, int) and size * times > MAX_TEXT:
                    raise SecurityError(f"a value may be at most {MAX_TEXT} characters")
            if _bits(left) + _bits(right) > _MAX_INT_BITS:
                raise SecurityError("the number is too large")
        elif operator_ == "**" and isinstance(left, int) and isinstance(right, int):
            if max(_bits(left), 1) * abs(right) > _MAX_INT_BITS:
                raise SecurityError("the number is too large")
        elif operator_ == "%" and isinstance(left, str):
            _check_format(left)
        return _check_result(self.binop_table[operator_](left, right))

    def is_safe_callable(self, obj: Any) -> bool:
        # Calls are refused when the template is compiled; this is the second lock.
        return False


def _environment(*, html: bool) -> _Environment:
    env = _Environment(
        autoescape=html,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.globals.clear()
    env.filters = {
        name: _guarded(name, func) for name, func in env.filters.items() if name in _ALLOWED_FILTERS
    }
    return env


TEXT = _environment(html=False)
HTML = _environment(html=True)


def parse(field: str, source: str) -> nodes.Template:
    """The syntax tree of one field's template, checked against what templates may use.

    Raises :class:`TemplateProblem` naming ``field`` for a syntax error, a statement
    other than ``if``/``filter``/``autoescape``, or a call.
    """
    env = HTML if field == HTML_BODY else TEXT
    try:
        tree = env.parse(source)
    except TemplateError as exc:
        raise TemplateProblem(field, _describe(exc)) from exc
    for node in tree.find_all((nodes.Stmt, nodes.Call)):
        if isinstance(node, nodes.Call):
            raise TemplateProblem(field, "calls are not allowed; use filters (name|upper)")
        if not isinstance(node, _ALLOWED_STATEMENTS):
            tag = type(node).__name__.lower()
            raise TemplateProblem(
                field, f"'{tag}' is not allowed; templates may use if, filter and autoescape"
            )
    return tree


def compile_field(field: str, source: str) -> Template:
    """Compile one field's template (see :func:`parse`); unknown filters are refused here."""
    env = HTML if field == HTML_BODY else TEXT
    tree = parse(field, source)
    try:
        return env.from_string(tree)
    except TemplateError as exc:
        raise TemplateProblem(field, _describe(exc)) from exc


def _describe(exc: TemplateError) -> str:
    line = getattr(exc, "lineno", None)
    message = exc.message or type(exc).__name__
    return f"{message} (line {line})" if line else message


@dataclass(frozen=True, slots=True)
class Rendered:
    """One recipient's subject and bodies."""

    subject: str
    body: str
    html_body: str | None


class CampaignTemplates:
    """A campaign's subject, body and HTML body, compiled once and rendered per recipient."""

    __slots__ = ("_body", "_html", "_subject")

    def __init__(self, subject: str, body: str, html_body: str | None = None) -> None:
        """Raises :class:`TemplateProblem` for a template that cannot be used."""
        self._subject = compile_field(SUBJECT, subject)
        self._body = compile_field(BODY, body)
        self._html = None if html_body is None else compile_field(HTML_BODY, html_body)

    def render(self, context: Mapping[str, Any]) -> Rendered:
        """Render every part for one recipient.

        Raises :class:`TemplateProblem` when a part cannot be rendered (a name the
        context lacks, a value of the wrong type for a filter, a limit reached), or
        when the subject comes out with a line break.
        """
        subject = _render(SUBJECT, self._subject, context)
        if "\r" in subject or "\n" in subject:
            raise TemplateProblem(SUBJECT, "the rendered subject contains a line break")
        body = _render(BODY, self._body, context)
        html = None if self._html is None else _render(HTML_BODY, self._html, context)
        return Rendered(subject, body, html)


def _render(field: str, template: Template, context: Mapping[str, Any]) -> str:
    try:
        return template.render(context)
    except TemplateError as exc:
        raise TemplateProblem(field, _describe(exc)) from exc
    except (ArithmeticError, TypeError, ValueError, RecursionError, MemoryError) as exc:
        # Filters and operators on the recipient's values: 1/0, "a"|round, ...
        raise TemplateProblem(field, f"{type(exc).__name__}: {exc}") from exc


#: Names every template may use without a recipient's vars.
BUILTIN_NAMES = frozenset({"email", "name"})


def context(email: str, name: str | None, variables: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a recipient's templates see: their vars, then ``email`` and ``name`` over them."""
    return {**(variables or {}), "email": email, "name": name or ""}


__all__ = [
    "BODY",
    "BUILTIN_NAMES",
    "HTML",
    "HTML_BODY",
    "MAX_TEXT",
    "SUBJECT",
    "TEXT",
    "CampaignTemplates",
    "Rendered",
    "TemplateProblem",
    "compile_field",
    "context",
    "parse",
]
