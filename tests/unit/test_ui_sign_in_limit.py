"""The dashboard's limit on failed sign-ins, with a clock the test moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailsched.ui.sessions import FailedSignIns, TooManySignIns

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def fail(limit: FailedSignIns, client: str, times: int = 1) -> None:
    for _ in range(times):
        limit.begin(client)


def test_the_eleventh_attempt_in_a_minute_is_refused_until_the_first_leaves_the_window() -> None:
    clock = Clock()
    limit = FailedSignIns(clock)
    for _ in range(10):
        fail(limit, "10.0.0.1")
        clock.advance(1)  # the tenth at +9 s; now +10 s
    with pytest.raises(TooManySignIns) as refused:
        limit.begin("10.0.0.1")
    assert refused.value.retry_after == 50  # the first, at +0 s, leaves at +60 s
    clock.advance(49.5)
    with pytest.raises(TooManySignIns) as refused:
        limit.begin("10.0.0.1")
    assert refused.value.retry_after == 1  # half a second, rounded up
    clock.advance(0.5)  # +60 s: the window is half-open
    limit.begin("10.0.0.1")
    with pytest.raises(TooManySignIns):
        limit.begin("10.0.0.1")  # the second failure, at +1 s, is still in


def test_a_refused_attempt_is_not_counted() -> None:
    clock = Clock()
    limit = FailedSignIns(clock, attempts=2)
    fail(limit, "a", 2)
    for _ in range(5):
        clock.advance(10)
        with pytest.raises(TooManySignIns):
            limit.begin("a")
    clock.advance(20)  # 60 s after the two failures, however many refusals since
    limit.begin("a")


def test_addresses_are_counted_apart() -> None:
    limit = FailedSignIns(Clock(), attempts=3)
    fail(limit, "a", 3)
    with pytest.raises(TooManySignIns):
        limit.begin("a")
    fail(limit, "b", 3)


def test_a_withdrawn_attempt_is_not_counted() -> None:
    limit = FailedSignIns(Clock(), attempts=3)
    for _ in range(10):
        limit.begin("a")
        limit.withdraw("a")  # a good key
    assert len(limit) == 0
    fail(limit, "a", 3)
    with pytest.raises(TooManySignIns):
        limit.begin("a")
    limit.withdraw("unknown")  # harmless


def test_memory_is_bounded_by_the_least_recently_seen_address() -> None:
    clock = Clock()
    limit = FailedSignIns(clock, attempts=2, max_clients=3)
    fail(limit, "a", 2)
    for client in ("b", "c"):
        fail(limit, client)
    with pytest.raises(TooManySignIns):
        limit.begin("a")  # seen again: now the most recent
    fail(limit, "d")  # evicts b, not a
    assert len(limit) == 3
    with pytest.raises(TooManySignIns):
        limit.begin("a")
    fail(limit, "b", 2)  # forgotten, so counted afresh


def test_each_address_keeps_at_most_its_limit_of_times() -> None:
    clock = Clock()
    limit = FailedSignIns(clock, attempts=3)
    for _ in range(100):
        try:
            limit.begin("a")
        except TooManySignIns:
            clock.advance(61)
    assert all(len(times) <= 3 for times in limit._failures.values())


@pytest.mark.parametrize(
    ("attempts", "window", "max_clients"),
    [(0, 60, 10), (1, 0, 10), (1, 60, 0)],
)
def test_nonsense_limits_are_refused(attempts: int, window: float, max_clients: int) -> None:
    with pytest.raises(ValueError):
        FailedSignIns(Clock(), attempts, timedelta(seconds=window), max_clients)
