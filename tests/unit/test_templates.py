"""Campaign templates: what counts as a template, the names it needs, and what it may not do."""

from __future__ import annotations

import copy
import tracemalloc
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailsched.mail.templates import (
    HTML,
    MAX_SUBJECT,
    MAX_TEXT,
    TEXT,
    CampaignTemplates,
    compile_field,
    context,
    parse,
)
from mailsched.producer import templates as producer_templates
from mailsched.producer.template_bounds import body_bytes_bound
from mailsched.producer.templates import (
    RecipientChecker,
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


# The hardening issue, item 2: what a template renders to is bounded, and so is the work.


@pytest.mark.parametrize(
    "source",
    [
        # 480 kB from 20 characters: a list that prints large.
        "{{ [[1]*400]*400 }}",
        # 10 MB: a list of large strings.
        '{{ ["a"*100000]*100 }}',
        # A list is weighed before str() makes it text.
        "{{ ([[1]*400]*300)|string|length }}",
        "{{ '%s' % ([[1]*400]*300,) }}",
        "{{ ('a'*60000) ~ ('a'*60000) }}",
        "{{ 'a'*60000 + 'a'*60000 }}",
        "{{ [1]*60000 + [1]*60000 }}",
    ],
)
def test_values_that_would_print_huge_are_refused(source: str) -> None:
    templates = CampaignTemplates(source, source)

    for render in (templates.subject, templates.render):
        with pytest.raises(TemplateProblem) as caught:
            render(context("a@example.org", None, {}))
        assert caught.value.field == "subject"


def test_a_subject_renders_to_at_most_998_characters() -> None:
    templates = CampaignTemplates("{{ 'x' * n }}", "b")

    assert len(templates.subject(context("a@example.org", None, {"n": MAX_SUBJECT}))) == 998
    with pytest.raises(TemplateProblem, match="more than 998 characters") as caught:
        templates.subject(context("a@example.org", None, {"n": MAX_SUBJECT + 1}))
    assert caught.value.field == "subject"


@pytest.mark.parametrize("field", ["body", "htmlBody"])
def test_a_body_renders_to_at_most_max_body_bytes(field: str) -> None:
    # 'é' is two bytes: 600 of them pass 1000 characters but not 1000 bytes.
    source = "{{ 'é' * n }}"
    templates = CampaignTemplates("s", source, source, max_body_bytes=1000)

    rendered = templates.render(context("a@example.org", None, {"n": 500}))
    assert len(rendered.body.encode()) == len((rendered.html_body or "").encode()) == 1000
    only = {"body": ("s", source, "x"), "htmlBody": ("s", "x", source)}[field]
    with pytest.raises(TemplateProblem, match="more than 1000 bytes") as caught:
        CampaignTemplates(*only, max_body_bytes=1000).render(
            context("a@example.org", None, {"n": 501})
        )
    assert caught.value.field == field


class Counted(str):
    """A value that counts how often it is written out."""

    writes = 0

    def __str__(self) -> str:
        Counted.writes += 1
        return str.__str__(self)


def test_a_render_stops_once_over_the_limit() -> None:
    # 400 copies of a 1,000-character value would be 400 kB; the render stops past 10 kB.
    templates = CampaignTemplates("s", "{{ v }}" * 400, max_body_bytes=10_000)
    Counted.writes = 0

    with pytest.raises(TemplateProblem, match="more than 10000 bytes"):
        templates.render(context("a@example.org", None, {"v": Counted("x" * 1000)}))
    assert Counted.writes == 11


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ v }}" * 501, "at most 500 tags"),
        ("{% if v %}{% endif %}" * 251, "at most 500 tags"),
        ("{{ [" + "v, " * 1000 + "] }}", "at most 1000 parts"),
    ],
)
def test_a_template_may_only_be_so_large(source: str, message: str) -> None:
    # Compiling 40,000 tags took 3.4 s, most of it in compile(), which holds the GIL.
    with pytest.raises(TemplateProblem, match=message):
        is_templated("s", source)
    assert CampaignTemplates("s", "{{ v }}" * 500)


