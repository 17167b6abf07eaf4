"""The template language of personalized campaigns: Jinja2, sandboxed and cut down.

A campaign's subject, text body and HTML body may use ``{{ name }}``, ``{{ vars }}``,
filters and ``{% if %}``. Templates come from API callers and run in the workers,
so a template must not be able to reach Python objects, nor take a worker's memory
or CPU with a few bytes of input. For that:

* statements are limited to ``if``, ``filter``, ``autoescape`` and ``raw``: no loops,
  macros, ``set``, ``with``, blocks or includes, which are what let a short template
  run for ever or grow exponentially; nesting is limited to :data:`MAX_DEPTH`,
  and size to :data:`MAX_TAGS` tags and :data:`MAX_NODES` parts, which bounds
  the time compiling takes;
* no function or method calls, and no globals: filters do the work, from an allowlist;
* every value made, and the work of one render, are bounded (:mod:`.sandbox`);
* what a field renders to is bounded too: a subject at most :data:`MAX_SUBJECT`
  characters with no line break or NUL (:mod:`.headers`), a body at most
  ``max_body_bytes`` of UTF-8; the render stops as soon as it is over.

A name that is not defined is an error (:class:`~jinja2.StrictUndefined`), never
an empty string. Only text, numbers, booleans and None are written out: a method
or a list is an error, not its ``repr``. The text environment does not escape;
the HTML one escapes every value that is not marked safe. Whatever goes wrong in
compiling or rendering is a :class:`TemplateProblem` naming the field.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Template, TemplateError, nodes

from mailsched.mail.headers import header_break
from mailsched.mail.sandbox import MAX_TEXT, budget, environment

#: The longest subject a template may render to: RFC 5322's limit for one line.
MAX_SUBJECT = 998
#: The default bound of a rendered body, in bytes of UTF-8 (``MAILSCHED_MAX_BODY_BYTES``).
MAX_BODY_BYTES = 1024 * 1024
#: How deeply tags and expressions may nest. Jinja's parser and compiler recurse,
#: and about 300 levels reach Python's recursion limit.
MAX_DEPTH = 64
#: How many tags (``{{`` and ``{%``) and syntax nodes one field may have. Python's
#: ``compile()`` of a template holds the GIL for about 30 µs a node (1,000 nodes are
#: about 30 ms), so a thread would not spare the event loop: 40,000 ``{{ v }}`` took
#: 3.4 s to compile.
MAX_TAGS = 500
MAX_NODES = 1000
#: The work a render may do, as characters of the values it makes (operators, filters,
#: ``~``, slices, a slow filter's input weighed up; :mod:`.sandbox`) per character or
#: byte it may write out. A body of 1 MiB may take 4 M, about 40 ms at the slowest.
BODY_WORK = 4
#: A subject is rendered for every recipient when a campaign is created, so it gets
#: less: about 64 k, under a millisecond.
SUBJECT_WORK = 64

#: How many fields' syntax trees and compiled templates are kept: creating a campaign
#: asks for the same three several times (is it a template, which names, the checks).
_CACHED_FIELDS = 3

#: What each field is called in the API, for error messages.
SUBJECT, BODY, HTML_BODY = "subject", "body", "htmlBody"

#: Statements a template may use; anything else is refused when it is compiled.
_ALLOWED_STATEMENTS: tuple[type[nodes.Node], ...] = (
    nodes.Template,
    nodes.Output,
    nodes.If,
    nodes.FilterBlock,
    nodes.ScopedEvalContextModifier,
    nodes.EvalContextModifier,
)


class TemplateProblem(ValueError):
    """A subject or body template that cannot be used; ``field`` names it as the API does."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


TEXT = environment(html=False)
HTML = environment(html=True)


@functools.lru_cache(maxsize=_CACHED_FIELDS)
def parse(field: str, source: str) -> nodes.Template:
    """The syntax tree of one field's template, checked against what templates may use.

    The tree is shared by every caller with the same field and source (compiling
    does not change it): read it, do not change it.

    Raises :class:`TemplateProblem` naming ``field`` for a syntax error, a statement
    other than ``if``/``filter``/``autoescape``, a call, nesting deeper than
    :data:`MAX_DEPTH`, or more than :data:`MAX_TAGS` tags or :data:`MAX_NODES` parts.
    """
    env = HTML if field == HTML_BODY else TEXT
    if source.count("{{") + source.count("{%") > MAX_TAGS:
        raise TemplateProblem(field, f"a template may have at most {MAX_TAGS} tags")
    try:
        tree = env.parse(source)
    except TemplateError as exc:
        raise TemplateProblem(field, _describe(exc)) from exc
    except RecursionError as exc:
        raise TemplateProblem(field, _TOO_DEEP) from exc
    _check_tree(field, tree)
    return tree


_TOO_DEEP = f"tags and expressions may nest at most {MAX_DEPTH} deep"


