"""The text-only body made without the email package is the email package's, byte for byte."""

from __future__ import annotations

import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

from mailsched.mail.message import MessageTemplate, plain_part

_POLICY = email.policy.SMTP.clone(cte_type="7bit")


def _by_email_package(from_: str, body: str) -> bytes:
    message = EmailMessage(policy=_POLICY)
    message["From"] = from_
    message.set_content(body)
    return message.as_bytes()


_line = st.one_of(
    st.text(st.sampled_from("ab Z.,:-=_\t"), max_size=90),
    st.text(st.sampled_from("ab é\u2028\x0b\x0c\x00."), max_size=20),
    st.integers(74, 82).map(lambda n: "w" * n),
    st.just("From the start of a line"),
    st.just("."),
)
_bodies = st.lists(_line, max_size=12).flatmap(
    lambda lines: st.sampled_from(["\n", "\r\n", "\r"]).map(lambda sep: sep.join(lines))
)
_senders = st.one_of(
    st.sampled_from(
        [
            "news@example.com",
            "a.b+c@mail.example.org",
            "x@y",
            '"john doe"@example.com',
            "jörg@example.com",
            "o'brien@example.ie",
            "a" * 64 + "@example.com",
        ]
    ),
    st.from_regex(r"[a-z0-9.+_-]{1,20}@[a-z0-9-]{1,20}\.[a-z]{2,6}", fullmatch=True),
)


@settings(max_examples=400)
@given(_senders, _bodies)
def test_the_plain_part_is_the_email_packages_or_nothing(from_: str, body: str) -> None:
    made = plain_part(from_, body)
    if made is not None:
        assert made == _by_email_package(from_, body)


def test_the_plain_part_is_taken_for_plain_text() -> None:
    body = "Hello,\n\nthis is a letter of about a hundred bytes of plain text.\n"
    assert plain_part("news@example.com", body) == _by_email_package("news@example.com", body)
    assert plain_part("news@example.com", "a" * 79) is None
    assert plain_part("news@example.com", "héllo") is None
    assert plain_part('"john doe"@example.com', "hello") is None


def test_a_template_uses_it_for_a_text_only_letter() -> None:
    template = MessageTemplate(1, "news@example.com", "Hi", "Hello\n")
    plain = plain_part("news@example.com", "Hello\n")
    assert plain is not None
    letter = template.render("u@example.com", 7, datetime(2026, 12, 1, tzinfo=UTC))
    assert letter.endswith(b"Subject: Hi\r\n" + plain)
