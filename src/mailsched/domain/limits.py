"""Permits: which claimed deliveries of a campaign may start sending now.

The worker asks this with the real times of the campaign's earlier sends (when
the server answered them; a send in flight counts as ending now), read from the
database under the campaign's lock, so the rules hold on what was
actually sent, whichever worker sent it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailsched.domain.plan import Rules, next_slots


@dataclass(frozen=True, slots=True)
class Permit:
    """The answer for a batch of claimed deliveries, taken in order.

    The first ``admitted`` of them may start now. ``next_at`` is the earliest
    start of the first one that may not (``None`` when all are admitted).
    """

    admitted: int
    next_at: datetime | None


def permit(
    now: datetime,
    scheduled: Sequence[datetime],
    rules: Rules,
    last: datetime | None,
    window_refs: Sequence[datetime | None],
) -> Permit:
    """How many of the deliveries planned at ``scheduled`` (in order) may start at ``now``.

    A delivery never starts before its planned time, nor before the rules allow
    given the sends before it (see :func:`mailsched.domain.plan.next_slots`).
    """
    floors = [max(now, s) for s in scheduled]
    slots = next_slots(floors, rules, last, window_refs)
    for j, t in enumerate(slots):
        if t > now:
            return Permit(j, t)
    return Permit(len(slots), None)


def backoff(attempt: int, base: timedelta, cap: timedelta, jitter: float) -> timedelta:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, jittered.

    ``jitter`` is a number in [0, 1) supplied by the caller ("full jitter" on the
    upper half, so a retry never comes sooner than half the nominal delay).
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    # Compare in seconds: base * 2**n overflows timedelta long before n is absurd.
    nominal = timedelta(
        seconds=min(cap.total_seconds(), base.total_seconds() * 2.0 ** min(attempt - 1, 64))
    )
    return nominal / 2 + nominal / 2 * jitter
