"""Sending calendars: when, in real time, a recipient's local windows are open.

A :class:`Schedule` says, in local wall-clock time, on which weekdays and in
which windows a campaign may start a send, and which local dates it may not.
A :class:`Calendar` is that schedule in one time zone: the set of instants whose
local wall-clock time falls inside an allowed window. Defining it on instants
settles daylight saving time without special cases:

* a local time that does not exist (spring forward) is no instant's wall-clock
  time, so it is never sending time;
* a local time that happens twice (fall back) is the wall-clock time of two
  instants, and both are sending time: a window over the repeated hour lasts as
  long as the real time it covers.

A window with ``start > end`` crosses midnight and belongs to the day it starts
on: its part after midnight is allowed or excluded with the day before.

The calendar is an index of half-open real-time intervals, computed a chunk of
days at a time and kept, so asking "when is the next opening after ``t``" costs
a dictionary lookup and a bisection. Zones are read from the ``tzdata`` package,
never from the host, so every machine plans the same times.
"""

from __future__ import annotations

import bisect
import functools
import importlib.resources
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from mailsched.domain.plan import PastCalendar, Rules, plan, plan_in_windows

#: ``Schedule.timezone`` meaning "each recipient's own zone".
RECIPIENT = "recipient"

DAY = 86_400
#: Days in one piece of a calendar's index.
_CHUNK_DAYS = 8
_CHUNK = _CHUNK_DAYS * DAY
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
#: The last instant a ``datetime`` holds, in POSIX seconds.
_LAST = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(seconds=1)
#: The first moment a calendar will look at (local times before it have no UTC datetime).
_FIRST = (datetime(1, 1, 3, tzinfo=UTC) - _EPOCH) // timedelta(seconds=1)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class UnknownZone(ValueError):
    """A time zone name the IANA database (as shipped in ``tzdata``) does not hold."""


