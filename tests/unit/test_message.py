"""MessageTemplate: what render() produces must parse back to what went in."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage

import pytest

from mailsched.mail.message import (
    MessageTemplate,
    Unsubscribe,
    message_id,
    sender_domain,
    wire_address,
)
from mailsched.mail.templates import TemplateProblem

DATE = datetime(2024, 3, 1, 12, 30, 5, tzinfo=timezone(timedelta(hours=1)))


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body_of(message: EmailMessage) -> str:
    # Quoted-printable keeps the CRLFs of the wire format in the decoded text.
    content = message.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def assert_crlf_only(data: bytes) -> None:
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")


def test_plain_ascii_message_parses_back() -> None:
    template = MessageTemplate(7, "news@example.com", "Spring sale", "Hello,\nsee you.\n")

    data = template.render("bob@example.org", 42, DATE)
    parsed = parse(data)

    assert parsed["To"] == "bob@example.org"
    assert parsed["From"] == "news@example.com"
    assert parsed["Subject"] == "Spring sale"
    assert parsed["Date"].datetime == DATE
    assert parsed["Message-ID"] == "<c7.d42@example.com>"
    assert parsed["MIME-Version"] == "1.0"
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content_charset() == "utf-8"
    assert parsed["Content-Transfer-Encoding"] == "7bit"
    assert body_of(parsed) == "Hello,\nsee you.\n"
    assert data.isascii()
    assert_crlf_only(data)


def test_date_is_rfc5322_in_the_given_offset() -> None:
    template = MessageTemplate(1, "news@example.com", "s", "b\n")

    data = template.render("bob@example.org", 1, DATE)

    assert b"\r\nDate: Fri, 01 Mar 2024 12:30:05 +0100\r\n" in data


def test_date_cache_follows_the_second_and_the_offset() -> None:
    template = MessageTemplate(1, "news@example.com", "s", "b\n")
    utc = DATE.astimezone(UTC)

    dates = [
        parse(template.render("bob@example.org", 1, when))["Date"]
        for when in (DATE, DATE + timedelta(microseconds=1), DATE + timedelta(seconds=1), utc)
    ]

    assert [str(d) for d in dates] == [
        "Fri, 01 Mar 2024 12:30:05 +0100",
        "Fri, 01 Mar 2024 12:30:05 +0100",
        "Fri, 01 Mar 2024 12:30:06 +0100",
        "Fri, 01 Mar 2024 11:30:05 +0000",
    ]


def test_naive_date_is_refused() -> None:
    template = MessageTemplate(1, "news@example.com", "s", "b\n")

    with pytest.raises(ValueError, match="timezone"):
        template.render("bob@example.org", 1, datetime(2024, 3, 1, 12, 0))


def test_message_id_is_deterministic_and_distinct() -> None:
    assert message_id(3, 9, "news@example.com") == "<c3.d9@example.com>"
    assert message_id(3, 9, "news@example.com") == message_id(3, 9, "other@example.com")
    assert message_id(3, 9, "news@example.com") != message_id(3, 10, "news@example.com")
    assert message_id(3, 9, "news@example.com") != message_id(4, 9, "news@example.com")
    assert message_id(1, 2, "news@bücher.de") == "<c1.d2@xn--bcher-kva.de>"


def test_rendered_message_id_matches_the_function() -> None:
    template = MessageTemplate(5, "news@example.com", "s", "b\n")

    parsed = parse(template.render("bob@example.org", 77, DATE))

    assert parsed["Message-ID"] == message_id(5, 77, "news@example.com")


def test_non_ascii_subject_and_body() -> None:
    subject = "Grüße aus Köln — 春のセール"
    body = "Hallo Jörg,\nes gibt Rabatt: 20 € auf alles.\n"
    template = MessageTemplate(1, "news@example.com", subject, body)

    data = template.render("joerg@example.de", 1, DATE)
    parsed = parse(data)

    assert data.isascii(), "the shared part must stay 7-bit"
    assert b"=?utf-8?" in data
    assert parsed["Subject"] == subject
    assert parsed["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert body_of(parsed) == body
    assert_crlf_only(data)


def test_long_subject_is_folded_and_round_trips() -> None:
    subject = " ".join(["Überraschung"] * 70)[:998]
    template = MessageTemplate(1, "news@example.com", subject, "b\n")

    data = template.render("bob@example.org", 1, DATE)

    assert max(len(line) for line in data.split(b"\r\n")) <= 78
    assert parse(data)["Subject"] == subject


def test_long_body_lines_are_encoded_and_round_trip() -> None:
    body = "x" * 2000 + "\n" + "short line\n" + "é" * 500 + "\n"
    template = MessageTemplate(1, "news@example.com", "s", body)

    data = template.render("bob@example.org", 1, DATE)
    parsed = parse(data)

    assert max(len(line) for line in data.split(b"\r\n")) <= 78
    assert parsed["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert body_of(parsed) == body


def test_long_ascii_lines_are_not_sent_as_7bit() -> None:
    body = "a" * 1200 + "\n"
    template = MessageTemplate(1, "news@example.com", "s", body)

    parsed = parse(template.render("bob@example.org", 1, DATE))

    assert parsed["Content-Transfer-Encoding"] != "7bit"
    assert body_of(parsed) == body


def test_idn_domain_goes_as_punycode() -> None:
    template = MessageTemplate(1, "news@bücher.de", "s", "b\n")

    data = template.render("anna@münchen.example", 1, DATE)
    parsed = parse(data)

    assert data.isascii()
    assert parsed["To"] == "anna@xn--mnchen-3ya.example"
    assert parsed["From"] == "news@xn--bcher-kva.de"
    assert parsed["Message-ID"] == "<c1.d1@xn--bcher-kva.de>"


def test_non_ascii_local_part_goes_as_raw_utf8() -> None:
    template = MessageTemplate(1, "news@example.com", "s", "b\n")

    data = template.render("jörg@bücher.de", 1, DATE)

    assert b"\r\nTo: j\xc3\xb6rg@xn--bcher-kva.de\r\n" in b"\r\n" + data
    assert parse(data)["To"] == "jörg@xn--bcher-kva.de"


def test_two_recipients_differ_only_in_to_and_message_id() -> None:
    template = MessageTemplate(9, "news@example.com", "Hello", "Body text\n")

    first = template.render("a@example.org", 1, DATE).split(b"\r\n")
    second = template.render("b@example.org", 2, DATE).split(b"\r\n")

    assert len(first) == len(second)
    differing = [(a, b) for a, b in zip(first, second, strict=True) if a != b]
    assert differing == [
        (b"To: a@example.org", b"To: b@example.org"),
        (b"Message-ID: <c9.d1@example.com>", b"Message-ID: <c9.d2@example.com>"),
    ]


@pytest.mark.parametrize(
    "recipient",
    [
        "bob@example.org\r\nBcc: eve@evil.example",
        "bob@example.org\nBcc: eve@evil.example",
        "bob@example.org\r",
        "bob@example.org, eve@evil.example",
        "Bob <bob@example.org>",
        "bob@exa\x00mple.org",
        "no-at-sign",
        "@example.org",
        "bob@",
    ],
)
def test_unsafe_recipient_raises(recipient: str) -> None:
    template = MessageTemplate(1, "news@example.com", "s", "b\n")

    with pytest.raises(ValueError):
        template.render(recipient, 1, DATE)


@pytest.mark.parametrize(
    ("sender", "subject"),
    [
        ("news@example.com\r\nBcc: eve@evil.example", "s"),
        ("news@example.com\n", "s"),
        ("news@example.com", "Hello\r\nBcc: eve@evil.example"),
        ("news@example.com", "Hello\nX-Injected: yes"),
    ],
)
def test_unsafe_sender_or_subject_raises(sender: str, subject: str) -> None:
    with pytest.raises(ValueError):
        MessageTemplate(1, sender, subject, "b\n")


@pytest.mark.parametrize("address", ["bob@-bücher.de", "bob@bü..de", "bob@xn--ü.de"])
def test_invalid_idn_domain_raises(address: str) -> None:
    with pytest.raises(ValueError, match="internationalised domain"):
        wire_address(address)


def test_sender_domain() -> None:
    assert sender_domain("news@example.com") == "example.com"
    assert sender_domain("news@bücher.de") == "xn--bcher-kva.de"
    assert sender_domain("mailsched@localhost") == "localhost"


UNSUBSCRIBE = Unsubscribe(
    "https://mail.example.com/unsubscribe/abc.DEF-_",
    "mailto:unsubscribe@example.com?subject=unsubscribe-abc.DEF-_",
)


def rfc2047_phrase(to_header: str) -> str:
    """The display name as an RFC 2047 reader decodes it: whitespace between two
    encoded words is dropped (Python's address parser keeps it)."""
    phrase = to_header.rpartition("<")[0].replace("\r\n", "").strip()
    return str(make_header(decode_header(phrase)))


def test_html_body_makes_multipart_alternative() -> None:
    html = "<p>Grüße, <b>Jörg</b></p>\n"
    template = MessageTemplate(3, "news@example.com", "Sale", "Hello\n", html_body=html)

    data = template.render("bob@example.org", 8, DATE)
    parsed = parse(data)

    assert data.isascii()
    assert_crlf_only(data)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    text_part = parsed.get_body(("plain",))
    html_part = parsed.get_body(("html",))
    assert isinstance(text_part, EmailMessage) and isinstance(html_part, EmailMessage)
    assert body_of(text_part) == "Hello\n"
    assert body_of(html_part) == html
    assert parsed["To"] == "bob@example.org"
    assert parsed["Message-ID"] == "<c3.d8@example.com>"


def test_html_campaign_shares_one_encoding_between_recipients() -> None:
    template = MessageTemplate(3, "news@example.com", "Sale", "Hello\n", html_body="<p>Hi</p>")

    first = template.render("a@example.org", 1, DATE)
    second = template.render("b@example.org", 2, DATE)

    # Same boundary, same parts: only To and Message-ID differ.
    assert first.split(b"\r\n")[3:] == second.split(b"\r\n")[3:]


def test_templated_campaign_renders_per_recipient() -> None:
    template = MessageTemplate(
        4,
        "news@example.com",
        "{{ name }}, your code {{ code }}",
        "Hello {{ name or 'friend' }} ({{ email }}): {{ code }}\n",
        html_body="<p>{{ name }} &amp; {{ code }}</p>",
        templated=True,
    )

    ann = parse(
        template.render("ann@example.org", 1, DATE, name="Ann & Co", variables={"code": "<A1>"})
    )
    bob = parse(template.render("bob@example.org", 2, DATE, variables={"code": "B2"}))

    assert ann["Subject"] == "Ann & Co, your code <A1>"
    ann_text, ann_html = ann.get_body(("plain",)), ann.get_body(("html",))
    assert isinstance(ann_text, EmailMessage) and isinstance(ann_html, EmailMessage)
    assert body_of(ann_text) == "Hello Ann & Co (ann@example.org): <A1>\n"
    assert body_of(ann_html) == "<p>Ann &amp; Co &amp; &lt;A1&gt;</p>\n"
    assert bob["Subject"] == ", your code B2"
    bob_text = bob.get_body(("plain",))
    assert isinstance(bob_text, EmailMessage)
    assert body_of(bob_text) == "Hello friend (bob@example.org): B2\n"
    assert bob["To"] == "bob@example.org"


def test_template_syntax_is_literal_when_not_templated() -> None:
    template = MessageTemplate(1, "news@example.com", "Hi {{ name }}", "{{ name }}\n")

    parsed = parse(template.render("bob@example.org", 1, DATE, name="Bob"))

    assert parsed["Subject"] == "Hi {{ name }}"
    assert body_of(parsed) == "{{ name }}\n"


def test_template_problems_are_value_errors_naming_the_field() -> None:
    with pytest.raises(TemplateProblem) as at_init:
        MessageTemplate(1, "news@example.com", "s", "{% for x in y %}{% endfor %}", templated=True)
    assert at_init.value.field == "body"

    template = MessageTemplate(1, "news@example.com", "s", "{{ code }}", templated=True)
    with pytest.raises(ValueError, match="'code' is undefined"):
        template.render("bob@example.org", 1, DATE, variables={})


@pytest.mark.parametrize("value", ["x\r\nBcc: eve@evil.example", "x\nBcc: eve@evil.example", "x\r"])
def test_vars_cannot_put_a_line_break_into_the_subject(value: str) -> None:
    template = MessageTemplate(1, "news@example.com", "Hi {{ v }}{{ name }}", "b", templated=True)

    with pytest.raises(ValueError, match="line break"):
        template.render("bob@example.org", 1, DATE, variables={"v": value})
    with pytest.raises(ValueError, match="line break"):
        template.render("bob@example.org", 1, DATE, name=value, variables={"v": ""})


def test_unsubscribe_headers_follow_rfc_8058() -> None:
    template = MessageTemplate(1, "news@example.com", "s", "b\n")

    data = template.render("bob@example.org", 1, DATE, unsubscribe=UNSUBSCRIBE)
    parsed = parse(data)

    assert parsed["List-Unsubscribe"] == (
        "<https://mail.example.com/unsubscribe/abc.DEF-_>, "
        "<mailto:unsubscribe@example.com?subject=unsubscribe-abc.DEF-_>"
    )
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert len(parsed.get_all("List-Unsubscribe") or []) == 1
    assert_crlf_only(data)
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_unsubscribe_without_mailto_and_without_links() -> None:
    template = MessageTemplate(1, "news@example.com", "s", "b\n")

    only_url = parse(
        template.render(
            "bob@example.org", 1, DATE, unsubscribe=Unsubscribe("https://x.example/u/t")
        )
    )
    none = parse(template.render("bob@example.org", 1, DATE))

    assert only_url["List-Unsubscribe"] == "<https://x.example/u/t>"
    assert "List-Unsubscribe" not in none and "List-Unsubscribe-Post" not in none


@pytest.mark.parametrize(
    "links",
    [
        Unsubscribe("https://x.example/u/t>\r\nBcc: eve@evil.example"),
        Unsubscribe("https://x.example/u/t", "mailto:a@b\nX: y"),
        Unsubscribe("https://x.example/u/t t"),
        Unsubscribe("https://x.example/ü"),
    ],
)
def test_unsafe_unsubscribe_url_raises(links: Unsubscribe) -> None:
    template = MessageTemplate(1, "news@example.com", "s", "b\n")

    with pytest.raises(ValueError, match="unsubscribe URL"):
        template.render("bob@example.org", 1, DATE, unsubscribe=links)


def test_unsubscribe_links_differ_per_recipient() -> None:
    template = MessageTemplate(9, "news@example.com", "Hello", "Body text\n")

    first = template.render("a@example.org", 1, DATE, unsubscribe=Unsubscribe("https://x/u/AAA"))
    second = template.render("b@example.org", 2, DATE, unsubscribe=Unsubscribe("https://x/u/BBB"))

    assert parse(first)["List-Unsubscribe"] == "<https://x/u/AAA>"
    assert parse(second)["List-Unsubscribe"] == "<https://x/u/BBB>"


@pytest.mark.parametrize(
    "name",
    [
        "Bob Smith",
        'Smith, "Bobby" \\ Jr.',
        "Jörg Müller",
        "Алексей Владимирович Константинопольский-Преображенский, Иванов и сыновья",
        "山田 太郎",
        "x" * 200,
        "ü" * 200,
    ],
)
def test_display_name_round_trips(name: str) -> None:
    template = MessageTemplate(1, "news@example.com", "s", "b\n")

    data = template.render("bob@example.org", 1, DATE, name=name)
    parsed = parse(data)

    assert data.isascii()
    assert_crlf_only(data)
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    to = parsed["To"]
    assert [a.addr_spec for a in to.addresses] == ["bob@example.org"]
    raw_to = data.split(b"\r\nDate:")[0].decode("ascii")
    if name.isascii():
        assert to.addresses[0].display_name == name
    else:
        assert rfc2047_phrase(raw_to[len("To: ") :]) == name


@pytest.mark.parametrize(
    "name",
    [
        "Bob\r\nBcc: eve@evil.example",
        "Bob\nBcc: eve@evil.example",
        "Jörg\r\nBcc: eve@evil.example",
        "\r\n",
        "Bob\x00\x1b",
        # Line boundaries the email package refuses in a header: the send would fail.
        "Bob\x0b\x0c\x1c\x1d\x1e",
        "Jörg\x85Bcc\u2028eve\u2029",
    ],
)
def test_control_characters_in_a_name_cannot_inject_headers(name: str) -> None:
    template = MessageTemplate(1, "news@example.com", "s", "b\n")

    data = template.render("bob@example.org", 1, DATE, name=name)
    parsed = parse(data)

    # Sanitized, not refused: a name is cosmetic (the API refuses control characters).
    assert "Bcc" not in parsed
    assert_crlf_only(data)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["bob@example.org"]
    assert data.split(b"\r\n")[1].startswith((b"Date: ", b" "))
    assert all(ord(c) >= 32 for c in str(parsed["To"]))


def test_empty_name_gives_a_bare_address() -> None:
    template = MessageTemplate(1, "news@example.com", "s", "b\n")

    assert parse(template.render("bob@example.org", 1, DATE, name=""))["To"] == "bob@example.org"


def test_display_name_with_utf8_local_part() -> None:
    template = MessageTemplate(1, "news@example.com", "s", "b\n")

    data = template.render("jörg@bücher.de", 1, DATE, name="Jörg")

    assert data.startswith(b"To: =?utf-8?")
    assert b" <j\xc3\xb6rg@xn--bcher-kva.de>\r\n" in data


HEADER_BREAKS = ["\x00", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", HEADER_BREAKS)
@pytest.mark.parametrize("templated", [False, True])
def test_a_subject_with_a_header_break_or_nul_is_refused(char: str, templated: bool) -> None:
    # Before, VT, FF, FS, GS, RS, NEL, U+2028 and U+2029 passed here and failed every
    # send; NUL went into the header raw.
    with pytest.raises(ValueError, match="line breaks or NUL"):
        MessageTemplate(1, "news@example.com", f"Hello{char}there", "b\n", templated=templated)


@pytest.mark.parametrize("char", HEADER_BREAKS)
def test_a_templated_subject_rendering_a_header_break_fails_its_letter(char: str) -> None:
    template = MessageTemplate(1, "news@example.com", "Hi {{ v }}", "b\n", templated=True)

    with pytest.raises(TemplateProblem, match="line break"):
        template.render("bob@example.org", 1, DATE, variables={"v": f"a{char}b"})


@pytest.mark.parametrize("body", ["{{ name.upper ~ '' }}", "{{ name.upper|string }}"])
def test_a_method_made_text_fails_its_letter_instead_of_sending_its_address(body: str) -> None:
    # A TemplateProblem is a ValueError, which fails the delivery for good.
    template = MessageTemplate(1, "news@example.com", "s", body, templated=True)

    with pytest.raises(TemplateProblem, match="cannot be written") as caught:
        template.render("bob@example.org", 1, DATE, name="Bob")
    assert isinstance(caught.value, ValueError)
    assert "0x" not in str(caught.value)


@pytest.mark.parametrize(
    "subject",
    [
        "é" * 998,
        "é x" * 332,
        "😀 " * 499,
        "(é) " * 249,
        "ab " * 332,
        "a" * 998,
        "a,b;c " * 166,
        "=?utf-8?q?not_a_word?= " * 40,
        "tab\there" * 99,
    ],
)
def test_the_longest_subjects_fold_and_round_trip(subject: str) -> None:
    # The email package's own folding took 25-80 ms for these (quadratic), a letter at a time.
    template = MessageTemplate(1, "news@example.com", subject.strip(), "b\n")

    data = template.render("bob@example.org", 1, DATE)

    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert parse(data)["Subject"] == subject.strip()
    assert data.isascii()
    assert_crlf_only(data)


def test_an_ascii_subject_is_not_encoded() -> None:
    data = MessageTemplate(1, "news@example.com", "Spring sale", "b\n").render(
        "b@example.org", 1, DATE
    )

    assert b"\r\nSubject: Spring sale\r\n" in data


@pytest.mark.parametrize("html", [None, "<p>" + "é<br>\n" * 20_000 + "</p>"])
def test_a_large_message_is_base64_and_round_trips(html: str | None) -> None:
    # Made without the email package's encoders, which hold the GIL for up to 100 ms.
    body = "Zeile ü\n" * 10_000 + "x" * 5000 + "\r\nend"
    template = MessageTemplate(1, "news@example.com", "Groß", body, html_body=html)

    data = template.render("bob@example.org", 1, DATE)
    parsed = parse(data)

    assert data.isascii()
    assert_crlf_only(data)
    assert max(len(line) for line in data.split(b"\r\n")) <= 78
    assert parsed["Subject"] == "Groß"
    assert parsed["From"] == "news@example.com"
    text = parsed.get_body(("plain",))
    assert isinstance(text, EmailMessage)
    assert text["Content-Transfer-Encoding"] == "base64"
    assert body_of(text) == body.replace("\r\n", "\n") + "\n"
    if html is not None:
        assert parsed.get_content_type() == "multipart/alternative"
        part = parsed.get_body(("html",))
        assert isinstance(part, EmailMessage)
        assert body_of(part) == html + "\n"
