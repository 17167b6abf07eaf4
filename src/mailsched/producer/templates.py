"""Checking a campaign's templates when it is created (pure, no I/O).

The language is :mod:`mailsched.mail.templates`: the workers render with the same
environments, so what passes here compiles there. A campaign is *templated* when
its subject, body or HTML body holds template syntax; only then is it rendered per
recipient. Every name a template uses must be ``email``, ``name`` or a key of each
recipient's ``vars``, so a recipient missing one is refused at creation instead of
failing at send time. So is a recipient whose subject renders too long or with a
line break, or whose body could render over the size limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jinja2 import nodes

from mailsched.mail.sandbox import weight
from mailsched.mail.templates import (
    BODY,
    BUILTIN_NAMES,
    HTML_BODY,
    MAX_BODY_BYTES,
    SUBJECT,
    CampaignTemplates,
    TemplateProblem,
    compile_field,
    context,
    parse,
    render_field,
)
from mailsched.producer.template_bounds import VALUE_CHARS, body_bytes_bound

__all__ = [
    "BUILTIN_NAMES",
    "MAX_BODY_BYTES",
    "RecipientChecker",
    "SubjectChecker",
    "TemplateProblem",
    "is_templated",
    "missing_variables",
    "render_subject_check",
    "required_variables",
]

_MARKERS = ("{{", "{%", "{#")


def _fields(subject: str, body: str, html: str | None) -> list[tuple[str, str]]:
    fields = [(SUBJECT, subject), (BODY, body)]
    if html is not None:
        fields.append((HTML_BODY, html))
    return fields


def _is_plain(tree: nodes.Template, source: str) -> bool:
    """Whether ``tree`` is ``source`` as literal text (no tag, expression or comment)."""
    if not tree.body:
        return source == ""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return False
    parts = tree.body[0].nodes
    return (
        all(isinstance(p, nodes.TemplateData) for p in parts)
        and "".join(p.data for p in parts if isinstance(p, nodes.TemplateData)) == source
    )


def is_templated(subject: str, body: str, html: str | None = None) -> bool:
    """Whether any of the three uses template syntax, so it must be rendered per recipient.

    Text with no ``{{``, ``{%`` or ``{#`` is plain without parsing. Raises
    :class:`TemplateProblem` for a field that looks like a template but does not
    parse, or uses what templates may not (loops, calls, unknown filters, ...).
    """
    templated = False
    for field, source in _fields(subject, body, html):
        if not any(marker in source for marker in _MARKERS):
            continue
        if not _is_plain(parse(field, source), source):
            # Compiling also catches unknown filters, which parsing lets through.
            compile_field(field, source)
            templated = True
    return templated


def required_variables(subject: str, body: str, html: str | None = None) -> frozenset[str]:
    """The names the templates use besides ``email`` and ``name``: each recipient's vars
    must have them all. Raises :class:`TemplateProblem` naming the field at fault."""
    names: set[str] = set()
    for field, source in _fields(subject, body, html):
        if not any(marker in source for marker in _MARKERS):
            continue
        # The environments have no globals, and templates cannot assign (no set, for or
        # macro): every name read is the recipient's. Jinja's find_undeclared_variables
        # would run its optimizer, with the filters, over the shared tree.
        tree = parse(field, source)
        names |= {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}
    return frozenset(names - BUILTIN_NAMES)


def missing_variables(required: Iterable[str], provided_keys: Iterable[str]) -> list[str]:
    """The names in ``required`` that a recipient's vars lack, sorted (built-ins never lack)."""
    return sorted(set(required) - set(provided_keys) - BUILTIN_NAMES)


def render_subject_check(
    subject: str,
    email: str,
    name: str | None = None,
    variables: Mapping[str, Any] | None = None,
) -> str:
    """Render ``subject`` for one recipient, as the worker will.

    Raises :class:`TemplateProblem` (field ``subject``) when it cannot be rendered
    or comes out with a CR or LF, which would break the header. Compiles the
    subject on each call: to check many recipients, use :class:`SubjectChecker`.
    """
    return SubjectChecker(subject).render(email, name, variables)


class SubjectChecker:
    """A subject compiled once, rendered for many recipients (see :func:`render_subject_check`)."""

    __slots__ = ("_templates",)

    def __init__(self, subject: str) -> None:
        self._templates = CampaignTemplates(subject, "")

    def render(
        self, email: str, name: str | None = None, variables: Mapping[str, Any] | None = None
    ) -> str:
        """The recipient's subject; :class:`TemplateProblem` if it cannot be used."""
        return self._templates.render(context(email, name, variables)).subject


class RecipientChecker:
    """A campaign's templates compiled once, checked for many recipients.

    For each recipient the subject is rendered (at most 998 characters, no line
    break or NUL). The bodies are rendered too (at most ``max_body_bytes``) for the
    first recipient, so that a template failing whatever the values is refused,
    and for every other one unless
    :func:`~mailsched.producer.template_bounds.body_bytes_bound` shows that no
    recipient's values can take them over: the common case, which saves about
    10 µs a recipient.
    """

    __slots__ = ("_bounded", "_max_body_bytes", "_templates", "_tried")

    def __init__(
        self,
        subject: str,
        body: str,
        html: str | None = None,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        """Raises :class:`TemplateProblem` naming the field that cannot be used."""
        self._templates = CampaignTemplates(subject, body, html, max_body_bytes=max_body_bytes)
        self._max_body_bytes = max_body_bytes
        self._bounded = all(
            body_bytes_bound(parse(field, source), html=field == HTML_BODY) <= max_body_bytes
            for field, source in _fields(subject, body, html)
            if field != SUBJECT
        )
        self._tried = False

    def render(
        self, email: str, name: str | None = None, variables: Mapping[str, Any] | None = None
    ) -> str:
        """The recipient's subject, once every field is checked for them.

        Raises :class:`TemplateProblem` naming the first field that cannot be used.
        """
        values = context(email, name, variables)
        subject = self._templates.subject(values)
        if not (self._tried and self._bounded and _short(values)):
            for field, template in self._templates.fields():
                render_field(field, template, values, self._max_body_bytes)
            self._tried = True
        return subject


def _short(values: Mapping[str, Any]) -> bool:
    """Whether every value is within what :func:`body_bytes_bound` assumed (a number
    of 4,300 digits is not)."""
    return all(weight(v, VALUE_CHARS) <= VALUE_CHARS for v in values.values())
