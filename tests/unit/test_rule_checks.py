"""The test suite's own rule checker must be right, or the e2e checks prove nothing."""

from __future__ import annotations

import pytest

from tests.support.rules import max_in_window, min_gap


@pytest.mark.parametrize(
    ("times", "window", "expected"),
    [
        ([], 10, 0),
        ([0], 10, 1),
        ([0, 1, 2], 10, 3),
        ([0, 10, 20], 10, 1),
        ([0, 9.999, 19.998], 10, 2),
        ([0, 1, 10, 11], 10, 2),
        ([5, 0, 1], 2, 2),
    ],
)
def test_max_in_window(times: list[float], window: float, expected: int) -> None:
    assert max_in_window(times, window) == expected


def test_min_gap() -> None:
    assert min_gap([3, 0, 1]) == 1
    assert min_gap([1]) == float("inf")
