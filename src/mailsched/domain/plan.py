"""Send times under the two campaign rules.

A campaign has two rules that every pair of its sends must respect:

* ``delay``: the minimum gap between two consecutive sends;
* ``limit`` per ``window``: at most ``limit`` sends in any rolling window of
  ``window`` length, which is the same as "send ``i`` starts no earlier than
  ``window`` after send ``i - limit``".

So the earliest start of send ``i`` is::

    t_i = max(not_before_i, t_{i-1} + delay, t_{i-limit} + window)

Everything here evaluates that one recurrence, either for a whole campaign at
creation (:func:`plan`) or for the next few sends of a running campaign, given
the real times of the sends before them (:func:`next_slots`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailsched.errors import MailschedError


class PastCalendar(MailschedError):
    """A send would fall after the last moment a ``datetime`` holds (year 9999)."""


@dataclass(frozen=True, slots=True)
class Rules:
    """The sending rules of one campaign."""

    delay: timedelta
    limit: int
    window: timedelta

    def __post_init__(self) -> None:
        if self.delay < timedelta(0):
            raise ValueError("delay must not be negative")
        if self.limit < 1:
            raise ValueError("limit must be at least 1")
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")


def next_slots(
    not_before: Sequence[datetime],
    rules: Rules,
    last: datetime | None,
    window_refs: Sequence[datetime | None],
) -> list[datetime]:
    """Earliest start times for the next ``len(not_before)`` sends of a campaign.

    ``last`` is the time of the campaign's latest send so far. ``window_refs[j]``
    is the time of the send ``rules.limit`` places before new send ``j`` when that
    send already happened (``None`` when there is none); it is needed only for
    ``j < rules.limit``, since later refs are new sends themselves.

    Raises :class:`PastCalendar` when a send would fall after year 9999.
    """
    try:
        return _next_slots(not_before, rules, last, window_refs)
    except OverflowError as error:
        raise PastCalendar("the sends would run past the year 9999") from error


def _next_slots(
    not_before: Sequence[datetime],
    rules: Rules,
    last: datetime | None,
    window_refs: Sequence[datetime | None],
) -> list[datetime]:
    times: list[datetime] = []
    prev = last
    for j, floor in enumerate(not_before):
        t = floor
        if prev is not None and prev + rules.delay > t:
            t = prev + rules.delay
        ref = window_refs[j] if j < len(window_refs) else None
        if j >= rules.limit:
            ref = times[j - rules.limit]
        if ref is not None and ref + rules.window > t:
            t = ref + rules.window
        times.append(t)
        prev = t
    return times


def plan(
    count: int,
    not_before: datetime,
    rules: Rules,
    history: Sequence[datetime] = (),
) -> list[datetime]:
    """Plan ``count`` sends as early as both rules allow, none before ``not_before``.

    ``history`` holds the times of the campaign's earlier sends, oldest
    first; only its last ``rules.limit`` entries matter.
    """
    return next_slots(
        [not_before] * count,
        rules,
        history[-1] if history else None,
        window_refs_for(history, count, rules.limit),
    )


def window_refs_for(history: Sequence[datetime], count: int, limit: int) -> list[datetime | None]:
    """The ``window_refs`` argument of :func:`next_slots` taken from a full history."""
    n = len(history)
    return [
        history[n - limit + j] if n - limit + j >= 0 else None for j in range(min(count, limit))
    ]
