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

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

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

    def planned(self, margin: timedelta) -> Rules:
        """These rules as a plan applies them, expecting the server to answer each send
        ``margin`` after it starts.

        The worker measures each gap from when the server *answered* the send before,
        and each window from when it answered the send ``limit`` places back
        (:mod:`mailsched.domain.limits`). A plan that spaced the starts by ``delay``
        alone would have each gap open one send's latency later than it assumed, and
        the lag would add up, send after send. With ``margin`` in each gap and each
        window, the plan and the worker agree on when they open while sends take no
        longer than that; a slower send is caught up by the next gaps' margins. With
        no delay there is no gap to leave room in.
        """
        if margin < timedelta(0):
            raise ValueError("margin must not be negative")
        delay = self.delay + margin if self.delay else self.delay
        return Rules(delay, self.limit, self.window + margin)


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


class Opening(Protocol):
    """When a recipient may be sent to: a :class:`~mailsched.domain.calendar.Calendar`.

    Times are whole microseconds since the POSIX epoch: planning 100,000 sends does
    its arithmetic on integers, a third of the time ``datetime`` takes.
    """

    def span_us(self, t: int) -> tuple[int, int]:
        """The first stretch of sending time that ends after ``t``: ``(start, end)``,
        ``start <= t`` when ``t`` is sending time."""
        ...


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def plan_in_windows(
    openings: Sequence[Opening],
    not_before: datetime,
    rules: Rules,
    history: Sequence[datetime] = (),
    jitter: timedelta = timedelta(0),
    draw: Callable[[], float] = lambda: 0.0,
) -> list[datetime]:
    """Plan one send per recipient, ``openings[i]`` saying when recipient ``i`` may get
    it; return the times in the recipients' order.

    The campaign's sends follow the recurrence of :func:`next_slots`; each next send
    goes to the recipient whose window opens first from the earliest moment the rules
    allow (ties: the lower index), at that opening. ``draw()`` (in ``[0, 1]``) times
    ``jitter`` is then added, the jitter cut to the time left in the window: jitter
    delays a send, never moves it out of its window, never breaks a rule.

    Recipients sharing an opening (one object per zone) are taken in index order,
    so a step weighs one candidate per zone, not per recipient.

    Raises :class:`PastCalendar` when a send would fall after year 9999.
    """
    refs = window_refs_for(history, len(openings), rules.limit)
    times = _plan_in_windows(
        openings,
        (not_before - _EPOCH) // _US,
        (rules.delay // _US, rules.limit, rules.window // _US),
        None if not history else (history[-1] - _EPOCH) // _US,
        [None if r is None else (r - _EPOCH) // _US for r in refs],
        jitter // _US,
        draw,
    )
    try:
        return [_EPOCH + timedelta(microseconds=t) for t in times]
    except OverflowError as error:
        raise PastCalendar("the sends would run past the year 9999") from error


@dataclass(slots=True)
class _Lane:
    """The recipients of one opening, in index order, and its current interval."""

    opening: Opening
    number: int
    members: list[int]
    pos: int = 0
    start: int = 0
    end: int = 0


class _Picker:
    """Which recipient goes next: the one whose window opens first from a moment
    (ties: the lower index), found among one candidate per opening.

    Two heaps: lanes whose interval starts later, by (start, head), and lanes whose
    interval has started, by head. A lane's interval is looked up again only when
    the moment passes its end, so most picks cost two heap operations.
    """

    def __init__(self, openings: Sequence[Opening], now: int) -> None:
        lanes: dict[int, _Lane] = {}
        for i, opening in enumerate(openings):
            lane = lanes.get(id(opening))
            if lane is None:
                lane = lanes[id(opening)] = _Lane(opening, len(lanes), [])
            lane.members.append(i)
        self._lanes = list(lanes.values())
        self._later: list[tuple[int, int, int]] = []
        self._open: list[tuple[int, int]] = []
        for lane in self._lanes:
            lane.start, lane.end = lane.opening.span_us(now)
            heapq.heappush(self._later, (lane.start, lane.members[0], lane.number))

    def pick(self, earliest: int) -> tuple[int, _Lane]:
        """The next send's time (at or after ``earliest``) and its lane."""
        later, open_now = self._later, self._open
        while later and later[0][0] <= earliest:
            _, head, n = heapq.heappop(later)
            heapq.heappush(open_now, (head, n))
        while open_now:
            head, n = open_now[0]
            lane = self._lanes[n]
            if lane.end > earliest:
                heapq.heappop(open_now)
                return earliest, lane
            heapq.heappop(open_now)  # its interval closed: find its next one
            lane.start, lane.end = lane.opening.span_us(earliest)
            if lane.start <= earliest:
                heapq.heappush(open_now, (head, n))
            else:
                heapq.heappush(later, (lane.start, head, n))
        at, _, n = heapq.heappop(later)
        return at, self._lanes[n]

    def taken(self, lane: _Lane) -> int:
        """The index of the recipient ``lane`` sends to; its next one becomes a candidate."""
        index = lane.members[lane.pos]
        lane.pos += 1
        if lane.pos < len(lane.members):
            heapq.heappush(self._later, (lane.start, lane.members[lane.pos], lane.number))
        return index


def _plan_in_windows(
    openings: Sequence[Opening],
    not_before: int,
    rules: tuple[int, int, int],
    prev: int | None,
    refs: list[int | None],
    jitter: int,
    draw: Callable[[], float],
) -> list[int]:
    delay, limit, window = rules
    if not delay and not jitter and limit >= len(openings) and all(r is None for r in refs):
        # Nothing binds: each send is at its recipient's own next opening.
        return _each_at_its_opening(openings, max(not_before, prev or not_before))
    picker = _Picker(openings, not_before)
    times = [not_before] * len(openings)
    sent: list[int] = []  # in send order
    for j in range(len(openings)):
        earliest = not_before
        if prev is not None and prev + delay > earliest:
            earliest = prev + delay
        ref = sent[j - limit] if j >= limit else (refs[j] if j < len(refs) else None)
        if ref is not None and ref + window > earliest:
            earliest = ref + window
        at, lane = picker.pick(earliest)
        if jitter:
            # Never past the window's close: moving this send to another day would hold
            # back every other zone's sends behind it.
            room = _close(lane.opening, lane.end, at + jitter) - 1 - at
            at += int(min(jitter, room) * draw())
        times[picker.taken(lane)] = at
        sent.append(at)
        prev = at
    return times


def _close(opening: Opening, end: int, enough: int) -> int:
    """Where the stretch of sending time that ends at ``end`` really closes (the index
    may cut one stretch in pieces), or any point of it after ``enough``."""
    while end <= enough:
        start, after = opening.span_us(end)
        if start > end:
            return end
        end = after
    return end


def _each_at_its_opening(openings: Sequence[Opening], earliest: int) -> list[int]:
    """The plan when no rule binds (no delay, a limit above the count, no jitter): every
    recipient at the first opening from ``earliest``. One lookup per zone."""
    starts: dict[int, int] = {}
    times = []
    for opening in openings:
        at = starts.get(id(opening))
        if at is None:
            at = starts[id(opening)] = opening.span_us(earliest)[0]
        times.append(at)
    return times


def steady_offset(index: int, rules: Rules) -> timedelta:
    """When send ``index`` (from 0) of a fresh campaign starts, after its first: what
    :func:`plan` gives without history, in closed form, so that a million sends can be
    planned by the database in one statement.

    With ``limit * delay >= window`` the delay alone paces the sends; otherwise they go
    in bursts of ``limit``, ``delay`` apart, a window after each burst's first.
    """
    if rules.delay * rules.limit >= rules.window:
        return rules.delay * index
    bursts, within = divmod(index, rules.limit)
    return rules.window * bursts + rules.delay * within
