"""Reading the new-campaign form's recipients: one per line, or CSV with a header."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsched.ui.recipient_list import BadList, read_recipients


@pytest.mark.parametrize(
    ("text", "items", "lines"),
    [
        ("", [], []),
        ("\n  \n", [], []),
        ("a@example.com", ["a@example.com"], [1]),
        ("a@example.com\r\n\r\n  b@example.com  \n", ["a@example.com", "b@example.com"], [1, 3]),
        ("\ufeffa@example.com\n", ["a@example.com"], [1]),
        # A line with a comma but no email column is one (bad) address, as typed.
        ("a@example.com, b@example.com\n", ["a@example.com, b@example.com"], [1]),
        ("email\na@example.com\n", ["a@example.com"], [2]),  # a file of one column
        ("Email,Name\na@example.com,Ann\n", [{"email": "a@example.com", "name": "Ann"}], [2]),
        (
            "\n\nemail;plan;TimeZone\n\na@example.com;gold;Europe/Paris\n",
            [{"email": "a@example.com", "timezone": "Europe/Paris", "vars": {"plan": "gold"}}],
            [5],
        ),
        ("email\tname\na@example.com\t\n", ["a@example.com"], [2]),  # empty cells left out
        ("email,name\na@example.com\n", ["a@example.com"], [2]),  # short rows too
        (
            'name,email\n"Smith, Ann",a@example.com\n"Two\nlines",b@example.com\n',
            [
                {"email": "a@example.com", "name": "Smith, Ann"},
                {"email": "b@example.com", "name": "Two\nlines"},
            ],
            [2, 4],
        ),
        ("email,name\n,Ann\n", [{"email": "", "name": "Ann"}], [2]),  # the model refuses it
    ],
)
def test_recipients_are_read_with_their_lines(
    text: str, items: list[str | dict[str, Any]], lines: list[int]
) -> None:
    listed = read_recipients(text, 10)
    assert (listed.items, listed.lines) == (items, lines)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a@x.com\nb@x.com\nc@x.com\n", "at most 2 recipients"),
        ("email\na@x.com\nb@x.com\nc@x.com\n", "at most 2 recipients"),
        ("email,name\na@x.com,A,extra\n", "line 2: 3 cells, but 2 columns"),
        ("email,Email\na@x.com,b@x.com\n", "line 1: the column 'email' appears twice"),
        ('email,name\na@x.com,"open\n', "line 2:"),
    ],
)
def test_what_cannot_be_read_names_its_line(text: str, message: str) -> None:
    with pytest.raises(BadList, match=message):
        read_recipients(text, 2)


_LINE = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters=",;\t"
    ),
    min_size=1,
    max_size=20,
).filter(lambda s: s.strip() == s and s.lower() != "email")


@given(st.lists(_LINE, max_size=20))
def test_one_address_per_line_comes_back_as_typed(addresses: list[str]) -> None:
    listed = read_recipients("\n".join(addresses), 100)
    assert listed.items == addresses
    assert listed.lines == list(range(1, len(addresses) + 1))