def test_many_large_values_exhaust_the_budget_of_one_render() -> None:
    # Each value is allowed, and none is written out: the work is what is bounded.
    source = "{{ ('ab ' * 33000)|upper|length }}" * 100
    templates = CampaignTemplates("s", source)

    with pytest.raises(TemplateProblem, match="too much work"):
        templates.render(context("a@example.org", None, {}))


@pytest.mark.parametrize("source", ["{{ ('%%' * 40000)|format }}", "{{ ('%s' * 20000) % () }}"])
def test_weighing_a_format_is_charged_for_its_directives(source: str) -> None:
    # Weighing a directive costs 2 µs: 40,000 of them would take 80 ms.
    with pytest.raises(TemplateProblem, match="too much work"):
        CampaignTemplates("s", source).render(context("a@example.org", None, {}))


def test_slow_filters_are_charged_for_their_input() -> None:
    # title on 66,000 characters is about 25 ms: two exhaust a body's 4 M, and
    # a tenth of one a subject's 64 k (a subject is rendered per recipient at creation).
    title = "{{ ('a b ' * 16500)|title|length }}"
    templates = CampaignTemplates("{{ ('a b ' * 1000)|title|length }}", title * 2)

    with pytest.raises(TemplateProblem, match="too much work") as caught:
        templates.subject(context("a@example.org", None, {}))
    assert caught.value.field == "subject"
    assert CampaignTemplates("s", title).render(context("a@example.org", None, {})).body == "66000"
    with pytest.raises(TemplateProblem, match="too much work") as caught:
        CampaignTemplates("s", title * 2).render(context("a@example.org", None, {}))
    assert caught.value.field == "body"


@pytest.mark.parametrize(
    "source",
    [
        "{{ email.split }}",
        "{{ name.upper }}",
        "{{ [1, 2] }}",
        "{{ (1, 2) }}",
        "{{ {'a': 1} }}",
        "{{ x.real.conjugate }}",
        # Made text before it is written out, a method printed its heap address.
        "{{ name.upper ~ '' }}",
        "{{ name.upper|string }}",
        "{{ name['upper']|string }}",
        "{{ '%s' % email.split }}",
        "{{ (x.real.conjugate ~ 1)|length }}",
    ],
)
def test_a_method_or_an_object_is_not_written_out(source: str) -> None:
    templates = CampaignTemplates(source, "b")

    with pytest.raises(TemplateProblem, match="cannot be written into a message") as caught:
        templates.subject(context("a@example.org", "Ann", {"x": 3}))
    assert caught.value.field == "subject"
    assert "0x" not in str(caught.value)


def test_text_numbers_booleans_and_none_are_written_out() -> None:
    templates = CampaignTemplates(
        "{{ name }} {{ n }} {{ f }} {{ b }} {{ none }} {{ [3, 4]|first }} {{ x.real }}", "b"
    )

    subject = templates.subject(
        context("a@example.org", "Ann", {"n": 2, "f": 1.5, "b": True, "x": 7})
    )

    assert subject == "Ann 2 1.5 True None 3 7"


# Item 4: every failure of a template is a TemplateProblem (a 422), never a 500.


@pytest.mark.parametrize(
    "source",
    [
        # 300 deep is also 600 tags, which is refused before it is parsed.
        "{% if x %}" * 240 + "y" + "{% endif %}" * 240,
        "{{ " + "(" * 300 + "1" + ")" * 300 + " }}",
        "{{ " + "-" * 300 + "1 }}",
        "{{ x" + "|upper" * 300 + " }}",
        "{{ " + "[" * 300 + "]" * 300 + " }}",
    ],
)
def test_deep_nesting_is_a_template_problem(source: str) -> None:
    with pytest.raises(TemplateProblem, match="nest") as caught:
        is_templated("s", source)
    assert caught.value.field == "body"
    with pytest.raises(TemplateProblem, match="nest"):
        CampaignTemplates(source, "b")


