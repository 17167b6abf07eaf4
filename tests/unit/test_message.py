"""MessageTemplate: what render() produces must parse back to what went in."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage

import pytest

from mailsched.mail.message import MessageTemplate, message_id, sender_domain, wire_address

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