def _check_tree(field: str, tree: nodes.Template) -> None:
    # Iterative, so that a deep tree is refused here instead of overflowing the stack.
    stack: list[tuple[nodes.Node, int]] = [(tree, 0)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            raise TemplateProblem(field, _TOO_DEEP)
        if count > MAX_NODES:
            raise TemplateProblem(field, f"a template may have at most {MAX_NODES} parts")
        if isinstance(node, nodes.Call):
            raise TemplateProblem(field, "calls are not allowed; use filters (name|upper)")
        if isinstance(node, nodes.Stmt) and not isinstance(node, _ALLOWED_STATEMENTS):
            tag = type(node).__name__.lower()
            raise TemplateProblem(
                field, f"'{tag}' is not allowed; templates may use if, filter and autoescape"
            )
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())


@functools.lru_cache(maxsize=_CACHED_FIELDS)
def compile_field(field: str, source: str) -> Template:
    """Compile one field's template (see :func:`parse`); unknown filters are refused here.

    The template is shared, like the tree it is compiled from."""
    env = HTML if field == HTML_BODY else TEXT
    tree = parse(field, source)
    try:
        return env.from_string(tree)
    except TemplateError as exc:
        raise TemplateProblem(field, _describe(exc)) from exc
    except RecursionError as exc:
        raise TemplateProblem(field, _TOO_DEEP) from exc


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

    __slots__ = ("_body", "_html", "_max_body_bytes", "_subject")

    def __init__(
        self,
        subject: str,
        body: str,
        html_body: str | None = None,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        """Raises :class:`TemplateProblem` for a template that cannot be used."""
        self._subject = compile_field(SUBJECT, subject)
        self._body = compile_field(BODY, body)
        self._html = None if html_body is None else compile_field(HTML_BODY, html_body)
        self._max_body_bytes = max_body_bytes

    def render(self, context: Mapping[str, Any]) -> Rendered:
        """Render every part for one recipient.

        Raises :class:`TemplateProblem` when a part cannot be rendered (a name the
        context lacks, a value of the wrong type for a filter, a limit reached), when
        it comes out too long, or when the subject holds a line break or NUL.
        """
        subject = self.subject(context)
        body = render_field(BODY, self._body, context, self._max_body_bytes)
        html = (
            None
            if self._html is None
            else render_field(HTML_BODY, self._html, context, self._max_body_bytes)
        )
        return Rendered(subject, body, html)

    def subject(self, context: Mapping[str, Any]) -> str:
        """The subject alone (see :meth:`render`)."""
        subject = render_field(
            SUBJECT, self._subject, context, MAX_SUBJECT, unit="characters", work=SUBJECT_WORK
        )
        bad = header_break(subject)
        if bad is not None:
            raise TemplateProblem(SUBJECT, f"the rendered subject contains a line break ({bad})")
        return subject

    def fields(self) -> Iterator[tuple[str, Template]]:
        """The body templates, by API name."""
        yield BODY, self._body
        if self._html is not None:
            yield HTML_BODY, self._html


def render_field(
    field: str,
    template: Template,
    context: Mapping[str, Any],
    limit: int,
    *,
    unit: str = "bytes",
    work: int = BODY_WORK,
) -> str:
    """``template`` rendered for ``context``: at most ``limit`` characters, or bytes of UTF-8.

    The output is gathered piece by piece and the render stops once it is over the
    limit; the values made on the way may add up to ``work`` times ``limit``. Every
    failure is a :class:`TemplateProblem` naming ``field``, except a
    :class:`MemoryError`, which is no fault of the template's.
    """
    too_long = TemplateProblem(field, f"renders to more than {limit} {unit}")
    pieces: list[str] = []
    length = 0
    try:
        with budget(work * limit):
            for piece in template.root_render_func(template.new_context(dict(context))):
                length += len(piece)
                if length > limit:
                    raise too_long
                pieces.append(piece)
    except TemplateProblem:
        raise
    except TemplateError as exc:
        raise TemplateProblem(field, _describe(exc)) from exc
    except RecursionError as exc:
        raise TemplateProblem(field, _TOO_DEEP) from exc
    except MemoryError:
        # A bound of the sandbox let too much through: a bug of ours, not of the template.
        raise
    except Exception as exc:
        # Filters and operators on the recipient's values: 1/0, "a"|round,
        # truncate's AssertionError, ... The template is at fault, whatever the type.
        raise TemplateProblem(field, f"{type(exc).__name__}: {exc}") from exc
    text = "".join(pieces)
    # A character is at most 4 bytes: only encode when the characters alone do not settle it.
    if unit == "bytes" and length * 4 > limit and len(text.encode("utf-8", "replace")) > limit:
        raise too_long
    return text


#: Names every template may use without a recipient's vars.
BUILTIN_NAMES = frozenset({"email", "name"})


def context(email: str, name: str | None, variables: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a recipient's templates see: their vars, then ``email`` and ``name`` over them."""
    return {**(variables or {}), "email": email, "name": name or ""}


__all__ = [
    "BODY",
    "BODY_WORK",
    "BUILTIN_NAMES",
    "HTML",
    "HTML_BODY",
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_SUBJECT",
    "MAX_TAGS",
    "MAX_TEXT",
    "SUBJECT",
    "SUBJECT_WORK",
    "TEXT",
    "CampaignTemplates",
    "Rendered",
    "TemplateProblem",
    "compile_field",
    "context",
    "parse",
    "render_field",
]
