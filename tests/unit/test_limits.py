"""Permits on real send times, and retry backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mailsched.domain.limits import Permit, backoff, permit, permit_ahead
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


# --- admitted ahead: sent at their time, not a claim's round trip after it ----------

_ms = st.integers(0, 3000).map(lambda n: timedelta(milliseconds=n))


@settings(max_examples=600)
@given(
    delay=st.sampled_from([0, 100, 250, 300, 1000, 2000]),
    limit=st.integers(1, 4),
    window=st.sampled_from([100, 250, 1000, 3600_000]),
    horizon=st.sampled_from([0, 50, 250]),
    last=st.one_of(st.none(), _ms),
    refs=st.lists(st.one_of(st.none(), _ms), max_size=4),
    # Around now (3 s after T0): some due, most just ahead.
    planned=st.lists(
        st.integers(2900, 3400).map(lambda n: timedelta(milliseconds=n)), min_size=1, max_size=5
    ),
)
def test_a_start_given_ahead_is_one_the_rules_admit_at_that_time(
    delay: int,
    limit: int,
    window: int,
    horizon: int,
    last: timedelta | None,
    refs: list[timedelta | None],
    planned: list[timedelta],
) -> None:
    """Asked at its start, with the answers known by then, the worker's own rule admits
    each send given ahead; and none is given that depends on an answer nobody has."""
    ms = timedelta(milliseconds=1)
    rules = Rules(delay * ms, limit, window * ms)
    now = T0 + s(3)
    scheduled = sorted(T0 + p for p in planned)
    answered = None if last is None else T0 + last
    known = [None if r is None else T0 + r for r in refs]
    # Asked only when nothing may start now.
    assume(not permit(now, scheduled, rules, answered, known).admitted)
    starts = permit_ahead(now, horizon * ms, scheduled, rules, answered, known)
    assert len(starts) <= len(scheduled)
    assert all(now < t <= now + horizon * ms for t in starts)
    assert starts == sorted(starts)
    if rules.delay:
        # The next gap is measured from this send's answer: not known ahead.
        assert len(starts) <= 1
    assert len(starts) <= rules.limit
    for j, start in enumerate(starts):
        ref = known[j] if j < len(known) else None
        alone = permit(start, [scheduled[j]], rules, answered if j == 0 else None, [ref])
        assert alone.admitted == 1


def test_a_delay_send_is_given_its_exact_time_ahead() -> None:
    rules = Rules(s(1), 10**9, s(3600))
    now = T0
    starts = permit_ahead(now, s(0.25), [T0 + s(0.2)], rules, T0 - s(0.85), [])
    assert starts == [T0 + s(0.2)]  # its plan: the gap from the last answer ends before
    starts = permit_ahead(now, s(0.25), [T0 + s(0.05)], rules, T0 - s(0.9), [])
    assert starts == [T0 + s(0.1)]  # the gap from the last answer ends after the plan
    assert permit_ahead(now, s(0.25), [T0 + s(0.3)], rules, None, []) == []
    assert permit_ahead(now, s(0), [T0 + s(0.2)], rules, None, []) == []


def test_nothing_is_given_ahead_through_a_gap_or_window_within_the_horizon() -> None:
    at = [T0 + s(0.1), T0 + s(0.15)]
    assert permit_ahead(T0, s(0.25), at, Rules(s(0.2), 10, s(3600)), None, []) == []
    assert permit_ahead(T0, s(0.25), at, Rules(s(0), 1, s(0.25)), None, []) == []
    assert permit_ahead(T0, s(0.25), at, Rules(s(0), 10, s(3600)), None, []) == at
