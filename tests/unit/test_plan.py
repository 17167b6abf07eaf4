"""The scheduling core: tables of exact plans, and properties that hold for every plan."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsched.domain.plan import PastCalendar, Rules, next_slots, plan, window_refs_for

T0 = datetime(2026, 1, 25, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("count", "delay", "limit", "window", "expected"),
    [
        # The specification's example: 10 a minute apart, the 11th an hour after the 1st.
        (11, 60, 10, 3600, [*(60 * i for i in range(10)), 3600]),
        (1, 60, 10, 3600, [0]),
        (3, 0, 100, 3600, [0, 0, 0]),
        (5, 0, 2, 10, [0, 0, 10, 10, 20]),
        (5, 3, 2, 10, [0, 3, 10, 13, 20]),
        (4, 20, 2, 10, [0, 20, 40, 60]),  # delay alone already spreads them
        (4, 4, 3, 10, [0, 4, 8, 12]),  # 0 and 12: window [2,12) holds 4,8 and itself
        (6, 1, 3, 6, [0, 1, 2, 6, 7, 8]),
    ],
)
def test_plan_table(count: int, delay: int, limit: int, window: int, expected: list[int]) -> None:
    times = plan(count, T0, Rules(s(delay), limit, s(window)))
    assert [(t - T0).total_seconds() for t in times] == expected


def test_plan_continues_from_history() -> None:
    rules = Rules(s(1), 2, s(10))
    history = [T0, T0 + s(1)]
    times = plan(3, T0 + s(1), rules, history)
    assert [(t - T0).total_seconds() for t in times] == [10, 11, 20]


def test_plan_of_nothing() -> None:
    assert plan(0, T0, Rules(s(1), 1, s(1))) == []


@pytest.mark.parametrize(("delay", "limit", "window"), [(-1, 1, 1), (0, 0, 1), (0, 1, 0)])
def test_rules_refuse_nonsense(delay: int, limit: int, window: int) -> None:
    with pytest.raises(ValueError):
        Rules(s(delay), limit, s(window))


LAST = datetime.max.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("count", "start", "rules", "history"),
    [
        # The delay carries the second send past the calendar.
        (2, LAST - s(59), Rules(s(60), 10, HOUR), ()),
        # The window does, delay or not.
        (2, LAST - s(3599), Rules(s(0), 1, HOUR), ()),
        # Or the sends already made.
        (1, LAST - s(59), Rules(s(60), 10, HOUR), (LAST - s(30),)),
        (1, LAST - HOUR, Rules(s(0), 1, 2 * HOUR), (LAST - HOUR,)),
    ],
)
def test_a_plan_past_year_9999_is_refused(
    count: int, start: datetime, rules: Rules, history: tuple[datetime, ...]
) -> None:
    with pytest.raises(PastCalendar):
        plan(count, start, rules, history)


def test_a_plan_may_end_at_the_last_moment() -> None:
    rules = Rules(s(60), 10, HOUR)
    assert plan(2, LAST - s(60), rules) == [LAST - s(60), LAST]


rules_strategy = st.builds(
    Rules,
    delay=st.integers(0, 120).map(s),
    limit=st.integers(1, 12),
    window=st.integers(1, 600).map(s),
)


def _assert_rules_hold(times: list[datetime], rules: Rules) -> None:
    for a, b in itertools.pairwise(times):
        assert b - a >= rules.delay
    for i in range(rules.limit, len(times)):
        # Any window [t, t + window) holds at most `limit` sends.
        assert times[i] - times[i - rules.limit] >= rules.window


def _assert_as_early_as_possible(times: list[datetime], start: datetime, rules: Rules) -> None:
    for i, t in enumerate(times):
        bounds = [start]
        if i >= 1:
            bounds.append(times[i - 1] + rules.delay)
        if i >= rules.limit:
            bounds.append(times[i - rules.limit] + rules.window)
        assert t == max(bounds)


@given(rules=rules_strategy, count=st.integers(0, 80))
def test_every_plan_keeps_both_rules_and_is_earliest(rules: Rules, count: int) -> None:
    times = plan(count, T0, rules)
    assert len(times) == count
    assert all(t >= T0 for t in times)
    _assert_rules_hold(times, rules)
    _assert_as_early_as_possible(times, T0, rules)


@given(
    rules=rules_strategy,
    gaps=st.lists(st.integers(0, 900), min_size=0, max_size=30),
    count=st.integers(1, 40),
)
def test_next_slots_after_real_sends_keep_the_rules(
    rules: Rules, gaps: list[int], count: int
) -> None:
    # Real history that itself keeps the rules (as sent by the worker).
    history: list[datetime] = []
    for gap in gaps:
        floor = (history[-1] if history else T0) + s(gap)
        history.extend(plan(1, floor, rules, history))
    start = (history[-1] if history else T0) + s(1)
    times = next_slots(
        [start] * count,
        rules,
        history[-1] if history else None,
        window_refs_for(history, count, rules.limit),
    )
    _assert_rules_hold(history + times, rules)
    assert times == plan(count, start, rules, history)