@functools.cache
def zone_names() -> frozenset[str]:
    """Every zone name the ``tzdata`` package holds."""
    text = importlib.resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(text.split())


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The zone ``name``, read from the ``tzdata`` package (never the host's files)."""
    if name not in zone_names():
        raise UnknownZone(f"unknown time zone {name!r}")
    parts = name.split("/")
    with importlib.resources.files("tzdata.zoneinfo").joinpath(*parts).open("rb") as f:
        return ZoneInfo.from_file(f, key=name)


@dataclass(frozen=True, slots=True)
class Window:
    """Local wall-clock times ``[start, end)``, in seconds after midnight.

    ``end`` may be ``DAY`` (24:00). ``start > end`` crosses midnight.
    """

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < DAY or not 0 < self.end <= DAY:
            raise ValueError("window times must fall within 00:00 and 24:00")
        if self.start == self.end:
            raise ValueError("a window must not start where it ends")

    @property
    def span(self) -> tuple[int, int]:
        """Start and end as seconds after the midnight of the day it belongs to."""
        return (self.start, self.end if self.start < self.end else DAY + self.end)


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a campaign may start sends, in local time.

    ``timezone`` is an IANA name, or :data:`RECIPIENT` (then each recipient's zone,
    or ``fallback`` for a recipient without one). ``days`` holds weekdays,
    0 = Monday. ``jitter`` is the largest random extra wait before a send, in seconds.
    """

    timezone: str
    windows: tuple[Window, ...]
    days: frozenset[int] = frozenset(range(7))
    exclude: frozenset[date] = frozenset()
    fallback: str | None = None
    jitter: int = 0

    def __post_init__(self) -> None:
        if not self.windows:
            raise ValueError("a schedule needs at least one window")
        if not self.days or not self.days <= set(range(7)):
            raise ValueError("days must be a non-empty set of weekdays 0..6")
        if self.timezone == RECIPIENT and self.fallback is None:
            raise ValueError('a "recipient" schedule needs a fallback zone')
        if self.jitter < 0:
            raise ValueError("jitter must not be negative")

    @property
    def per_recipient(self) -> bool:
        """Whether each recipient may have its own zone."""
        return self.timezone == RECIPIENT

    def zone_of(self, recipient_zone: str | None) -> str:
        """The zone a recipient's sends follow."""
        if not self.per_recipient:
            return self.timezone
        return recipient_zone or self.fallback or "UTC"

    def to_json(self) -> dict[str, object]:
        """The schedule as the API spells it."""
        return {
            "timezone": self.timezone,
            "fallbackTimezone": self.fallback,
            "days": [WEEKDAYS[d] for d in sorted(self.days)],
            "windows": [
                {"start": clock_text(w.start), "end": clock_text(w.end)} for w in self.windows
            ],
            "excludeDates": [d.isoformat() for d in sorted(self.exclude)],
            "jitterSeconds": self.jitter,
        }

    @classmethod
    def from_json(cls, value: dict[str, object]) -> Schedule:
        """The inverse of :meth:`to_json` (for a stored, already validated schedule)."""
        days = value.get("days")
        windows = value.get("windows")
        exclude = value.get("excludeDates")
        fallback = value.get("fallbackTimezone")
        assert isinstance(days, list) and isinstance(windows, list)
        assert isinstance(exclude, list)
        return cls(
            timezone=str(value["timezone"]),
            fallback=None if fallback is None else str(fallback),
            days=frozenset(WEEKDAYS.index(d) for d in days),
            windows=tuple(
                Window(clock_seconds(w["start"]), clock_seconds(w["end"])) for w in windows
            ),
            exclude=frozenset(date.fromisoformat(d) for d in exclude),
            jitter=int(str(value.get("jitterSeconds", 0))),
        )


def clock_seconds(text: str) -> int:
    """``HH:MM`` or ``HH:MM:SS`` (up to ``24:00``) as seconds after midnight."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(
        len(p) == 2 and p.isascii() and p.isdigit() for p in parts
    ):
        raise ValueError(f"{text!r} is not HH:MM or HH:MM:SS")
    h, m, s = (int(p) for p in (*parts, "00")[:3])
    if m > 59 or s > 59 or h > 24 or (h == 24 and (m or s)):
        raise ValueError(f"{text!r} is not a time of day between 00:00 and 24:00")
    return h * 3600 + m * 60 + s


def clock_text(seconds: int) -> str:
    """Seconds after midnight as ``HH:MM`` (or ``HH:MM:SS`` when they have seconds)."""
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}" + (f":{s:02d}" if s else "")


def posix(t: datetime) -> int:
    """Whole POSIX seconds of ``t``, rounded down (exact, unlike ``timestamp()``)."""
    return (t - _EPOCH) // timedelta(seconds=1)


def instant(seconds: int) -> datetime:
    """The UTC datetime of whole POSIX ``seconds``."""
    return _EPOCH + timedelta(seconds=seconds)


@dataclass(slots=True)
class _Chunk:
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)


class Calendar:
    """One schedule in one zone: its sending instants, as an index of real-time intervals."""

    __slots__ = ("_chunks", "_days", "_exclude", "_spans", "name", "zone")

    def __init__(self, schedule: Schedule, name: str) -> None:
        self.name = name
        self.zone = zone(name)
        self._days = schedule.days
        self._exclude = frozenset(d.toordinal() - _EPOCH_ORDINAL for d in schedule.exclude)
        self._spans = sorted({w.span for w in schedule.windows})
        self._chunks: dict[int, _Chunk] = {}

    def is_open(self, t: datetime) -> bool:
        """Whether ``t`` is sending time."""
        s = posix(t)
        chunk = self._chunk(s // _CHUNK)
        i = bisect.bisect_right(chunk.starts, s) - 1
        return i >= 0 and s < chunk.ends[i]

    def interval(self, t: datetime) -> tuple[datetime, datetime]:
        """The first stretch of sending time that ends after ``t``: ``(start, end)``,
        with ``start == t`` when ``t`` is sending time. (A stretch may be cut where
        the index's pieces meet; the next one then starts where it ends.)

        Raises :class:`PastCalendar` when there is none before year 9999.
        """
        us = (t - _EPOCH) // _US
        start, end = self.span_us(us)
        return (t if start == us else _EPOCH + start * _US), _EPOCH + end * _US

    def span_us(self, t: int) -> tuple[int, int]:
        """:meth:`interval` in whole microseconds since the epoch (what the planner uses)."""
        s = t // 1_000_000
        k = s // _CHUNK
        while k * _CHUNK <= _LAST:
            chunk = self._chunk(k)
            i = bisect.bisect_right(chunk.ends, s)
            if i < len(chunk.ends):
                start = chunk.starts[i]
                return (t if start <= s else start * 1_000_000), chunk.ends[i] * 1_000_000
            k += 1
        raise PastCalendar("no sending time left before the year 9999")

    def next_open(self, t: datetime) -> datetime:
        """The earliest sending instant at or after ``t``."""
        return self.interval(t)[0]

    def first_within(self, t: datetime, span: timedelta) -> datetime | None:
        """The earliest sending instant in ``[t, t + span)``, or ``None``."""
        try:
            found = self.next_open(t)
        except PastCalendar:
            return None
        return found if found < t + span else None

    def intervals(self, start: datetime, end: datetime) -> Iterable[tuple[datetime, datetime]]:
        """The sending time between ``start`` and ``end``, as ordered intervals."""
        t = start
        while t < end:
            try:
                a, b = self.interval(t)
            except PastCalendar:
                return
            if a >= end:
                return
            yield a, min(b, end)
            t = b

    def _chunk(self, k: int) -> _Chunk:
        chunk = self._chunks.get(k)
        if chunk is None:
            chunk = self._chunks[k] = self._build(k * _CHUNK, (k + 1) * _CHUNK)
        return chunk

    def _build(self, lo: int, hi: int) -> _Chunk:
        """The sending intervals within ``[lo, hi)``, merged and sorted."""
        lo, hi = max(lo, _FIRST), min(hi, _LAST)
        found: list[tuple[int, int]] = []
        for s0, s1, offset in self._segments(lo, hi):
            # Local days whose windows (which may reach into the next day) meet the segment.
            first_day = (s0 + offset) // DAY - 1
            last_day = (s1 - 1 + offset) // DAY
            for day in range(first_day, last_day + 1):
                if (day + 3) % 7 not in self._days or day in self._exclude:
                    continue  # 1970-01-01 was a Thursday (3)
                midnight = day * DAY - offset  # as if the whole window had this offset
                for w0, w1 in self._spans:
                    a, b = max(s0, midnight + w0), min(s1, midnight + w1)
                    if a < b:
                        found.append((a, b))
        found.sort()
        chunk = _Chunk()
        for a, b in found:
            if chunk.ends and a <= chunk.ends[-1]:
                chunk.ends[-1] = max(chunk.ends[-1], b)
            else:
                chunk.starts.append(a)
                chunk.ends.append(b)
        return chunk

    def _segments(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """``[lo, hi)`` cut where the zone's UTC offset changes: ``(start, end, offset)``.

        Probed every 12 hours: no zone changes its offset twice within that.
        """
        segments: list[tuple[int, int, int]] = []
        start, offset = lo, self._offset(lo)
        before = lo
        for probe in [*range(lo + DAY // 2, hi, DAY // 2), hi - 1]:
            if self._offset(probe) != offset:
                a, b = before, probe  # the offset changes at some second in (a, b]
                while b - a > 1:
                    mid = (a + b) // 2
                    a, b = (mid, b) if self._offset(mid) == offset else (a, mid)
                segments.append((start, b, offset))
                start, offset = b, self._offset(b)
            before = probe
        segments.append((start, hi, offset))
        return segments

    def _offset(self, s: int) -> int:
        try:
            local = datetime.fromtimestamp(s, UTC).astimezone(self.zone)
        except OverflowError:
            # East of UTC, the last hours of year 9999 are local times in year 10000,
            # which no datetime holds; the offset of two days before serves.
            return self._offset(s - 2 * DAY)
        delta = local.utcoffset()
        return 0 if delta is None else delta // timedelta(seconds=1)


@functools.lru_cache(maxsize=512)
def calendar(schedule: Schedule, name: str) -> Calendar:
    """The calendar of ``schedule`` in zone ``name`` (kept: its index is reused)."""
    return Calendar(schedule, name)


ALWAYS = Schedule("UTC", (Window(0, DAY),))


def openings(schedule: Schedule, zones: Sequence[str | None]) -> list[Calendar]:
    """Each recipient's calendar, given its own zone (or ``None``); one object per zone."""
    found: dict[str | None, Calendar] = {}
    result = []
    for name in zones:
        cal = found.get(name)
        if cal is None:
            cal = found[name] = calendar(schedule, schedule.zone_of(name))
        result.append(cal)
    return result


def plan_sends(
    schedule: Schedule | None,
    zones: Sequence[str | None],
    not_before: datetime,
    rules: Rules,
    history: Sequence[datetime] = (),
    draw: Callable[[], float] = lambda: 0.0,
) -> list[datetime]:
    """Plan one send per recipient (``zones[i]`` is recipient ``i``'s own zone, if any):
    under the campaign's rules alone without a schedule, inside its windows with one.
    """
    if schedule is None:
        return plan(len(zones), not_before, rules, history)
    return plan_in_windows(
        openings(schedule, zones),
        not_before,
        rules,
        history,
        timedelta(seconds=schedule.jitter),
        draw,
    )


#: How far ahead a schedule must have sending time, for every zone it uses.
HORIZON = timedelta(days=400)


def closed_zones(schedule: Schedule, zones: Iterable[str | None], now: datetime) -> list[str]:
    """Those of the zones in which ``schedule`` has no sending time within :data:`HORIZON`.

    The first allowed local date is found without any zone (local dates lie within
    a day of UTC's); each zone is then asked from just before it, so a request with
    hundreds of zones and a calendar that opens only at the horizon's end costs a
    chunk per zone, not fifty (all 598 zones took 2.4 s that way).
    """
    names = sorted({schedule.zone_of(z) for z in zones})
    today = now.date()
    first = next(
        (
            day
            for day in (today + timedelta(days=n) for n in range(-1, HORIZON.days + 2))
            if day.weekday() in schedule.days and day not in schedule.exclude
        ),
        None,
    )
    if first is None:
        return names
    midnight = datetime(first.year, first.month, first.day, tzinfo=UTC)
    begin = max(now, midnight - timedelta(days=2))
    end = now + HORIZON
    return [
        name
        for name in names
        if begin >= end or calendar(schedule, name).first_within(begin, end - begin) is None
    ]


def long_gap(schedule: Schedule, start: date) -> tuple[date, date] | None:
    """Two allowed local dates more than :data:`HORIZON` apart with none between them,
    after ``start``, made by the excluded dates; ``None`` if there are none.

    Zone-independent, and looks only around the excluded dates, however far apart
    they are. (Without this, a schedule that opens soon and then not for years would
    pass the first check and make the planner scan those years, zone by zone.)
    """
    step = timedelta(days=1)

    def allowed_after(day: date, direction: timedelta) -> date:
        day += direction
        while day.weekday() not in schedule.days:
            day += direction
        return day

    floor = start - step
    excluded = sorted(d for d in schedule.exclude if d.weekday() in schedule.days and d >= floor)
    i = 0
    while i < len(excluded):
        j = i
        while j + 1 < len(excluded) and excluded[j + 1] == allowed_after(excluded[j], step):
            j += 1
        before = max(allowed_after(excluded[i], -step), floor)
        after = allowed_after(excluded[j], step)
        if after - before > HORIZON:
            return before, after
        i = j + 1
    return None
