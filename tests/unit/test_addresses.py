"""The fast path for plain addresses agrees with email-validator."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsched.producer.addresses import normalize_address

ATEXT = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,8}"
LABEL = "[A-Za-z0-9][A-Za-z0-9-]{0,6}[A-Za-z0-9]|[A-Za-z0-9]"
ADDRESSES = st.from_regex(
    rf"\A{ATEXT}(\.{ATEXT}){{0,2}}@(({LABEL})\.){{1,3}}[A-Za-z]{{1,6}}\Z", fullmatch=True
)


def reference(value: str) -> str | None:
    try:
        address = validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return None
    if len(address.local_part.encode()) > 64:
        return None
    return address.normalized


def ours(value: str) -> str | None:
    try:
        return normalize_address(value)
    except ValueError:
        return None


@settings(max_examples=600)
@given(ADDRESSES | st.text(max_size=40))
def test_the_fast_path_agrees_with_email_validator(value: str) -> None:
    assert ours(value) == reference(value)


@pytest.mark.parametrize(
    "value",
    [
        "User.Name+tag@Example.COM",
        "a@b.c",
        "a@123.com",
        "a@xn--bcher-kva.de",
        "a@ab--cd.com",
        "a@x.test",
        "a@x.localhost",
        "a@x.c1",
        "jörg@münchen.de",
        "a" * 64 + "@example.com",
        "a" * 65 + "@example.com",
        "a..b@example.com",
        "a@-x.com",
        '"quoted"@example.com',
    ],
)
def test_known_cases_agree(value: str) -> None:
    assert ours(value) == reference(value)
