"""The retry schedule as a table: the step for each failed attempt, jittered, then give up."""

from __future__ import annotations

import pytest

from mailsched.webhooks.retries import FLOOR, retry_delay

SCHEDULE = (5.0, 30.0, 120.0)


@pytest.mark.parametrize(
    ("attempts", "draw", "delay"),
    [
        (1, 1.0, 5.0),
        (1, 0.9, 4.5),
        (1, 1.1, 5.5),
        (2, 1.0, 30.0),
        (3, 0.9, 108.0),
        (4, 1.0, None),
        (0, 1.0, None),
    ],
)
def test_delay(attempts: int, draw: float, delay: float | None) -> None:
    got = retry_delay(SCHEDULE, attempts, lambda low, high: draw)
    assert got == pytest.approx(delay) if delay is not None else got is None


def test_jitter_stays_within_ten_percent() -> None:
    bounds: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        bounds.append((low, high))
        return low

    retry_delay(SCHEDULE, 2, uniform)
    assert bounds == [(pytest.approx(0.9), pytest.approx(1.1))]


def test_never_below_the_floor() -> None:
    assert retry_delay((0.0001,), 1, lambda low, high: low) == FLOOR
