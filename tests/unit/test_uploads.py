"""Reading uploads: rows and their line numbers, and the read-ahead's errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsched.producer import uploads
from mailsched.producer.uploads import Batch


def _nothing(_: object) -> None:
    return None


def lines(*texts: str) -> list[tuple[int, bytes]]:
    return [(n, t.encode()) for n, t in enumerate(texts, start=1)]


def test_a_csv_row_may_span_lines_and_is_named_by_its_first() -> None:
    rows = uploads.CsvRows(_nothing)
    batch = rows.feed(lines("email,vars.note", 'a@example.com,"two', 'lines"', "bad,Bo"))
    assert [(n, r.email, r.vars) for n, r in batch.rows] == [
        (2, "a@example.com", {"note": "two\nlines"})
    ]
    assert [(p.line, p.field) for p in batch.problems] == [(4, "email")]


def test_a_csv_row_split_between_batches_is_read_whole() -> None:
    rows = uploads.CsvRows(_nothing)
    first = rows.feed(lines("email,vars.note", 'a@example.com,"two'))
    second = rows.feed([(3, b'lines"'), (4, b"b@example.com,one")])
    assert first.rows == []
    assert [(n, r.vars) for n, r in second.rows] == [
        (2, {"note": "two\nlines"}),
        (4, {"note": "one"}),
    ]


def test_ndjson_takes_addresses_and_objects_and_names_bad_keys() -> None:
    rows = uploads.NdjsonRows(_nothing)
    batch = rows.feed(
        lines('"a@example.com"', '{"email": "b@example.com", "vars": {"x": 1}}', "", '{"mail": 1}')
    )
    assert [r.email for _, r in batch.rows] == ["a@example.com", "b@example.com"]
    assert [(p.line, p.field) for p in batch.problems] == [(4, "mail")]


async def _batches(count: int) -> AsyncIterator[Batch]:
    for _ in range(count):
        yield Batch()


async def test_an_error_while_the_reader_waits_for_room_does_not_hang() -> None:
    """The consumer fails while the read-ahead is blocked on a full queue: the error
    comes out at once (a reader that swallowed its cancellation would wait forever)."""

    async def consume() -> None:
        async with contextlib.aclosing(uploads.ahead(_batches(10), depth=1)) as batches:
            async for _ in batches:
                await asyncio.sleep(0.01)  # the reader fills the queue meanwhile
                raise RuntimeError("the database went away")

    # A bound on a hang, not a speed: it ends at once, or never.
    async with asyncio.timeout(5) as budget:
        with pytest.raises(RuntimeError, match="went away"):
            await consume()
    assert not budget.expired()


async def test_a_reading_error_comes_out_where_its_item_would_have() -> None:
    async def failing() -> AsyncIterator[Batch]:
        yield Batch()
        raise uploads.Unreadable(uploads.Problem(7, "line", "too long"))

    seen = 0
    with pytest.raises(uploads.Unreadable):
        async for _ in uploads.ahead(failing()):
            seen += 1
    assert seen == 1


@given(st.lists(st.text(max_size=40), max_size=200))
@settings(max_examples=50)
def test_seen_never_forgets_a_noted_key(keys: list[str]) -> None:
    seen = uploads.Seen()
    for key in keys:
        seen.add(key)
    assert all(seen.add(key) for key in keys)


def test_seen_rarely_mistakes_a_new_key_for_a_noted_one() -> None:
    seen = uploads.Seen()
    maybes = sum(seen.add(f"user{i}@example.com") for i in range(100_000))
    # About one in a billion at a hundred thousand keys: none expected here.
    assert maybes == 0
