"""Sending calendars: tables of real-time intervals over the transitions that bite, and
properties comparing a calendar with a brute-force reading of the local wall clock.

The reference here reads each instant's wall-clock time off ``zoneinfo`` and asks which
window of which local day it falls in; it shares nothing with the calendar's index.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsched.domain.calendar import (
    RECIPIENT,
    Calendar,
    Schedule,
    UnknownZone,
    Window,
    calendar,
    clock_seconds,
    clock_text,
    zone,
)
from mailsched.domain.plan import PastCalendar

DAY = 86_400
SECOND = timedelta(seconds=1)
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)
ALL = frozenset(range(7))

#: Zones whose offsets or rules make sending time hard to get right.
ZONES = (
    "UTC",
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Dublin",  # "negative" daylight saving time in the IANA data
    "Australia/Lord_Howe",  # a 30-minute shift
    "Australia/Adelaide",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tehran",
    "Asia/Tokyo",
    "Pacific/Chatham",  # +12:45 / +13:45
    "Pacific/Kiritimati",  # +14: its Monday starts on Sunday in UTC
    "America/Santiago",  # shifts at midnight
    "America/Havana",  # repeats the hour after midnight
    "America/St_Johns",
    "Africa/Casablanca",
    "Antarctica/Troll",  # a 2-hour shift
)


@functools.cache
def tz(name: str) -> ZoneInfo:
    """``name`` as the ``tzdata`` package ships it, as the product reads it. Not
    ``ZoneInfo(name)``: that reads the host's files first, which may be another release
    (2025b where this was written, which disagrees with the package's 2026f on Havana and
    Casablanca)."""
    with importlib.resources.files("tzdata.zoneinfo").joinpath(*name.split("/")).open("rb") as f:
        return ZoneInfo.from_file(f, key=name)


def allowed(schedule: Schedule, day: date) -> bool:
    """Whether the windows of local ``day`` may be used."""
    return day.weekday() in schedule.days and day not in schedule.exclude


def reference_open(schedule: Schedule, name: str, t: datetime) -> bool:
    """Whether ``t`` is sending time, read straight off its local wall clock."""
    wall = t.astimezone(tz(name))
    today = wall.date()
    now = wall.hour * 3600 + wall.minute * 60 + wall.second  # bounds are whole seconds
    for w in schedule.windows:
        if w.start < w.end:
            if w.start <= now < w.end and allowed(schedule, today):
                return True
        elif now >= w.start and allowed(schedule, today):
            return True
        elif now < w.end and allowed(schedule, today - timedelta(days=1)):
            return True  # the part after midnight of yesterday's window
    return False


@functools.cache
def transitions(name: str) -> tuple[datetime, ...]:
    """The instants, 2025-06 to 2030-06, at which ``name`` changes its UTC offset."""
    z = tz(name)
    found: list[datetime] = []
    t, end = datetime(2025, 6, 1, tzinfo=UTC), datetime(2030, 6, 1, tzinfo=UTC)
    step = timedelta(hours=6)  # no zone shifts twice within 6 hours
    while t < end:
        before, after = t.astimezone(z).utcoffset(), (t + step).astimezone(z).utcoffset()
        if before != after:
            a, b = t, t + step
            while b - a > SECOND:
                mid = a + (b - a) // SECOND // 2 * SECOND
                a, b = (mid, b) if mid.astimezone(z).utcoffset() == before else (a, mid)
            found.append(b)
        t += step
    return tuple(found)


def change_points(schedule: Schedule, name: str, first: date, last: date) -> list[datetime]:
    """Every instant of local days ``first..last`` at which sending time may begin or end:
    window bounds and midnights (each pass of a repeated wall time), and offset changes.
    Between two consecutive points the wall clock runs on without crossing any of them,
    so whether it is sending time does not change."""
    z = tz(name)
    bounds = {0}
    for w in schedule.windows:
        bounds |= {w.start, w.end if w.start < w.end else DAY + w.end}
    points = set(transitions(name))
    day = first
    while day <= last:
        midnight = datetime.combine(day, time())
        for b in bounds:
            wall = midnight + timedelta(seconds=b)
            for fold in (0, 1):
                t = wall.replace(tzinfo=z, fold=fold).astimezone(UTC)
                if t.astimezone(z).replace(tzinfo=None) == wall:  # not in a gap
                    points.add(t)
        day += timedelta(days=1)
    return sorted(points)


def reference_first(schedule: Schedule, name: str, t: datetime, is_open: bool) -> datetime | None:
    """The first change point after ``t`` where sending time is ``is_open`` (None when
    there is none within about four months)."""
    first = t.astimezone(tz(name)).date() - timedelta(days=2)
    days = 16
    while days <= 128:
        last = first + timedelta(days=days)
        # Every instant before this one has a local date before ``last``.
        horizon = datetime.combine(last, time(), tzinfo=UTC) - timedelta(days=1)
        for point in change_points(schedule, name, first, last):
            if t < point < horizon and reference_open(schedule, name, point) == is_open:
                return point
        days *= 2
    return None


def reference_next_open(schedule: Schedule, name: str, t: datetime) -> datetime | None:
    """The earliest sending instant at or after ``t``."""
    if reference_open(schedule, name, t):
        return t
    return reference_first(schedule, name, t, True)


def u(text: str) -> datetime:
    """``YYYY-MM-DD HH:MM[:SS]`` in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def windows(text: str) -> tuple[Window, ...]:
    """``"09:00-17:00 22:00-02:00"`` as windows (parsed here, not by ``clock_seconds``)."""

    def seconds(clock: str) -> int:
        h, m = clock.split(":")
        return int(h) * 3600 + int(m) * 60

    return tuple(
        Window(seconds(a), seconds(b)) for a, b in (part.split("-") for part in text.split())
    )


