"""A property-based fuzz of the template renderer.

Templates are drawn from a grammar of what the language has (and some of what it
refuses): values, names, operators, the allowed filters and others, attributes,
slices, lists and dicts, ``if`` and ``filter`` blocks, nested; and as raw text.
Whatever comes out, compiling and rendering either give text within the bounds
(a subject of at most 998 characters with no line break or NUL, bodies within
``max_body_bytes``) or raise :class:`TemplateProblem`, the documented 422. No
other exception, and no output over a bound. A body the template bounds without
rendering (:func:`body_bytes_bound`) renders within that bound.

``FUZZ_EXAMPLES`` sets the number of examples (300 by default).
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mailsched.mail.headers import HEADER_BREAKS
from mailsched.mail.templates import (
    HTML,
    MAX_SUBJECT,
    TEXT,
    CampaignTemplates,
    TemplateProblem,
    context,
)
from mailsched.producer.template_bounds import body_bytes_bound

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
MAX_BODY_BYTES = 20_000

FILTERS = [
    "abs",
    "capitalize",
    "count",
    "default('x')",
    "e",
    "escape",
    "filesizeformat",
    "first",
    "float",
    "forceescape",
    "format(1, 'a')",
    "int",
    "last",
    "length",
    "lower",
    "replace('a', 'bbbb')",
    "replace('', 'xy')",
    "round(2)",
    "safe",
    "string",
    "striptags",
    "title",
    "trim",
    "truncate(5)",
    "truncate(1)",
    "truncate(9999)",
    "upper",
    "urlencode",
    "wordcount",
    # Refused when compiled: not on the allowlist.
    "center(99999)",
    "join",
    "attr('__class__')",
]
ATOMS = st.sampled_from(
    [
        "name",
        "email",
        "v",
        "n",
        "f",
        "b",
        "big",
        "none",
        "missing",
        "1",
        "-7",
        "2.5",
        "4096",
        "99999",
        "'a'",
        "'é<&>\"'",
        "'%s %d'",
        "''",
        "'\\u2028'",
        "'\\x00'",
        "[1, 2, 3]",
        "[[1] * 400] * 400",
        "['a' * 100000] * 100",
        "{'a': 1}",
        "(1, 'x')",
        "email.split",
        "name.upper",
        "''.__class__",
        "n.real",
        "email[1:5]",
        "big[::-1]",
        "range(3)",
        "lipsum()",
    ]
)
OPERATORS = st.sampled_from(
    [" + ", " - ", " * ", " / ", " // ", " % ", " ** ", " ~ ", " and ", " or ", " == ", " in "]
)


def expressions() -> st.SearchStrategy[str]:
    return st.recursive(
        ATOMS,
        lambda inner: st.one_of(
            st.tuples(inner, OPERATORS, inner).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
            st.tuples(inner, st.sampled_from(FILTERS)).map(lambda t: f"{t[0]}|{t[1]}"),
            st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
            st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
            inner.map(lambda x: f"not {x}"),
            inner.map(lambda x: f"-{x}"),
        ),
        max_leaves=12,
    )


LITERAL = st.text(alphabet=st.sampled_from("ab é\n<>{}%#\x00\u2028"), max_size=20)


def templates() -> st.SearchStrategy[str]:
    output = expressions().map(lambda e: "{{ " + e + " }}")
    piece = st.recursive(
        st.one_of(output, LITERAL),
        lambda inner: st.one_of(
            st.tuples(expressions(), st.lists(inner, max_size=3)).map(
                lambda t: "{% if " + t[0] + " %}" + "".join(t[1]) + "{% endif %}"
            ),
            st.tuples(st.sampled_from(FILTERS), st.lists(inner, max_size=3)).map(
                lambda t: "{% filter " + t[0] + " %}" + "".join(t[1]) + "{% endfilter %}"
            ),
            st.lists(inner, max_size=4).map("".join),
        ),
        max_leaves=10,
    )
    # Raw text as well, for the parser; and sometimes many copies, for the bounds.
    return st.one_of(
        piece,
        st.text(max_size=60),
        st.tuples(piece, st.integers(1, 200)).map(lambda t: t[0] * t[1]),
    )


VALUES = st.fixed_dictionaries(
    {
        "v": st.text(max_size=30),
        "n": st.integers(-(10**6), 10**6),
        "f": st.floats(allow_nan=True, allow_infinity=True),
        "b": st.booleans(),
        "big": st.text(alphabet="xé<", min_size=900, max_size=1000),
    }
)


def check(subject: str, body: str, html: str | None, values: dict[str, Any]) -> None:
    try:
        compiled = CampaignTemplates(subject, body, html, max_body_bytes=MAX_BODY_BYTES)
    except TemplateProblem as problem:
        event(f"refused when compiled: {problem.field}")
        return
    try:
        rendered = compiled.render(context("ann@example.org", "Ann", values))
    except TemplateProblem as problem:
        event(f"refused when rendered: {problem.message.split(':')[0][:40]}")
        return
    event("rendered")
    assert len(rendered.subject) <= MAX_SUBJECT
    assert not HEADER_BREAKS.search(rendered.subject)
    for text, source, env in ((rendered.body, body, TEXT), (rendered.html_body, html, HTML)):
        if text is None or source is None:
            continue
        size = len(text.encode("utf-8", "replace"))
        assert size <= MAX_BODY_BYTES
        assert size <= body_bytes_bound(env.parse(source), html=env is HTML)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    subject=templates(),
    body=templates(),
    html=st.none() | templates(),
    values=VALUES,
)
def test_the_renderer_raises_nothing_but_template_problems_and_keeps_its_bounds(
    subject: str, body: str, html: str | None, values: dict[str, Any]
) -> None:
    check(subject, body, html, values)
