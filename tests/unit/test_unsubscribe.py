"""Unsubscribe tokens: they round-trip, and anything but our own tokens is refused."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsched.unsubscribe import InvalidToken, UnsubscribeSigner

SIGNER = UnsubscribeSigner(b"k" * 32)
URL_SAFE = re.compile(r"[A-Za-z0-9_.-]+")

user_ids = st.integers(min_value=1, max_value=2**63 - 1)
addresses = st.text(min_size=1, max_size=320)


@given(user_ids, addresses)
def test_token_round_trips_and_is_url_safe(user_id: int, address: str) -> None:
    token = SIGNER.token(user_id, address)

    assert URL_SAFE.fullmatch(token)
    assert SIGNER.verify(token) == (user_id, address)


@given(user_ids, addresses, st.data())
def test_any_changed_character_is_refused(user_id: int, address: str, data: st.DataObject) -> None:
    token = SIGNER.token(user_id, address)
    index = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.sampled_from("ABCabc019-_.=+/ ").filter(lambda c: c != token[index]))
    tampered = token[:index] + replacement + token[index + 1 :]

    with pytest.raises(InvalidToken):
        SIGNER.verify(tampered)


@given(user_ids, addresses, st.text(max_size=5).filter(bool))
def test_appended_text_is_refused(user_id: int, address: str, extra: str) -> None:
    with pytest.raises(InvalidToken):
        SIGNER.verify(SIGNER.token(user_id, address) + extra)


@given(st.text(max_size=200))
def test_garbage_is_refused_never_crashes(garbage: str) -> None:
    with pytest.raises(InvalidToken):
        SIGNER.verify(garbage)


def test_another_secret_refuses_the_token() -> None:
    token = SIGNER.token(7, "bob@example.org")

    with pytest.raises(InvalidToken):
        UnsubscribeSigner(b"x" * 32).verify(token)


def test_a_payload_swapped_between_tokens_is_refused() -> None:
    mine = SIGNER.token(1, "me@example.org")
    theirs = SIGNER.token(2, "victim@example.org")

    forged = theirs.split(".")[0] + "." + mine.split(".")[1]

    with pytest.raises(InvalidToken):
        SIGNER.verify(forged)


def test_signed_payload_of_the_wrong_shape_is_refused() -> None:
    # Only reachable with the secret; still an InvalidToken, not a crash.
    payload = b'{"user": 1}'
    mac = SIGNER._mac(payload)
    encode = base64.urlsafe_b64encode
    token = f"{encode(payload).rstrip(b'=').decode()}.{encode(mac).rstrip(b'=').decode()}"

    with pytest.raises(InvalidToken, match="payload"):
        SIGNER.verify(token)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        UnsubscribeSigner(b"short")


def test_links() -> None:
    links = SIGNER.links("https://mail.example.com/", "example.com", 3, "Bob@Example.org")
    token = SIGNER.token(3, "Bob@Example.org")

    assert links.url == f"https://mail.example.com/unsubscribe/{token}"
    assert links.mailto == f"mailto:unsubscribe@example.com?subject=unsubscribe-{token}"
    assert SIGNER.verify(links.url.rsplit("/", 1)[1]) == (3, "Bob@Example.org")


def test_non_canonical_spelling_of_a_valid_token_is_refused() -> None:
    # 32 MAC bytes take 43 characters: the last one's two low bits are padding, so
    # flipping them decodes to the same bytes. One token per payload, all the same.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    token = SIGNER.token(5, "bob@example.org")
    last = alphabet[alphabet.index(token[-1]) ^ 1]
    variant = token[:-1] + last
    assert base64.urlsafe_b64decode(variant.split(".")[1] + "=") == base64.urlsafe_b64decode(
        token.split(".")[1] + "="
    )

    with pytest.raises(InvalidToken):
        SIGNER.verify(variant)


def test_links_without_mailto() -> None:
    links = SIGNER.links("https://mail.example.com", None, 3, "bob@example.org")

    assert links.mailto is None
    assert links.url.startswith("https://mail.example.com/unsubscribe/")