def test_nesting_within_the_limit_is_fine() -> None:
    source = "{% if x %}" * 20 + "{{ ((((x)))) }}" + "{% endif %}" * 20

    assert CampaignTemplates(source, "b").subject(context("a@example.org", None, {"x": 1})) == "1"


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("{{ name|truncate(1) }}", "AssertionError"),
        ("{{ 2.0 ** 5000 }}", "OverflowError"),
        ("{{ 'a' < 1 }}", "TypeError"),
    ],
)
def test_any_exception_of_a_filter_is_a_template_problem(source: str, kind: str) -> None:
    templates = CampaignTemplates(source, source)
    values = context("a@example.org", "Ann", {"x": "9" * 5000})

    for render in (templates.subject, templates.render):
        with pytest.raises(TemplateProblem) as caught:
            render(values)
        assert caught.value.field == "subject"
        assert kind in str(caught.value)


# Item 3: what the email package refuses in a header is refused in a rendered subject.


@pytest.mark.parametrize(
    "char", ["\x00", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r", "\n"]
)
def test_a_subject_rendering_a_header_break_is_refused(char: str) -> None:
    checker = SubjectChecker("Hi {{ first }}")

    with pytest.raises(TemplateProblem, match="line break") as caught:
        checker.render("a@example.org", None, {"first": f"Ann{char}Bcc: eve@evil.example"})
    assert caught.value.field == "subject"
    # In the body, the same value is fine.
    assert RecipientChecker("s", "{{ first }}").render("a@example.org", None, {"first": char})


# Creation checks every recipient's bodies, rendering only when the size is not settled.


def test_recipient_checker_refuses_the_recipient_whose_body_is_too_large() -> None:
    checker = RecipientChecker("Hi", "{{ bio|upper }}" * 4, max_body_bytes=10_000)

    assert checker.render("a@example.org", None, {"bio": "x" * 1000}) == "Hi"
    with pytest.raises(TemplateProblem, match="more than 10000 bytes") as caught:
        checker.render("a@example.org", None, {"bio": "é" * 1300})
    assert caught.value.field == "body"


def test_recipient_checker_renders_bodies_only_when_their_size_is_unsettled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendered: list[str] = []
    real = producer_templates.render_field  # type: ignore[attr-defined]

    def counting(field: str, *args: object, **kwargs: object) -> str:
        rendered.append(field)
        return real(field, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(producer_templates, "render_field", counting)
    settled = RecipientChecker(
        "Hi {{ name }}", "Dear {{ name|title }}, {{ code }}", "<p>{{ code }}</p>"
    )
    unsettled = RecipientChecker("Hi", "{{ ('x' * n)|upper }}" * 20)

    # The first recipient's bodies are always rendered: a template may fail for all.
    settled.render("a@example.org", "ann", {"code": "C1"})
    assert rendered == ["body", "htmlBody"]
    rendered.clear()
    settled.render("b@example.org", "bob", {"code": "C2"})
    assert rendered == []
    unsettled.render("a@example.org", None, {"n": 3})
    unsettled.render("b@example.org", None, {"n": 3})
    assert rendered == ["body", "body"]
    # A value longer than the bound assumed (the schema's limits changed) is rendered.
    rendered.clear()
    settled.render("a@example.org", "ann", {"code": "C" * 5000})
    assert rendered == ["body", "htmlBody"]


@pytest.mark.parametrize(
    "source",
    [
        "Dear {{ name|title }}, your code is {{ code }}.",
        "{{ code ~ '-' ~ code|upper }}",
        "{{ ('=' * 40) }}{{ code * 3 }}",
        "{{ 0.1 + 0.2 }} {{ n + n }} {{ 2.5 * 3 }}",
        "{% if vip %}{{ code|e }}{% else %}{{ name or 'friend' }}{% endif %}",
        "{% filter upper %}{{ code }}{% endfilter %}",
    ],
)
@pytest.mark.parametrize("html", [False, True])
def test_the_static_bound_holds_for_the_longest_values(source: str, html: bool) -> None:
    # The longest value a recipient may give, in the characters that grow most.
    values = context(
        "a@example.org", "ß" * 200, {"code": "\N{GRINNING FACE}'" * 500, "vip": True, "n": 10**300}
    )
    field = "htmlBody" if html else "body"
    tree = parse(field, source)
    env = HTML if html else TEXT
    rendered = env.from_string(tree).render(values)

    bound = body_bytes_bound(tree, html=html)
    assert len(rendered.encode()) <= bound
    # Templates like these never need rendering per recipient at creation.
    assert bound <= 1024 * 1024


# The review of the hardening: bounds that converting inside a filter went around.


def peak_bytes(render: Callable[[], object]) -> int:
    """The most memory ``render`` held at once, in bytes."""
    tracemalloc.start()
    try:
        render()
    except TemplateProblem:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    ("field", "source"),
    [
        # replace converted 1 to "1" after the weighing: 9 MB (at 100,000, 10 GB).
        ("body", '{{ ("1"*3000)|replace(1, "x"*3000) }}'),
        ("body", '{{ ("1"*3000)|replace(old=1, new="x"*3000) }}'),
        # Weighed unescaped, replaced in escape(s): "<" is "&lt;". 18 MB.
        ("htmlBody", '{{ ("<"*3000)|replace("lt", ("x"*3000)|safe) }}'),
        # A width inside a mapping directive went unseen: 10 MB (and as many as asked).
        ("body", "{{ '%(a)9999999s' % {'a': 1} }}"),
        ("body", "{{ '%(a)9999999s'|format(a=1) }}"),
        # A format that is not text was not checked at all.
        ("body", "{{ ['%(a)9999999s']|format(a=1) }}"),
        # One value printed by every directive: 10 MB (at 16,000 directives, 1.6 GB).
        ("body", "{{ ('%(a)s' * 100) % {'a': 'x' * 90000} }}"),
        ("body", "{{ ('%(a)s' * 100)|format(a='x' * 90000) }}"),
        # Text in a list prints escaped: '\x00' is four characters. 0.9 MB.
        ("body", "{{ ['\\x00' * 90000]|string|length }}"),
    ],
)
def test_a_filter_or_operator_is_refused_before_it_makes_a_huge_value(
    field: str, source: str
) -> None:
    templates = CampaignTemplates("s", source if field == "body" else "b", source)
    values = context("a@example.org", "Ann", {})

    with pytest.raises(TemplateProblem) as caught:
        templates.render(values)
    assert caught.value.field == field
    # Everything it made is within a few values of MAX_TEXT (100,000 characters).
    assert peak_bytes(lambda: templates.render(values)) < 300_000


@pytest.mark.parametrize(
    "source",
    [
        "{{ x|replace('a', '<b>') }}",
        "{{ x|replace('a', '<b>', 1) }}",
        "{{ x|replace('a', '-', -2) }}",
        "{{ x|replace('', '-') }}",
        "{{ x|e|replace('<', '&') }}",
        "{{ x|e|replace('a', '<') }}",
        "{{ x|replace('a'|safe, '<') }}",
        "{{ x|replace('<', '<'|safe) }}",
        "{{ (x|safe)|replace('a', '<') }}",
        "{{ n|replace(1, '<') }}",
        "{{ x|replace(old='a', new='z', count=1) }}",
        "{{ '%s-%5.1f|%-4d|%x|%%' % (x, 2.25, n, n) }}",
        "{{ '%(a)s %(a)r %(b)03d' % {'a': x, 'b': n} }}",
        "{{ '%((a))s' % {'(a)': n} }}",
        "{{ '%s and %s'|format(x, n) }}",
        "{{ '%(x)s'|format(x=x) }}",
        "{{ (x|e) % () }}",
        "{{ ('<%s>'|safe) % x }}",
    ],
)
@pytest.mark.parametrize("html", [False, True])
def test_replace_and_format_do_what_jinjas_do(source: str, html: bool) -> None:
    values = {"x": "a<b>&'a", "n": 121}
    jinja = ImmutableSandboxedEnvironment(autoescape=html).from_string(source).render(values)

    assert (HTML if html else TEXT).from_string(source).render(values) == jinja


class OutOfMemory(str):
    """A value that cannot be written out: the machine has no memory left."""

    def __str__(self) -> str:
        raise MemoryError


def test_running_out_of_memory_is_no_template_problem() -> None:
    # A bound the sandbox misses must show as what it is, not as a 422 about the template.
    templates = CampaignTemplates("s", "{{ v }}")

    with pytest.raises(MemoryError):
        templates.render(context("a@example.org", None, {"v": OutOfMemory("x")}))


@pytest.mark.parametrize("html", [False, True])
def test_the_static_bound_counts_a_filters_keyword_arguments(html: bool) -> None:
    source = '{{ v|d(default_value="x"*100000, boolean=true) }}'
    field = "htmlBody" if html else "body"
    tree = parse(field, source)

    rendered = (HTML if html else TEXT).from_string(tree).render({"v": ""})

    assert len(rendered) == 100_000
    assert body_bytes_bound(tree, html=html) >= 100_000


def test_recipient_checker_renders_for_a_number_longer_than_the_bound_assumed() -> None:
    # Two values of at most 1,000 characters fit in 8,000 bytes; two of 4,300 digits do not.
    checker = RecipientChecker("Hi", "{{ n }}{{ n }}", max_body_bytes=8000)

    assert checker.render("a@example.org", None, {"n": 1}) == "Hi"
    with pytest.raises(TemplateProblem, match="more than 8000 bytes") as caught:
        checker.render("b@example.org", None, {"n": 10**4299})
    assert caught.value.field == "body"


def test_filters_run_in_the_render_and_its_budget_not_when_compiling() -> None:
    # Jinja ran the filters of a constant while compiling, with no budget: 60 titles
    # of this literal took a second, three times per campaign created.
    source = '{{ "' + "a b " * 16000 + '"|title|title|title }}'

    templates = CampaignTemplates("s", source)

    with pytest.raises(TemplateProblem, match="too much work"):
        templates.render(context("a@example.org", None, {}))


def test_compiling_leaves_the_shared_tree_as_parsed() -> None:
    source = f"{{{{ 'a' ~ 'b' }}}} {{{{ (1, 2)|first }}}} {{{{ 'x'|upper }}}} {uuid.uuid4()}"
    tree = parse("body", source)
    parsed = copy.deepcopy(tree)

    compile_field("body", source)

    assert tree == parsed
    assert parse("body", source) is tree


def test_creating_a_campaign_parses_and_compiles_each_field_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    for env in (TEXT, HTML):
        for method in ("parse", "compile"):
            real = getattr(env, method)

            def counting(*args: Any, real: Any = real, method: str = method) -> Any:
                calls.append(method)
                return real(*args)

            monkeypatch.setattr(env, method, counting)
    unique = uuid.uuid4()
    subject, body, html = (f"{{{{ name }}}} {part} {unique}" for part in ("s", "b", "h"))

    # What the API does with a new campaign (producer.campaigns._check_templates).
    assert is_templated(subject, body, html)
    assert required_variables(subject, body, html) == frozenset()
    RecipientChecker(subject, body, html).render("a@example.org", "Ann")

    assert sorted(calls) == ["compile"] * 3 + ["parse"] * 3
