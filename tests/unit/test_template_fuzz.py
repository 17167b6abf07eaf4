"""A property-based fuzz of the template renderer.

Templates are drawn from a grammar of what the language has (and some of what it
refuses): values, names, operators, the allowed filters and others, attributes,
slices, lists and dicts, ``if`` and ``filter`` blocks, nested; and as raw text.
Whatever comes out, compiling and rendering either give text within the bounds
(a subject of at most 998 characters with no line break or NUL, bodies within
``max_body_bytes``) or raise :class:`TemplateProblem`, the documented 422. No
other exception (a :class:`MemoryError` is no TemplateProblem), no output over a
bound or showing a heap address, and no render holding more than
:data:`MAX_PEAK` bytes on the way, which is what shows a value made before its
bound was checked. A body the template bounds without rendering
(:func:`body_bytes_bound`) renders within that bound.

``FUZZ_EXAMPLES`` sets the number of examples (300 by default).
"""

from __future__ import annotations

import os
import re
import tracemalloc
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from mailsched.mail.headers import HEADER_BREAKS
from mailsched.mail.sandbox import weight
from mailsched.mail.templates import (
    HTML,
    MAX_SUBJECT,
    MAX_TEXT,
    TEXT,
    CampaignTemplates,
    Rendered,
    TemplateProblem,
    context,
)
from mailsched.producer.template_bounds import VALUE_CHARS, body_bytes_bound

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
MAX_BODY_BYTES = 20_000
#: The most a render may hold at once, in bytes. A value is at most MAX_TEXT
#: characters of up to 2 bytes here (no atom is outside the BMP), and escaping may
#: make five characters of one before its result is refused; a few such values live
#: at once. A value made before its bound is checked is far over: 9 MB for
#: ('1' * 3000)|replace(1, 'x' * 3000).
MAX_PEAK = 30 * MAX_TEXT
#: What a method or an object prints as: its heap address.
ADDRESS = re.compile(" at 0x[0-9a-f]{4,}")

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
    # Arguments that are not text, converted by the filter; in HTML, 'lt' is in "&lt;".
    "replace(1, 'x' * 9000)",
    "replace(none, big)",
    "replace('lt', ('x' * 9000)|safe)",
    "replace(old=1, new='x' * 3000, count=99)",
    # Keyword arguments, which the static bound must count.
    "default(default_value='x' * 3000, boolean=true)",
    "d(default_value=big, boolean=true)",
    "truncate(length=5, killwords=true, end='~')",
    "round(precision=2, method='floor')",
    "format(a=big)",
    "format(big, 99999)",
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
        "'1' * 3000",
        "'<' * 3000",
        "'%(a)s' * 50",
        "'%(a)99999s'",
        "'%s%s'",
        "huge",
        "123456789012345678901234567890",
        "2 ** 4000",
        "[1, 2, 3]",
        "[[1] * 400] * 400",
        "['a' * 100000] * 100",
        "{'a': 1}",
        "(1, 'x')",
        "email.split",
        "name.upper",
        "name['upper']",
        "(name.upper ~ '')",
        "email.split|string",
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
        # As many digits as Python converts: 4,300.
        "huge": st.integers(10**4000, 10**4299),
    }
)


def render(subject: str, body: str, html: str | None, values: dict[str, Any]) -> Rendered | None:
    """The letter's fields, or ``None`` for a refusal (the documented 422), which is
    counted; a render never holds more than ``MAX_PEAK`` bytes on the way."""
    try:
        compiled = CampaignTemplates(subject, body, html, max_body_bytes=MAX_BODY_BYTES)
    except TemplateProblem as problem:
        event(f"refused when compiled: {problem.field}")
        return None
    tracemalloc.start()
    try:
        return compiled.render(context("ann@example.org", "Ann", values))
    except TemplateProblem as problem:
        event(f"refused when rendered: {problem.message.split(':')[0][:40]}")
        return None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak <= MAX_PEAK, f"a render held {peak} bytes"


def check(subject: str, body: str, html: str | None, values: dict[str, Any]) -> None:
    rendered = render(subject, body, html, values)
    if rendered is not None:
        event("rendered")
        check_rendered(rendered, body, html, values)


def check_rendered(rendered: Rendered, body: str, html: str | None, values: dict[str, Any]) -> None:
    assert len(rendered.subject) <= MAX_SUBJECT
    assert not any(
        ADDRESS.search(t or "") for t in (rendered.subject, rendered.body, rendered.html_body)
    )
    assert not HEADER_BREAKS.search(rendered.subject)
    for text, source, env in ((rendered.body, body, TEXT), (rendered.html_body, html, HTML)):
        if text is None or source is None:
            continue
        size = len(text.encode("utf-8", "replace"))
        assert size <= MAX_BODY_BYTES
        # The static bound assumes values of at most VALUE_CHARS (a 4,300-digit number
        # is longer): the creation check renders for a recipient with longer ones.
        if all(weight(v, VALUE_CHARS) <= VALUE_CHARS for v in values.values()):
            assert size <= body_bytes_bound(env.parse(source), html=env is HTML)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# The holes the review found, always tried.
@example(subject="s", body="{{ ('1' * 3000)|replace(1, 'x' * 3000) }}", html=None, values={})
@example(
    subject="s", body="b", html="{{ ('<' * 3000)|replace('lt', ('x' * 3000)|safe) }}", values={}
)
@example(subject="s", body="{{ ('%(a)s' * 100) % {'a': 'x' * 90000} }}", html=None, values={})
@example(subject="{{ name.upper ~ '' }}", body="{{ name.upper|string }}", html=None, values={})
@example(
    subject="s",
    body="{{ v|d(default_value='x' * 9000, boolean=true) }}",
    html=None,
    values={"v": ""},
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
