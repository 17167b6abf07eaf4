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


def permit_ahead(
    now: datetime,
    horizon: timedelta,
    scheduled: Sequence[datetime],
    rules: Rules,
    last: datetime | None,
    window_refs: Sequence[datetime | None],
) -> list[datetime]:
    """When the first of the deliveries planned at ``scheduled`` (in order) may start,
    for those that may start within ``horizon`` of ``now``: a worker that admits them
    now and sends each at its time sends it on time, where asking again at that
    time would have sent it a claim's round trip late.

    Ask only when :func:`permit` admits none of them now, and when the campaign has
    no send in flight: ``last`` and ``window_refs`` must all be answers. Then each
    start given is exact, because every rule it applies is measured from an answer
    already known:

    * the first's gap from ``last`` and window from ``window_refs[0]``;
    * a later one's gap would be measured from the answer to the one before it,
      which nobody knows yet. So none is given when the gap is ``horizon`` or
      shorter (a gap of 0 is no rule): a longer gap puts it beyond the horizon;
    * likewise a window of ``horizon`` or shorter gives none, so that no start
      depends on the answer to a send of this same claim.
    """
    if horizon <= timedelta(0) or rules.window <= horizon:
        return []
    if timedelta(0) < rules.delay <= horizon:
        return []
    floors = [max(now, s) for s in scheduled]
    starts = []
    for t in next_slots(floors, rules, last, window_refs):
        if t > now + horizon:
            break
        starts.append(t)
    return starts
