"""The VERP return path: it round-trips in any case, and nothing but our own is believed."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsched.errors import ForgedReturnPath
from mailsched.mail.verp import ReturnPath

BOUNCES = "bounces@bounce.example.com"
RETURN_PATH = ReturnPath(BOUNCES, b"k" * 32)
SHAPE = re.compile(r"bounces\+[1-9a-z][0-9a-z]*-[a-z2-7]{16}@bounce\.example\.com")

delivery_ids = st.integers(min_value=1, max_value=2**63 - 1)


def token_of(address: str) -> str:
    return address.split("+", 1)[1].split("@", 1)[0]


@given(delivery_ids)
def test_address_round_trips_bare_and_in_angle_brackets(delivery_id: int) -> None:
    address = RETURN_PATH.address(delivery_id)

    assert SHAPE.fullmatch(address), address
    assert len(address.split("@")[0]) <= 64
    assert RETURN_PATH.delivery_of(address) == delivery_id
    assert RETURN_PATH.delivery_of(f"<{address}>") == delivery_id


@given(delivery_ids, st.data())
def test_a_change_of_case_still_verifies(delivery_id: int, data: st.DataObject) -> None:
    address = RETURN_PATH.address(delivery_id)
    upper = data.draw(st.lists(st.booleans(), min_size=len(address), max_size=len(address)))
    changed = "".join(c.upper() if u else c for c, u in zip(address, upper, strict=True))

    assert RETURN_PATH.delivery_of(changed) == delivery_id


@given(delivery_ids)
def test_every_single_character_change_of_the_token_is_refused(delivery_id: int) -> None:
    address = RETURN_PATH.address(delivery_id)
    token = token_of(address)
    start = address.index("+") + 1
    for index in range(len(token)):
        for replacement in string.ascii_letters + string.digits + "-+=._@":
            if replacement.lower() == token[index]:
                continue  # the same character, in the other case
            tampered = address[: start + index] + replacement + address[start + index + 1 :]
            with pytest.raises(ForgedReturnPath):
                RETURN_PATH.delivery_of(tampered)


@given(delivery_ids)
def test_a_character_dropped_or_added_is_refused(delivery_id: int) -> None:
    address = RETURN_PATH.address(delivery_id)
    start, end = address.index("+") + 1, address.index("@")
    for index in range(start, end):
        for tampered in (
            address[:index] + address[index + 1 :],
            address[:index] + "a" + address[index:],
        ):
            with pytest.raises(ForgedReturnPath):
                RETURN_PATH.delivery_of(tampered)


@given(delivery_ids)
def test_another_secret_is_refused(delivery_id: int) -> None:
    other = ReturnPath(BOUNCES, b"l" * 32)

    with pytest.raises(ForgedReturnPath, match="signature"):
        other.delivery_of(RETURN_PATH.address(delivery_id))


@pytest.mark.parametrize(
    "address",
    [
        "bounces+16-{mac}@bounce.example.org",
        "bounces+16-{mac}@example.com",
        "bounces+16-{mac}@sub.bounce.example.com",
        "other+16-{mac}@bounce.example.com",
        "bounce+16-{mac}@bounce.example.com",
        "bounces-16-{mac}@bounce.example.com",
        "bounces+16-{mac}",
        "16-{mac}@bounce.example.com",
    ],
)
def test_another_address_with_a_good_token_is_refused(address: str) -> None:
    mac = token_of(RETURN_PATH.address(42)).split("-")[1]

    with pytest.raises(ForgedReturnPath):
        RETURN_PATH.delivery_of(address.format(mac=mac))


@pytest.mark.parametrize(
    "address",
    [
        "",
        "<>",
        "bounces@bounce.example.com",
        "<bounces@bounce.example.com>",
        "bounces+@bounce.example.com",
        "bounces+16@bounce.example.com",
        "bounces+16-@bounce.example.com",
        # A leading zero: the same delivery spelt twice is refused.
        "bounces+016-{mac}@bounce.example.com",
        "bounces+16-{mac}a@bounce.example.com",
        "bounces+ 16-{mac}@bounce.example.com",
        "bounces+1_6-{mac}@bounce.example.com",
        "<<bounces+16-{mac}@bounce.example.com>>",
        # Beyond 2**63 - 1, the largest id.
        "bounces+zzzzzzzzzzzzz-{mac}@bounce.example.com",
    ],
)
def test_a_malformed_address_is_refused(address: str) -> None:
    mac = token_of(RETURN_PATH.address(42)).split("-")[1]

    with pytest.raises(ForgedReturnPath):
        RETURN_PATH.delivery_of(address.format(mac=mac))


@pytest.mark.parametrize(
    "address",
    [
        # What a forger can know: a real Message-ID, a real recipient, a real id.
        "bounces+c5.d42@bounce.example.com",
        "<c5.d42@example.com>",
        "bounces+ann=example.org@bounce.example.com",
        "bounces+42@bounce.example.com",
        "bounces+16-aaaaaaaaaaaaaaaa@bounce.example.com",
        "bounces+16-{mac}+ann=example.org@bounce.example.com",
    ],
)
def test_a_real_message_id_or_recipient_does_not_make_a_return_path(address: str) -> None:
    mac = token_of(RETURN_PATH.address(42)).split("-")[1]

    with pytest.raises(ForgedReturnPath):
        RETURN_PATH.delivery_of(address.format(mac=mac))


class _NoWork(str):
    """An address on which any work (case, splitting) fails the test."""

    __slots__ = ()

    def lower(self) -> str:
        raise AssertionError("worked on an over-long address")

    def rpartition(self, sep: str) -> tuple[str, str, str]:
        raise AssertionError("worked on an over-long address")


def test_an_over_long_address_is_refused_before_any_work() -> None:
    address = RETURN_PATH.address(42)
    long = _NoWork("b" * 1_000_000 + address)

    with pytest.raises(ForgedReturnPath, match="longer"):
        RETURN_PATH.delivery_of(long)
    # Just within SMTP's 256 characters, the same kind of address is worked on.
    with pytest.raises(AssertionError):
        RETURN_PATH.delivery_of(_NoWork("b" * (256 - len(address)) + address))


def test_the_local_part_and_domain_are_kept_as_configured() -> None:
    return_path = ReturnPath("Bounces@Bounce.Example.COM", b"k" * 32)

    address = return_path.address(7)

    assert address.startswith("Bounces+7-") and address.endswith("@Bounce.Example.COM")
    assert return_path.delivery_of(address.lower()) == 7
    assert token_of(address) == token_of(RETURN_PATH.address(7)), "the token ignores case"


def test_an_internationalised_domain_verifies_in_either_form() -> None:
    return_path = ReturnPath("bounces@bücher.example", b"k" * 32)
    address = return_path.address(9)

    assert return_path.delivery_of(address) == 9
    assert return_path.delivery_of(address.replace("bücher", "xn--bcher-kva")) == 9


@pytest.mark.parametrize("delivery_id", [0, -1, 2**63])
def test_no_address_outside_the_ids_range(delivery_id: int) -> None:
    with pytest.raises(ValueError, match="delivery id"):
        RETURN_PATH.address(delivery_id)


@pytest.mark.parametrize(
    ("bounce_address", "secret", "problem"),
    [
        (BOUNCES, b"short", "16 bytes"),
        ("bounces+x@bounce.example.com", b"k" * 32, "plain address"),
        ("bounce.example.com", b"k" * 32, "plain address"),
        ("b" * 34 + "@bounce.example.com", b"k" * 32, "at most 33"),
    ],
)
def test_what_cannot_make_a_return_path(bounce_address: str, secret: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ReturnPath(bounce_address, secret)


def test_the_longest_local_part_allowed_still_fits_smtp() -> None:
    return_path = ReturnPath("b" * 33 + "@bounce.example.com", b"k" * 32)

    assert len(return_path.address(2**63 - 1).split("@")[0]) == 64
