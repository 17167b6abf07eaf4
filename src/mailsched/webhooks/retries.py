"""When a failed webhook is tried again: the schedule, with jitter. Pure.

``schedule[n - 1]`` seconds after the n-th failed attempt, give or take 10% so that
the messages that failed together (a receiver down) do not come back together; after
the last step, the message is given up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

#: The share of a step that jitter may add or take away.
JITTER = 0.1
#: No retry comes sooner than this, whatever the schedule says (seconds).
FLOOR = 0.01


def retry_delay(
    schedule: Sequence[float], attempts: int, uniform: Callable[[float, float], float]
) -> float | None:
    """Seconds to wait after failed attempt number ``attempts`` (1 for the first), or
    ``None`` to give up. ``uniform(a, b)`` draws the jitter (``random.uniform``)."""
    if attempts < 1 or attempts > len(schedule):
        return None
    step = schedule[attempts - 1]
    return max(FLOOR, step * uniform(1 - JITTER, 1 + JITTER))
