"""Planning sends inside recipients' windows: tables, and properties over random calendars
checked against the rules and against a plain greedy reading of the planner's contract."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsched.domain.calendar import ALWAYS, RECIPIENT, Calendar, Schedule, Window, calendar
from mailsched.domain.plan import PastCalendar, Rules, plan, plan_in_windows
from tests.unit.test_calendar import ZONES, instants, reference_open, tz, u, window_strategy

HOUR = 3600
US = timedelta(microseconds=1)
LAST = datetime.max.replace(tzinfo=UTC)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def clock(hours: int, minutes: int = 0, seconds: int = 0) -> int:
    return hours * HOUR + minutes * 60 + seconds


def draws(values: Sequence[float]) -> Callable[[], float]:
    """A ``draw`` that returns ``values`` in turn, over and over."""
    it = itertools.cycle(values)
    return lambda: next(it)


def reference_plan(
    openings: Sequence[Calendar],
    not_before: datetime,
    rules: Rules,
    history: Sequence[datetime] = (),
    jitter: timedelta = timedelta(0),
    draw: Callable[[], float] = lambda: 0.0,
) -> list[datetime]:
    """The planner's contract, step by step: send ``j`` may start at ``earliest_j``; it goes
    to the unplanned recipient whose calendar opens first from there (ties: the lowest
    index), at that opening, plus ``jitter * draw()``, the jitter cut to what is left of
    the recipient's window."""
    sent = list(history)
    times: dict[int, datetime] = {}
    for _ in openings:
        earliest = not_before
        if sent:
            earliest = max(earliest, sent[-1] + rules.delay)
        if len(sent) >= rules.limit:
            earliest = max(earliest, sent[-rules.limit] + rules.window)
        opens = {id(cal): cal.next_open(earliest) for cal in openings}
        at, index = min((opens[id(cal)], i) for i, cal in enumerate(openings) if i not in times)
        if jitter:
            cal = openings[index]
            close = cal.interval(at)[1]
            while close <= at + jitter and cal.is_open(close):
                close = cal.interval(close)[1]
            cap = min(jitter // US, (close - at) // US - 1)
            at += timedelta(microseconds=int(cap * draw()))
        times[index] = at
        sent.append(at)
    return [times[i] for i in range(len(openings))]


@dataclass(frozen=True)
class Campaign:
    """A random campaign: recipient ``i`` follows ``schedule`` in ``zones[i]``."""

    schedule: Schedule
    zones: tuple[str, ...]
    openings: tuple[Calendar, ...]
    not_before: datetime
    rules: Rules
    history: tuple[datetime, ...]


rules_strategy = st.builds(
    Rules,
    delay=st.one_of(st.integers(0, 600).map(s), st.integers(0, 600_000_000).map(lambda n: n * US)),
    limit=st.integers(1, 20),
    window=st.one_of(st.just(s(HOUR)), st.integers(60, 600).map(s)),
)


@st.composite
def campaigns(draw: st.DrawFn) -> Campaign:
    names = draw(st.lists(st.sampled_from(ZONES), min_size=1, max_size=4, unique=True))
    # Often near one of the zones' offset changes.
    not_before = draw(instants(draw(st.sampled_from(names))), label="not_before")
    near = st.integers(-3, 12).map(lambda d: not_before.date() + timedelta(days=d))
    schedule = Schedule(
        RECIPIENT,
        tuple(draw(st.lists(window_strategy(), min_size=1, max_size=3))),
        draw(st.frozensets(st.integers(0, 6), min_size=1)),
        draw(st.frozensets(near, max_size=4)),
        fallback="UTC",
    )
    count = draw(st.integers(1, 60))
    zones = tuple(draw(st.lists(st.sampled_from(names), min_size=count, max_size=count)))
    rules = draw(rules_strategy)
    # Real history, kept to the rules as the worker sends it, up to a little after not_before.
    history: list[datetime] = []
    start = not_before - s(draw(st.integers(0, 4 * HOUR)))
    for gap in draw(st.lists(st.integers(0, 900), max_size=25)):
        floor = (history[-1] if history else start) + s(gap)
        history.extend(plan(1, floor, rules, history))
    return Campaign(
        schedule,
        zones,
        tuple(calendar(schedule, name) for name in zones),
        not_before,
        rules,
        tuple(history),
    )


def assert_rules_hold(campaign: Campaign, times: list[datetime]) -> None:
    """(a) every send in its recipient's window, (b) gaps, (c) rolling windows."""
    for name, t in zip(campaign.zones, times, strict=True):
        assert reference_open(campaign.schedule, name, t), (name, t)
    assert all(t >= campaign.not_before for t in times)
    rules, history = campaign.rules, list(campaign.history)
    sends = [*history, *sorted(times)]
    for a, b in itertools.pairwise(sends[max(len(history) - 1, 0) :]):
        assert b - a >= rules.delay
    for k in range(max(len(history), rules.limit), len(sends)):
        # Any window [t, t + window) holds at most `limit` sends, history included.
        assert sends[k] - sends[k - rules.limit] >= rules.window


def assert_not_early(campaign: Campaign, times: list[datetime]) -> None:
    """In send order, no send before the earliest moment the rules allow."""
    rules, sends = campaign.rules, list(campaign.history)
    for t in sorted(times):
        bounds = [campaign.not_before]
        if sends:
            bounds.append(sends[-1] + rules.delay)
        if len(sends) >= rules.limit:
            bounds.append(sends[-rules.limit] + rules.window)
        assert t >= max(bounds)
        sends.append(t)


@settings(max_examples=150, deadline=None)
@given(campaign=campaigns())
def test_sends_keep_windows_and_rules_and_are_earliest(campaign: Campaign) -> None:
    times = plan_in_windows(
        campaign.openings, campaign.not_before, campaign.rules, campaign.history
    )
    assert_rules_hold(campaign, times)
    assert_not_early(campaign, times)
    assert times == reference_plan(
        campaign.openings, campaign.not_before, campaign.rules, campaign.history
    )


@settings(max_examples=150, deadline=None)
@given(
    campaign=campaigns(),
    jitter=st.one_of(st.integers(1, 2 * HOUR).map(s), st.integers(1, 10**9).map(lambda n: n * US)),
    values=st.lists(st.floats(0, 1), min_size=1, max_size=8),
)
def test_jitter_delays_sends_but_keeps_windows_and_rules(
    campaign: Campaign, jitter: timedelta, values: list[float]
) -> None:
    times = plan_in_windows(
        campaign.openings,
        campaign.not_before,
        campaign.rules,
        campaign.history,
        jitter=jitter,
        draw=draws(values),
    )
    assert_rules_hold(campaign, times)
    assert_not_early(campaign, times)
    assert times == reference_plan(
        campaign.openings,
        campaign.not_before,
        campaign.rules,
        campaign.history,
        jitter=jitter,
        draw=draws(values),
    )


@given(
    count=st.integers(0, 80),
    not_before=st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
    rules=rules_strategy,
    gaps=st.lists(st.integers(0, 900), max_size=25),
)
def test_always_open_plans_as_plan_does(
    count: int, not_before: datetime, rules: Rules, gaps: list[int]
) -> None:
    history: list[datetime] = []
    for gap in gaps:
        floor = (history[-1] if history else not_before - s(HOUR)) + s(gap)
        history.extend(plan(1, floor, rules, history))
    always = calendar(ALWAYS, "UTC")
    assert plan_in_windows([always] * count, not_before, rules, history) == plan(
        count, not_before, rules, history
    )


def berlin(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz("Europe/Berlin"))


def test_office_hours_carry_over_the_weekend() -> None:
    # Friday 2027-03-26, 16:59:58 in Berlin (CET); Monday 2027-03-29 is already CEST.
    office = Schedule("Europe/Berlin", (Window(clock(9), clock(17)),), frozenset(range(5)))
    cal = calendar(office, "Europe/Berlin")
    times = plan_in_windows([cal] * 5, berlin("2027-03-26 16:59:58"), Rules(s(1), 1000, s(HOUR)))
    assert times == [
        berlin("2027-03-26 16:59:58"),
        berlin("2027-03-26 16:59:59"),
        berlin("2027-03-29 09:00:00"),
        berlin("2027-03-29 09:00:01"),
        berlin("2027-03-29 09:00:02"),
    ]
    assert times[2] == u("2027-03-29 07:00")


MORNING = Schedule(RECIPIENT, (Window(clock(9), clock(10)),), fallback="UTC")


@pytest.mark.parametrize(
    ("zones", "rules", "expected"),
    [
        # Tokyo's 09:00 (00:00 UTC) comes before New York's (13:00 UTC).
        (
            ["America/New_York", "Asia/Tokyo", "America/New_York", "Asia/Tokyo", "Asia/Tokyo"],
            Rules(s(10), 100, s(HOUR)),
            ["06-01 13:00:00", "06-01 00:00:00", "06-01 13:00:10", "06-01 00:00:10",
             "06-01 00:00:20"],
        ),
        # Seoul and Tokyo open together: input order decides, across zones too.
        (
            ["Asia/Seoul", "Asia/Tokyo", "Asia/Seoul", "Asia/Tokyo"],
            Rules(s(10), 100, s(HOUR)),
            ["06-01 00:00:00", "06-01 00:00:10", "06-01 00:00:20", "06-01 00:00:30"],
        ),
        # Two an hour: the third waits for the next morning.
        (
            ["Asia/Seoul", "Asia/Tokyo", "Asia/Seoul", "Asia/Tokyo"],
            Rules(s(10), 2, s(HOUR)),
            ["06-01 00:00:00", "06-01 00:00:10", "06-02 00:00:00", "06-02 00:00:10"],
        ),
        # One every 13 hours: New York is still open 13 hours after Tokyo's first, and
        # Tokyo's second waits two days.
        (
            ["Asia/Tokyo", "America/New_York", "Asia/Tokyo"],
            Rules(s(0), 1, s(13 * HOUR + 1)),
            ["06-01 00:00:00", "06-01 13:00:01", "06-03 00:00:00"],
        ),
    ],
)  # fmt: skip
def test_whose_window_opens_first_goes_first(
    zones: list[str], rules: Rules, expected: list[str]
) -> None:
    openings = [calendar(MORNING, name) for name in zones]
    # Monday 2027-05-31 20:00 UTC: past both mornings of that day.
    times = plan_in_windows(openings, u("2027-05-31 20:00"), rules)
    assert times == [u(f"2027-{text}") for text in expected]


def test_a_window_opening_in_a_few_seconds() -> None:
    noon = Schedule("UTC", (Window(clock(12, 0, 5), clock(13)),))
    cal = calendar(noon, "UTC")
    times = plan_in_windows([cal] * 4, u("2027-06-07 12:00"), Rules(s(0), 3, s(60)))
    assert times == [u("2027-06-07 12:00:05")] * 3 + [u("2027-06-07 12:01:05")]


def test_jitter_never_leaves_the_window() -> None:
    ten_minutes = Schedule("UTC", (Window(clock(12), clock(12, 10)),))
    cal = calendar(ten_minutes, "UTC")
    times = plan_in_windows(
        [cal] * 3,
        u("2027-06-07 12:00"),
        Rules(s(0), 100, s(HOUR)),
        jitter=s(600),
        draw=draws([0.5, 0.5, 1.0]),
    )
    # The jitter is cut to what is left of the window, less a microsecond (the end is not
    # in it): 12:00 + half of 10 min; + half of the 5 min left; then to the window's last
    # microsecond.
    assert times == [
        u("2027-06-07 12:04:59.999999"),
        u("2027-06-07 12:07:29.999999"),
        u("2027-06-07 12:09:59.999999"),
    ]


def test_jitter_at_a_window_end_keeps_other_zones_going() -> None:
    """A Tokyo send jittered near its window's close stays that day, so Kolkata, whose
    window is open, is not held back behind a Tokyo send the next morning."""
    office = Schedule(RECIPIENT, (Window(clock(9), clock(17)),), fallback="UTC")
    tokyo, kolkata = calendar(office, "Asia/Tokyo"), calendar(office, "Asia/Kolkata")
    times = plan_in_windows(
        [tokyo, kolkata],
        u("2027-01-04 07:59:30"),
        Rules(s(60), 100, s(HOUR)),
        jitter=s(120),
        draw=draws([1.0, 1.0]),
    )
    assert times[0] < u("2027-01-04 08:00")  # Tokyo: 16:59:30 local, plus at most 30 s
    assert times[1] < u("2027-01-04 08:05")  # Kolkata: 13:30 local, the same hour


def test_recipients_after_history() -> None:
    cal = calendar(Schedule("UTC", (Window(clock(9), clock(17)),)), "UTC")
    history = [u("2027-06-07 16:58:00"), u("2027-06-07 16:59:00")]
    times = plan_in_windows([cal] * 2, u("2027-06-07 12:00"), Rules(s(30), 2, s(120)), history)
    # The delay allows 16:59:30, but that would be the third send in two minutes; the
    # limit allows 17:00:00, when the window has closed: so the next morning.
    assert times == [u("2027-06-08 09:00:00"), u("2027-06-08 09:00:30")]


NINE = Schedule("UTC", (Window(clock(9), clock(10)),))


def test_the_last_opening_before_year_9999() -> None:
    cal = calendar(NINE, "UTC")
    assert plan_in_windows([cal], u("9999-12-31 09:59:59"), Rules(s(1), 10, s(HOUR))) == [
        u("9999-12-31 09:59:59")
    ]


@pytest.mark.parametrize(
    ("count", "not_before", "rules"),
    [
        (2, "9999-12-31 09:59:59", Rules(s(1), 10, s(HOUR))),
        (1, "9999-12-31 10:00:00", Rules(s(1), 10, s(HOUR))),
        (2, "9999-12-30 09:00:00", Rules(s(0), 1, s(2 * 86_400))),
    ],
)
def test_no_opening_past_year_9999(count: int, not_before: str, rules: Rules) -> None:
    cal = calendar(NINE, "UTC")
    with pytest.raises(PastCalendar):
        plan_in_windows([cal] * count, u(not_before), rules)


def test_no_opening_past_year_9999_east_of_utc() -> None:
    cal = calendar(NINE, "Pacific/Kiritimati")
    rules = Rules(s(0), 1, s(86_400))
    # 09:00 local on 12-30, 12-31 and "10000-01-01" are 19:00 UTC the day before; then none.
    assert plan_in_windows([cal] * 3, u("9999-12-29"), rules)[-1] == u("9999-12-31 19:00")
    with pytest.raises(PastCalendar):
        plan_in_windows([cal] * 4, u("9999-12-29"), rules)


@pytest.mark.xfail(
    strict=True,
    raises=PastCalendar,
    reason="the calendar index ends at 9999-12-31 23:59:59 (whole seconds), so the last "
    "second of year 9999 is never sending time, while plan() may use it",
)
def test_always_open_plans_as_plan_does_up_to_the_last_moment() -> None:
    always = calendar(ALWAYS, "UTC")
    start = LAST - US
    assert plan_in_windows([always], start, Rules(s(0), 1, s(1))) == [start]
