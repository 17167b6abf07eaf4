"""Permits on real send times, and retry backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsched.domain.limits import Permit, backoff, permit
from mailsched.domain.plan import Rules

T0 = datetime(2026, 1, 25, 12, 0, tzinfo=UTC)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("now", "scheduled", "last", "refs", "rules", "expected"),
    [
        # Nothing sent yet, all due, no delay: all go.
        (0, [0, 0, 0], None, [None, None, None], Rules(s(0), 10, s(60)), Permit(3, None)),
        # Not due yet: none go; the first may at its planned time.
        (0, [5], None, [None], Rules(s(0), 10, s(60)), Permit(0, T0 + s(5))),
        # Due, but the last send was 1 s ago and the delay is 3 s.
        (10, [10], 9, [None], Rules(s(3), 10, s(60)), Permit(0, T0 + s(12))),
        # With a delay only one of a due batch goes now.
        (10, [0, 0], 5, [None, None], Rules(s(3), 10, s(60)), Permit(1, T0 + s(13))),
        # The window is full: the send `limit` places back was at 2, window 60.
        (30, [30], 20, [2], Rules(s(0), 1, s(60)), Permit(0, T0 + s(62))),
        # The window ref is old enough: it goes.
        (70, [30], 20, [2], Rules(s(0), 1, s(60)), Permit(1, None)),
    ],
)
def test_permit_table(
    now: int,
    scheduled: list[int],
    last: int | None,
    refs: list[int | None],
    rules: Rules,
    expected: Permit,
) -> None:
    got = permit(
        T0 + s(now),
        [T0 + s(x) for x in scheduled],
        rules,
        None if last is None else T0 + s(last),
        [None if r is None else T0 + s(r) for r in refs],
    )
    assert got == expected


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [(1, 0.0, 15), (1, 1.0, 30), (2, 0.0, 30), (3, 0.5, 90), (10, 0.0, 1800), (10, 1.0, 3600)],
)
def test_backoff_table(attempt: int, jitter: float, expected: float) -> None:
    assert backoff(attempt, s(30), s(3600), jitter) == s(expected)


@given(attempt=st.integers(1, 5000), jitter=st.floats(0, 1, exclude_max=True))
def test_backoff_is_bounded(attempt: int, jitter: float) -> None:
    delay = backoff(attempt, s(30), s(3600), jitter)
    assert s(15) <= delay <= s(3600)


def test_backoff_is_one_based() -> None:
    with pytest.raises(ValueError):
        backoff(0, s(1), s(2), 0.0)
