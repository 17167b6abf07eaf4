"""Checks of the two campaign rules on observed send times."""

from __future__ import annotations

import itertools
from collections.abc import Sequence


def min_gap(times: Sequence[float]) -> float:
    """The smallest gap between consecutive sends (inf for fewer than two)."""
    ordered = sorted(times)
    return min((b - a for a, b in itertools.pairwise(ordered)), default=float("inf"))


def max_in_window(times: Sequence[float], window: float) -> int:
    """The most sends in any half-open window ``[t, t + window)``."""
    ordered = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(ordered):
        while ordered[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best