def stretches(cal: Calendar, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``cal.intervals`` with pieces that touch joined (the index may cut a stretch where
    its chunks meet)."""
    joined: list[tuple[datetime, datetime]] = []
    for a, b in cal.intervals(start, end):
        assert a < b
        assert not joined or joined[-1][1] <= a
        if joined and joined[-1][1] == a:
            joined[-1] = (joined[-1][0], b)
        else:
            joined.append((a, b))
    return joined


# (zone, windows, days, excluded dates, from, to (UTC), the sending time in between (UTC))
TABLE = [
    # New York springs forward on Sunday 2027-03-14 at 02:00 EST (07:00 UTC) to 03:00 EDT.
    pytest.param(
        "America/New_York", "01:30-02:30", ALL, (), "2027-03-13", "2027-03-16",
        [("2027-03-13 06:30", "2027-03-13 07:30"), ("2027-03-14 06:30", "2027-03-14 07:00"),
         ("2027-03-15 05:30", "2027-03-15 06:30")],
        id="new-york-spring-half-an-hour-left",
    ),
    pytest.param(
        "America/New_York", "09:00-17:00", ALL, (), "2027-03-13", "2027-03-16",
        [("2027-03-13 14:00", "2027-03-13 22:00"), ("2027-03-14 13:00", "2027-03-14 21:00"),
         ("2027-03-15 13:00", "2027-03-15 21:00")],
        id="new-york-spring-office-hours",
    ),
    pytest.param(
        "America/New_York", "01:00-03:30", {SUN}, (), "2027-03-13", "2027-03-16",
        [("2027-03-14 06:00", "2027-03-14 07:30")],
        id="new-york-spring-over-the-gap",
    ),
    pytest.param(
        "America/New_York", "02:00-03:00", {SUN}, (), "2027-03-13", "2027-03-16", [],
        id="new-york-spring-the-hour-that-does-not-exist",
    ),
    pytest.param(
        "America/New_York", "00:00-24:00", {SUN}, (), "2027-03-13", "2027-03-16",
        [("2027-03-14 05:00", "2027-03-15 04:00")],
        id="new-york-spring-23-hour-day",
    ),
    pytest.param(
        "America/New_York", "23:00-03:00", {SAT}, (), "2027-03-13", "2027-03-16",
        [("2027-03-14 04:00", "2027-03-14 07:00")],
        id="new-york-spring-saturday-night",
    ),
    # New York falls back on Sunday 2027-11-07 at 02:00 EDT (06:00 UTC) to 01:00 EST.
    pytest.param(
        "America/New_York", "01:00-02:00", {SUN}, (), "2027-11-06", "2027-11-09",
        [("2027-11-07 05:00", "2027-11-07 07:00")],
        id="new-york-fall-the-hour-twice",
    ),
    pytest.param(
        "America/New_York", "01:30-01:45", {SUN}, (), "2027-11-06", "2027-11-09",
        [("2027-11-07 05:30", "2027-11-07 05:45"), ("2027-11-07 06:30", "2027-11-07 06:45")],
        id="new-york-fall-two-passes",
    ),
    pytest.param(
        "America/New_York", "00:00-24:00", {SUN}, (), "2027-11-06", "2027-11-09",
        [("2027-11-07 04:00", "2027-11-08 05:00")],
        id="new-york-fall-25-hour-day",
    ),
    pytest.param(
        "America/New_York", "23:00-03:00", {SAT}, (), "2027-11-06", "2027-11-09",
        [("2027-11-07 03:00", "2027-11-07 08:00")],
        id="new-york-fall-saturday-night",
    ),
    # The whole month in one stretch, however the index cuts it.
    pytest.param(
        "America/New_York", "00:00-24:00", ALL, (), "2027-03-01", "2027-04-01",
        [("2027-03-01 00:00", "2027-04-01 00:00")],
        id="new-york-always",
    ),
    # London springs forward on Sunday 2027-03-28 at 01:00 GMT to 02:00 BST.
    pytest.param(
        "Europe/London", "00:30-01:30", ALL, (), "2027-03-27", "2027-03-30",
        [("2027-03-27 00:30", "2027-03-27 01:30"), ("2027-03-28 00:30", "2027-03-28 01:00"),
         ("2027-03-28 23:30", "2027-03-29 00:30"), ("2027-03-29 23:30", "2027-03-30 00:00")],
        id="london-spring-cut-by-the-range-end",
    ),
    pytest.param(
        "Europe/London", "01:00-02:00", ALL, (), "2027-03-27", "2027-03-30",
        [("2027-03-27 01:00", "2027-03-27 02:00"), ("2027-03-29 00:00", "2027-03-29 01:00")],
        id="london-spring-the-hour-that-does-not-exist",
    ),
    # London falls back on Sunday 2027-10-31 at 02:00 BST (01:00 UTC) to 01:00 GMT.
    pytest.param(
        "Europe/London", "01:00-02:00", ALL, (), "2027-10-30", "2027-11-01 12:00",
        [("2027-10-30 00:00", "2027-10-30 01:00"), ("2027-10-31 00:00", "2027-10-31 02:00"),
         ("2027-11-01 01:00", "2027-11-01 02:00")],
        id="london-fall-the-hour-twice",
    ),
    pytest.param(
        "Europe/London", "09:00-17:00", ALL, (), "2027-10-30", "2027-11-02",
        [("2027-10-30 08:00", "2027-10-30 16:00"), ("2027-10-31 09:00", "2027-10-31 17:00"),
         ("2027-11-01 09:00", "2027-11-01 17:00")],
        id="london-fall-office-hours",
    ),
    # Lord Howe: 02:00 (+11) becomes 01:30 (+10:30) on Sunday 2027-04-04 (15:00 UTC the day
    # before), and 02:00 (+10:30) becomes 02:30 (+11) on Sunday 2027-10-03 (15:30 UTC).
    pytest.param(
        "Australia/Lord_Howe", "01:00-03:00", {SUN}, (), "2027-04-02", "2027-04-06",
        [("2027-04-03 14:00", "2027-04-03 16:30")],
        id="lord-howe-fall-half-an-hour-twice",
    ),
    pytest.param(
        "Australia/Lord_Howe", "01:45-01:50", {SUN}, (), "2027-04-02", "2027-04-06",
        [("2027-04-03 14:45", "2027-04-03 14:50"), ("2027-04-03 15:15", "2027-04-03 15:20")],
        id="lord-howe-fall-two-passes",
    ),
    pytest.param(
        "Australia/Lord_Howe", "01:00-03:00", {SUN}, (), "2027-10-01", "2027-10-05",
        [("2027-10-02 14:30", "2027-10-02 16:00")],
        id="lord-howe-spring-over-the-gap",
    ),
    pytest.param(
        "Australia/Lord_Howe", "02:15-02:45", {SUN}, (), "2027-10-01", "2027-10-05",
        [("2027-10-02 15:30", "2027-10-02 15:45")],
        id="lord-howe-spring-starts-in-the-gap",
    ),
    pytest.param(
        "Australia/Lord_Howe", "02:00-02:30", {SUN}, (), "2027-10-01", "2027-10-05", [],
        id="lord-howe-spring-the-half-hour-that-does-not-exist",
    ),
    # Kolkata is +05:30 all year.
    pytest.param(
        "Asia/Kolkata", "09:00-17:00", {MON, TUE, WED, THU, FRI}, (), "2027-03-05", "2027-03-09",
        [("2027-03-05 03:30", "2027-03-05 11:30"), ("2027-03-08 03:30", "2027-03-08 11:30")],
        id="kolkata-weekdays",
    ),
    pytest.param(
        "Asia/Kolkata", "00:00-06:00", {MON}, (), "2027-02-26", "2027-03-06",
        [("2027-02-28 18:30", "2027-03-01 00:30")],
        id="kolkata-monday-starts-on-sunday-in-utc",
    ),
    # Chatham: 03:45 (+13:45) becomes 02:45 (+12:45) on Sunday 2027-04-04 (14:00 UTC the
    # day before), and 02:45 (+12:45) becomes 03:45 (+13:45) on Sunday 2027-09-26.
    pytest.param(
        "Pacific/Chatham", "03:00-04:00", {SUN}, (), "2027-04-02", "2027-04-06",
        [("2027-04-03 13:15", "2027-04-03 14:00"), ("2027-04-03 14:15", "2027-04-03 15:15")],
        id="chatham-fall",
    ),
    pytest.param(
        "Pacific/Chatham", "09:00-10:00", ALL, (), "2027-09-24 12:00", "2027-09-27",
        [("2027-09-24 20:15", "2027-09-24 21:15"), ("2027-09-25 19:15", "2027-09-25 20:15"),
         ("2027-09-26 19:15", "2027-09-26 20:15")],
        id="chatham-spring-mornings",
    ),
    pytest.param(
        "Pacific/Chatham", "03:00-04:00", {SUN}, (), "2027-09-24", "2027-09-28",
        [("2027-09-25 14:00", "2027-09-25 14:15")],
        id="chatham-spring-a-quarter-hour-left",
    ),
    # Kiritimati is +14: its Monday office hours start on Sunday in UTC.
    pytest.param(
        "Pacific/Kiritimati", "09:00-17:00", {MON}, (), "2027-02-26", "2027-03-06",
        [("2027-02-28 19:00", "2027-03-01 03:00")],
        id="kiritimati-monday",
    ),
    # Santiago: 24:00 (-03) becomes 23:00 (-04) on Saturday 2027-04-03 (03:00 UTC on Sunday),
    # and 24:00 (-04) becomes 01:00 (-03) on Saturday 2027-09-04 (04:00 UTC on Sunday).
    pytest.param(
        "America/Santiago", "23:00-01:00", {SAT}, (), "2027-04-02", "2027-04-06",
        [("2027-04-04 02:00", "2027-04-04 05:00")],
        id="santiago-fall-saturday-night",
    ),
    pytest.param(
        "America/Santiago", "00:00-02:00", {SUN}, (), "2027-09-03", "2027-09-07",
        [("2027-09-05 04:00", "2027-09-05 05:00")],
        id="santiago-spring-no-midnight",
    ),
    pytest.param(
        "America/Santiago", "22:00-01:30", {SAT}, (), "2027-09-03", "2027-09-07",
        [("2027-09-05 02:00", "2027-09-05 04:30")],
        id="santiago-spring-saturday-night",
    ),
    # St John's springs forward on Sunday 2027-03-14 at 02:00 NST (05:30 UTC).
    pytest.param(
        "America/St_Johns", "01:30-03:30", {SUN}, (), "2027-03-13", "2027-03-16",
        [("2027-03-14 05:00", "2027-03-14 06:00")],
        id="st-johns-spring",
    ),
    # Havana: 01:00 (-04) becomes 00:00 (-05) on Sunday 2027-11-07 (05:00 UTC): the first
    # hour of Sunday happens twice, and both passes belong to Saturday's late window.
    pytest.param(
        "America/Havana", "23:30-00:30", {SAT}, (), "2027-11-05", "2027-11-09",
        [("2027-11-07 03:30", "2027-11-07 04:30"), ("2027-11-07 05:00", "2027-11-07 05:30")],
        id="havana-fall-saturday-window-twice-past-midnight",
    ),
    pytest.param(
        "America/Havana", "23:30-00:30", {SUN}, (), "2027-11-05", "2027-11-09",
        [("2027-11-08 04:30", "2027-11-08 05:30")],
        id="havana-fall-sunday-window-not-its-first-hour",
    ),
    # Windows crossing midnight belong to the day they start on (Berlin in summer, +2).
    pytest.param(
        "Europe/Berlin", "22:00-02:00", {FRI}, (), "2027-06-07", "2027-06-14",
        [("2027-06-11 20:00", "2027-06-12 00:00")],
        id="crossing-friday-night-not-friday-morning",
    ),
    pytest.param(
        "Europe/Berlin", "22:00-02:00", {FRI}, ("2027-06-11",), "2027-06-07", "2027-06-14", [],
        id="crossing-excluded-friday-takes-saturday-morning",
    ),
    pytest.param(
        "Europe/Berlin", "22:00-02:00", {FRI}, ("2027-06-12",), "2027-06-07", "2027-06-14",
        [("2027-06-11 20:00", "2027-06-12 00:00")],
        id="crossing-excluded-saturday-keeps-friday-night",
    ),
    pytest.param(
        "Europe/Berlin", "22:00-02:00", {THU, FRI}, ("2027-06-11",), "2027-06-07", "2027-06-14",
        [("2027-06-10 20:00", "2027-06-11 00:00")],
        id="crossing-thursday-night-runs-into-excluded-friday",
    ),
    # 24:00 ends a window at the next midnight.
    pytest.param(
        "UTC", "18:00-24:00", {MON}, (), "2027-06-06", "2027-06-09",
        [("2027-06-07 18:00", "2027-06-08 00:00")],
        id="ends-at-24",
    ),
    pytest.param(
        "UTC", "22:00-24:00 00:00-02:00", {MON, TUE}, (), "2027-06-06", "2027-06-10",
        [("2027-06-07 00:00", "2027-06-07 02:00"), ("2027-06-07 22:00", "2027-06-08 02:00"),
         ("2027-06-08 22:00", "2027-06-09 00:00")],
        id="ends-at-24-meets-the-next-day",
    ),
    # Overlapping and touching windows make one stretch.
    pytest.param(
        "UTC", "09:00-12:00 11:00-14:00 14:00-15:00", {MON}, (), "2027-06-06", "2027-06-09",
        [("2027-06-07 09:00", "2027-06-07 15:00")],
        id="overlapping-windows-merge",
    ),
    pytest.param(
        "UTC", "22:00-06:00 05:00-08:00", {TUE, WED}, (), "2027-06-06", "2027-06-11",
        [("2027-06-08 05:00", "2027-06-08 08:00"), ("2027-06-08 22:00", "2027-06-09 08:00"),
         ("2027-06-09 22:00", "2027-06-10 06:00")],
        id="overlapping-windows-merge-across-midnight",
    ),
]  # fmt: skip


def _schedule(name: str, spec: str, days: Iterable[int], exclude: Iterable[str]) -> Schedule:
    return Schedule(
        name, windows(spec), frozenset(days), frozenset(date.fromisoformat(d) for d in exclude)
    )


@pytest.mark.parametrize(("name", "spec", "days", "exclude", "start", "end", "expected"), TABLE)
def test_sending_time_in_real_time(
    name: str,
    spec: str,
    days: frozenset[int],
    exclude: tuple[str, ...],
    start: str,
    end: str,
    expected: list[tuple[str, str]],
) -> None:
    cal = Calendar(_schedule(name, spec, days, exclude), name)
    assert stretches(cal, u(start), u(end)) == [(u(a), u(b)) for a, b in expected]


@pytest.mark.parametrize(("name", "spec", "days", "exclude", "start", "end", "expected"), TABLE)
def test_the_table_agrees_with_the_wall_clock(
    name: str,
    spec: str,
    days: frozenset[int],
    exclude: tuple[str, ...],
    start: str,
    end: str,
    expected: list[tuple[str, str]],
) -> None:
    """The hand-worked expectations, checked against zoneinfo: each stretch opens, stays
    open at its last second, and closes (unless the range cuts it)."""
    schedule = _schedule(name, spec, days, exclude)
    for a, b in ((u(a), u(b)) for a, b in expected):
        assert reference_open(schedule, name, a)
        assert reference_open(schedule, name, b - SECOND)
        assert a == u(start) or not reference_open(schedule, name, a - SECOND)
        assert b == u(end) or not reference_open(schedule, name, b)
        assert reference_first(schedule, name, a, False) in (b, None) or b == u(end)


def test_interval_starts_at_t_when_t_is_open() -> None:
    cal = Calendar(Schedule("Europe/Berlin", windows("09:00-17:00")), "Europe/Berlin")
    t = u("2027-06-07 08:00:00.250000")  # 10:00:00.25 in Berlin
    assert cal.is_open(t)
    assert cal.interval(t) == (t, u("2027-06-07 15:00"))
    assert cal.next_open(t) == t
    later = u("2027-06-07 15:00")
    assert not cal.is_open(later)
    assert cal.is_open(later - timedelta(microseconds=1))
    assert cal.interval(later) == (u("2027-06-08 07:00"), u("2027-06-08 15:00"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:00", 0),
        ("00:00:01", 1),
        ("09:00", 9 * 3600),
        ("09:30:15", 9 * 3600 + 30 * 60 + 15),
        ("23:59", 86_340),
        ("23:59:59", 86_399),
        ("24:00", DAY),
        ("24:00:00", DAY),
    ],
)
def test_clock_seconds(text: str, seconds: int) -> None:
    assert clock_seconds(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "24:01",
        "24:00:01",
        "25:00",
        "9:00",
        "09:0",
        "12:60",
        "12:00:60",
        "aa:bb",
        "",
        "12",
        "1200",
        "12:00:00:00",
        " 12:00",
        "12:00 ",
        "+1:00",
        "-1:00",
        "12.00",
        "²3:00",
        "\u0661\u0662:\u0660\u0660",  # Arabic-Indic digits
        "\uff11\uff12:\uff10\uff10",  # full-width digits
    ],
)
def test_clock_seconds_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        clock_seconds(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "00:00"), (1, "00:00:01"), (60, "00:01"), (34_215, "09:30:15"), (DAY, "24:00")],
)
def test_clock_text(seconds: int, text: str) -> None:
    assert clock_text(seconds) == text


def test_clock_text_reads_back_for_every_second() -> None:
    assert all(clock_seconds(clock_text(s)) == s for s in range(DAY + 1))


@pytest.mark.parametrize(
    ("start", "end"), [(0, 0), (3600, 3600), (-1, 3600), (0, DAY + 1), (DAY, 3600), (3600, 0)]
)
def test_window_refuses_nonsense(start: int, end: int) -> None:
    with pytest.raises(ValueError):
        Window(start, end)


@pytest.mark.parametrize(("start", "end"), [(0, DAY), (DAY - 1, 1), (3600, 1), (0, 1)])
def test_window_accepts(start: int, end: int) -> None:
    assert Window(start, end).start == start


def test_schedule_json() -> None:
    schedule = Schedule(
        RECIPIENT,
        (Window(9 * 3600 + 30, 17 * 3600), Window(22 * 3600, 2 * 3600), Window(0, DAY)),
        frozenset({SUN, MON, FRI}),
        frozenset({date(2027, 12, 25), date(2027, 1, 1)}),
        fallback="Europe/Berlin",
        jitter=90,
    )
    text = schedule.to_json()
    assert text == {
        "timezone": "recipient",
        "fallbackTimezone": "Europe/Berlin",
        "days": ["mon", "fri", "sun"],
        "windows": [
            {"start": "09:00:30", "end": "17:00"},
            {"start": "22:00", "end": "02:00"},
            {"start": "00:00", "end": "24:00"},
        ],
        "excludeDates": ["2027-01-01", "2027-12-25"],
        "jitterSeconds": 90,
    }
    assert Schedule.from_json(json.loads(json.dumps(text))) == schedule


@st.composite
def window_strategy(draw: st.DrawFn) -> Window:
    """Windows whose bounds are often round, near midnight or at 24:00."""
    clock = st.one_of(
        st.integers(0, DAY),
        st.builds(lambda h, m: h * 3600 + m * 60, st.integers(0, 23), st.sampled_from([0, 30])),
        st.sampled_from([0, 3600, 7200, 82_800, DAY]),
    )
    start = draw(clock) % DAY
    end = draw(clock) or DAY
    return Window(start, end if end != start else start + 1)


@given(
    name=st.sampled_from(ZONES),
    spans=st.lists(window_strategy(), min_size=1, max_size=3),
    days=st.frozensets(st.integers(0, 6), min_size=1),
    exclude=st.frozensets(st.dates(date(2026, 1, 1), date(2029, 12, 31)), max_size=4),
    jitter=st.integers(0, 3600),
)
def test_schedule_json_round_trip(
    name: str, spans: list[Window], days: frozenset[int], exclude: frozenset[date], jitter: int
) -> None:
    schedule = Schedule(name, tuple(spans), days, exclude, jitter=jitter)
    assert Schedule.from_json(json.loads(json.dumps(schedule.to_json()))) == schedule


@pytest.mark.parametrize(
    "name",
    [
        "Not/AZone",
        "../../etc/passwd",
        "America/../../../etc/passwd",
        "/etc/passwd",
        "",
        "america/new_york",
        "America/New_York/",
        "zones",
        "tzdata.zi",
        "America",
    ],
)
def test_unknown_zones_are_refused(name: str) -> None:
    with pytest.raises(UnknownZone):
        zone(name)
    with pytest.raises(UnknownZone):
        Calendar(Schedule("UTC", windows("09:00-17:00")), name)


@pytest.mark.parametrize("name", [*ZONES, "Etc/UTC", "US/Eastern"])
def test_known_zones_load_from_tzdata(name: str) -> None:
    assert zone(name).key == name
    t = u("2027-07-01 12:00")
    assert t.astimezone(zone(name)).utcoffset() == t.astimezone(tz(name)).utcoffset()


def test_calendars_are_kept() -> None:
    schedule = Schedule("UTC", windows("09:00-17:00"))
    assert calendar(schedule, "Asia/Tokyo") is calendar(schedule, "Asia/Tokyo")
    assert calendar(schedule, "Asia/Tokyo") is not calendar(schedule, "Asia/Seoul")


END = datetime.max.replace(tzinfo=UTC)


def test_no_sending_time_past_year_9999() -> None:
    cal = Calendar(Schedule("UTC", windows("09:00-10:00")), "UTC")
    assert cal.interval(u("9999-12-31 09:30")) == (u("9999-12-31 09:30"), u("9999-12-31 10:00"))
    with pytest.raises(PastCalendar):
        cal.next_open(u("9999-12-31 10:00"))
    assert list(cal.intervals(u("9999-12-31 09:30"), END)) == [
        (u("9999-12-31 09:30"), u("9999-12-31 10:00"))
    ]


def test_no_sending_time_past_year_9999_west_of_utc() -> None:
    cal = Calendar(Schedule("America/New_York", windows("09:00-17:00")), "America/New_York")
    assert cal.next_open(u("9999-12-31 00:00")) == u("9999-12-31 14:00")
    with pytest.raises(PastCalendar):
        cal.next_open(u("9999-12-31 22:00"))


def test_last_opening_east_of_utc() -> None:
    cal = Calendar(Schedule("Asia/Tokyo", windows("09:00-10:00")), "Asia/Tokyo")
    # 09:00 in Tokyo on 9999-12-31 is midnight UTC, which a datetime holds.
    assert cal.next_open(u("9999-12-30 12:00")) == u("9999-12-31 00:00")


def test_past_year_9999_east_of_utc() -> None:
    cal = Calendar(Schedule("Pacific/Kiritimati", windows("09:00-10:00")), "Pacific/Kiritimati")
    # 09:00 on 10000-01-01 in Kiritimati is 19:00 UTC on 9999-12-31: a datetime holds it.
    assert cal.next_open(u("9999-12-31 12:00")) == u("9999-12-31 19:00")
    with pytest.raises(PastCalendar):
        cal.next_open(u("9999-12-31 20:00"))


@st.composite
def instants(draw: st.DrawFn, name: str) -> datetime:
    """Instants in 2026-2029, often within a few days of one of ``name``'s offset changes,
    on whole seconds or not."""
    near = [t for t in transitions(name) if 2026 <= t.year <= 2029]
    close = draw(st.booleans())
    if near and close:
        t = draw(st.sampled_from(near)) + timedelta(seconds=draw(st.integers(-3 * DAY, 3 * DAY)))
    else:
        first, last = u("2026-01-01"), u("2030-01-01")
        t = first + timedelta(seconds=draw(st.integers(0, (last - first) // SECOND - 1)))
    if draw(st.booleans()):
        t += timedelta(microseconds=draw(st.integers(1, 999_999)))
    return t


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(ZONES),
    spans=st.lists(window_strategy(), min_size=1, max_size=3),
    days=st.frozensets(st.integers(0, 6), min_size=1),
    excluded=st.frozensets(st.integers(-3, 12), max_size=4),
    data=st.data(),
)
def test_a_calendar_is_the_wall_clock(
    name: str,
    spans: list[Window],
    days: frozenset[int],
    excluded: frozenset[int],
    data: st.DataObject,
) -> None:
    t = data.draw(instants(name), label="t")
    exclude = frozenset(t.date() + timedelta(days=d) for d in excluded)
    schedule = Schedule(name, tuple(spans), days, exclude)
    cal = Calendar(schedule, name)

    assert cal.is_open(t) == reference_open(schedule, name, t)

    start, end = cal.interval(t)
    assert start == reference_next_open(schedule, name, t)
    assert start >= t
    assert cal.is_open(start)
    if start > t:
        assert start - SECOND < t or not cal.is_open(start - SECOND)
        for _ in range(3):
            probe = data.draw(st.integers(0, (start - t) // timedelta(microseconds=1) - 1))
            assert not reference_open(schedule, name, t + timedelta(microseconds=probe))
    # The stretch runs to the next closing, unless the index cut it (then still open).
    assert end > start
    assert reference_open(schedule, name, end - SECOND)
    assert end == reference_first(schedule, name, start, False) or reference_open(
        schedule, name, end
    )
