"""Campaign templates: what counts as a template, the names it needs, and what it may not do."""

from __future__ import annotations

import pytest

from mailsched.mail.templates import MAX_TEXT, CampaignTemplates, context
from mailsched.producer.templates import (
    SubjectChecker,
    TemplateProblem,
    is_templated,
    missing_variables,
    render_subject_check,
    required_variables,
)


@pytest.mark.parametrize(
    ("subject", "body", "html"),
    [
        ("Spring sale", "Hello,\nsee you.\n", None),
        ("Spring sale", "Hello", "<p>Hello</p>"),
        ("Prices {in braces}", "a { b } c %} d }}", "<style>p { color: red }</style>"),
        ("", "", None),
    ],
)
def test_plain_text_is_not_templated(subject: str, body: str, html: str | None) -> None:
    assert not is_templated(subject, body, html)


@pytest.mark.parametrize(
    ("subject", "body", "html"),
    [
        ("Hi {{ name }}", "b", None),
        ("s", "Dear {{ name }},", None),
        ("s", "b", "<p>{{ code }}</p>"),
        ("s", "{% if vip %}VIP{% endif %}", None),
        ("s {# a comment #}", "b", None),
        # Sent as is, the raw tags would show: it must be rendered.
        ("{% raw %}{{ not a variable }}{% endraw %}", "b", None),
    ],
)
def test_template_syntax_is_templated(subject: str, body: str, html: str | None) -> None:
    assert is_templated(subject, body, html)


@pytest.mark.parametrize(
    ("subject", "body", "html", "field"),
    [
        ("Hi {{ name", "b", None, "subject"),
        ("s", "{% if x %}never closed", None, "body"),
        ("s", "b", "<p>{{ }}</p>", "htmlBody"),
        ("s", "{% for x in y %}{{ x }}{% endfor %}", None, "body"),
        ("s", "{{ name.upper() }}", None, "body"),
        ("s", "{{ name|center(80) }}", None, "body"),
        ("{% set a = 1 %}", "b", None, "subject"),
        ("s", "{% macro m() %}x{% endmacro %}", None, "body"),
        ("s", "b", "{% include 'other.html' %}", "htmlBody"),
        ("s", "{% extends 'base' %}", None, "body"),
    ],
)
def test_unusable_template_names_its_field(
    subject: str, body: str, html: str | None, field: str
) -> None:
    with pytest.raises(TemplateProblem) as caught:
        is_templated(subject, body, html)

    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert isinstance(caught.value, ValueError)


def test_syntax_error_is_refused_by_required_variables_too() -> None:
    with pytest.raises(TemplateProblem) as caught:
        required_variables("s", "b", "<p>{% if %}</p>")
    assert caught.value.field == "htmlBody"


def test_required_variables_leave_out_the_builtins() -> None:
    required = required_variables(
        "Hi {{ name }}, {{ city|upper }}",
        "{{ email }} {% if vip %}{{ code }}{% endif %}",
        "<p>{{ code }} {{ amount|round(2) }}</p>",
    )

    assert required == frozenset({"city", "vip", "code", "amount"})
    assert required_variables("plain", "text", None) == frozenset()


def test_missing_variables_are_sorted_and_ignore_builtins() -> None:
    required = frozenset({"zeta", "alpha", "name", "email", "code"})

    assert missing_variables(required, {"code"}) == ["alpha", "zeta"]
    assert missing_variables(required, ["alpha", "zeta", "code", "extra"]) == []


def test_text_is_not_escaped_and_html_is() -> None:
    templates = CampaignTemplates(
        "{{ name }} & co", "{{ name }} & {{ code }}\n", "<b>{{ code }}</b>"
    )

    rendered = templates.render(context("a@example.org", "Tom & <Jerry>", {"code": "<x>"}))

    assert rendered.subject == "Tom & <Jerry> & co"
    assert rendered.body == "Tom & <Jerry> & <x>\n"
    assert rendered.html_body == "<b>&lt;x&gt;</b>"


def test_name_none_renders_empty_and_builtins_win_over_vars() -> None:
    templates = CampaignTemplates("[{{ name }}]", "{{ email }}")

    rendered = templates.render(
        context("real@example.org", None, {"email": "spoof@evil.example", "name": "Spoof"})
    )

    assert rendered.subject == "[]"
    assert rendered.body == "real@example.org"


def test_trailing_newline_is_kept() -> None:
    assert CampaignTemplates("s", "{{ name }}\n").render(context("a@b.org", "X", None)).body == (
        "X\n"
    )


@pytest.mark.parametrize(
    ("body", "variables"),
    [
        ("{{ missing }}", {}),
        ("{{ x.nope }}", {"x": "text"}),
        ("{{ x / 0 }}", {"x": 1}),
        ("{{ x + 1 }}", {"x": "text"}),
        ("{{ x * 1000000 }}", {"x": "abc"}),
        ("{{ 'a' * 100001 }}", {}),
        ("{{ x|replace('', x) }}", {"x": "y" * 1000}),
        ("{{ 2 ** 100000 }}", {}),
        ("{{ x ** 5000 }}", {"x": 2}),
        ("{{ '%99999d' % 1 }}", {}),
        ("{{ '%*d'|format(99999, 1) }}", {}),
        ("{{ x|truncate(10000000) }}", {"x": "y"}),
        ("{{ ''.__class__ }}", {}),
        ("{{ x|forceescape|forceescape|forceescape|forceescape }}", {"x": "&" * 20000}),
    ],
)
def test_render_failures_and_limits_raise_template_problem(
    body: str, variables: dict[str, object]
) -> None:
    templates = CampaignTemplates("s", body)

    with pytest.raises(TemplateProblem) as caught:
        templates.render(context("a@example.org", None, variables))
    assert caught.value.field == "body"


def test_limits_leave_ordinary_use_alone() -> None:
    templates = CampaignTemplates(
        "{{ name|title }}: {{ '%.2f'|format(price) }}",
        "{{ '-' * 40 }}\n{{ x ** 3 }} {{ total|round(1) }} {{ code|default('none') }}\n",
    )

    rendered = templates.render(
        context("a@example.org", "ada lovelace", {"price": 9.5, "x": 3, "total": 2.25, "code": ""})
    )

    assert rendered.subject == "Ada Lovelace: 9.50"
    assert rendered.body == "-" * 40 + "\n27 2.2 \n"
    assert len("x" * MAX_TEXT) == MAX_TEXT


def test_render_subject_check_refuses_a_line_break_from_vars() -> None:
    assert render_subject_check("Hi {{ first }}", "a@example.org", None, {"first": "Ann"}) == (
        "Hi Ann"
    )
    with pytest.raises(TemplateProblem, match="line break") as caught:
        render_subject_check(
            "Hi {{ first }}", "a@example.org", None, {"first": "Ann\r\nBcc: eve@evil.example"}
        )
    assert caught.value.field == "subject"


def test_subject_checker_compiles_once_for_many_recipients() -> None:
    checker = SubjectChecker("{{ name }} <{{ email }}>")

    assert [checker.render(f"u{i}@example.org", f"U{i}") for i in range(3)] == [
        "U0 <u0@example.org>",
        "U1 <u1@example.org>",
        "U2 <u2@example.org>",
    ]
    with pytest.raises(TemplateProblem):
        checker.render("u@example.org", "line\nbreak")
