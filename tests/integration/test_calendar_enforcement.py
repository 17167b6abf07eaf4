"""Sending calendars enforced where sends start, on each stack.

The worker and the dispatcher run in the test's event loop against a real SMTP
server on loopback, as in ``test_flow.py``, with a clock the test moves forward:
a window that closed while the workers were down, a retry whose back-off ends
after the window closed, a resume and a retry of failed deliveries after the
window closed. The claim itself is also asked directly, on each database, at
instants when a recipient's window is closed.

Windows are in Asia/Kolkata (UTC+05:30 all year, no daylight saving time), so
every expected instant is computed here with a fixed offset, not by
mailsched's calendar.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.bootstrap import Components
from mailsched.config import Settings
from mailsched.consumer.claim import Claim, ClaimRequest, claim
from mailsched.producer.campaigns import Campaigns
from mailsched.producer.schemas import CampaignCreated, CampaignRequest, DeliveryItem
from mailsched.store import dispatch
from mailsched.store.db import Database
from mailsched.store.tables import send_slots
from tests.conftest import Stack
from tests.support.running import completed, create, running, wait_until
from tests.support.smtp_sink import Arrival, SmtpSink

USER = 7
#: The campaigns' "hour", as in test_flow: the hourly limit plays no part here.
RATE_WINDOW = 2.0
ZONE = "Asia/Kolkata"
KOLKATA = timezone(timedelta(hours=5, minutes=30))
DAY = timedelta(days=1)
#: The local time the test windows open at.
OPENS = time(15, 0)
#: How long after a send's start its arrival may be seen (the SMTP transaction).
IN_FLIGHT = timedelta(seconds=2)


# --- a clock the test moves forward ---------------------------------------------------


@dataclass
class Clock:
    """The real clock, moved forward by :meth:`jump`.

    Only forward: a letter's deadline is checked against the wall clock, so the
    components' "now" must never be behind it. Jump only while nothing is
    QUEUED or SENDING, or the reaper would take those back.
    """

    shift: timedelta = timedelta(0)
    #: ``(real POSIX time of a jump, the shift from then on)``, in order.
    jumps: list[tuple[float, timedelta]] = field(default_factory=list)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift

    def jump(self, to: datetime) -> None:
        """Make "now" ``to`` (it must not be behind the real time, nor behind now)."""
        real = datetime.now(UTC)
        shift = to - real
        assert shift >= self.shift, f"the clock only moves forward ({to} is behind now)"
        self.shift = shift
        self.jumps.append((real.timestamp(), shift))

    def at(self, real: float) -> datetime:
        """What this clock said at the real POSIX time ``real``."""
        i = bisect.bisect_right([t for t, _ in self.jumps], real)
        shift = self.jumps[i - 1][1] if i else timedelta(0)
        return datetime.fromtimestamp(real, UTC) + shift


def opening(days_ahead: int = 2) -> datetime:
    """The instant a test window opens: :data:`OPENS` in Kolkata, some days from now
    (ahead of the real clock, which the test clock may only run ahead of)."""
    day = datetime.now(UTC).date() + timedelta(days=days_ahead)
    return datetime.combine(day, OPENS, KOLKATA).astimezone(UTC)


def inside(t: datetime, opens: datetime, length: timedelta) -> bool:
    """Whether ``t`` is in the window ``[opens, opens + length)`` of some day from
    ``opens``'s on."""
    return t >= opens and (t - opens) % DAY < length


# --- the components, on a stack, with the test's clock --------------------------------


@pytest.fixture
def settings(stack: Stack, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> Settings:
    env = stack.env() | {
        "MAILSCHED_SMTP_URL": smtp_sink.url,
        "MAILSCHED_FROM": "campaigns@example.com",
        "MAILSCHED_RATE_WINDOW_SECONDS": str(RATE_WINDOW),
        "MAILSCHED_DISPATCH_INTERVAL_SECONDS": "0.05",
        "MAILSCHED_DISPATCH_LOOKAHEAD_SECONDS": "0.3",
        "MAILSCHED_HOLD_SECONDS": "1.0",
        "MAILSCHED_RETRY_BASE_SECONDS": "0.2",
        "MAILSCHED_RETRY_CAP_SECONDS": "0.5",
        "MAILSCHED_MAX_ATTEMPTS": "3",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.load()


async def warmed_up(app: Components) -> None:
    """Send a campaign without a calendar and wait for it: the worker then owns its
    partitions (on Kafka), so what follows is claimed on time."""
    request = CampaignRequest.model_validate(
        {
            "userId": USER + 1,
            "subject": "warm-up",
            "body": "warm-up",
            "startTime": app.clock().isoformat(),
            "delaySeconds": 0,
            "hourlyLimit": 10,
            "recipients": ["warm-up@example.com"],
        }
    )
    created = await create(app, request)
    await wait_until(lambda: completed(app, created.campaign_id), within=60)


def request(
    recipients: Sequence[str],
    start: datetime,
    *,
    delay: int,
    windows: Sequence[tuple[datetime, timedelta]],
) -> CampaignRequest:
    """A campaign under a Kolkata calendar whose windows open at ``windows``' local
    times and last as long as they say."""

    def local(t: datetime) -> str:
        return t.astimezone(KOLKATA).strftime("%H:%M:%S")

    return CampaignRequest.model_validate(
        {
            "userId": USER,
            "subject": "In your window",
            "body": "Hello,\nthis arrives in your window.\n",
            "startTime": start.isoformat(),
            "delaySeconds": delay,
            "hourlyLimit": 1000,
            "recipients": list(recipients),
            "schedule": {
                "timezone": ZONE,
                "windows": [{"start": local(a), "end": local(a + n)} for a, n in windows],
            },
        }
    )


async def deliveries(app: Components, campaign_id: int) -> list[DeliveryItem]:
    page = await app.campaigns().deliveries(USER, campaign_id, None, 0, 100)
    return page.items


def by_recipient(items: Sequence[DeliveryItem]) -> dict[str, DeliveryItem]:
    return {item.recipient: item for item in items}


def arrivals(sink: SmtpSink, campaign_id: int) -> list[Arrival]:
    return [a for a in sink.arrivals if a.campaign_id == campaign_id]


async def quiet(seconds: float = 1.5) -> None:
    """Give a wrongly admitted send the time to reach the sink."""
    await asyncio.sleep(seconds)


# --- a) the workers were down while the window was open -------------------------------


async def test_deliveries_that_come_due_after_their_window_closed_wait_for_the_next(
    settings: Settings, smtp_sink: SmtpSink
) -> None:
    # Fails if a worker sent a delivery whose window had closed (the claim took the
    # planned time, not the next opening), or planned the rest outside a window.
    opens, length = opening(), timedelta(seconds=60)
    recipients = [f"user{i}@example.com" for i in range(4)]
    clock = Clock()
    clock.jump(opens - timedelta(seconds=5))
    async with running(settings, clock=clock, dispatcher=False, worker=False) as app:
        created = await create(
            app, request(recipients, clock(), delay=2, windows=[(opens, length)])
        )
    assert created.first_send_at == opens  # planned at the opening
    # No dispatcher, no worker while the window was open: every send is now overdue.
    clock.jump(opens + length + timedelta(seconds=30))
    tomorrow = opens + DAY
    async with running(settings, clock=clock) as app:

        async def handled() -> bool:
            items = await deliveries(app, created.campaign_id)
            return all(i.status != "SCHEDULED" or i.scheduled_at >= tomorrow for i in items)

        await wait_until(handled, within=60)
        await quiet()
        items = await deliveries(app, created.campaign_id)
        assert arrivals(smtp_sink, created.campaign_id) == [], "sent while the window was shut"
        assert [i.status for i in items] == ["SCHEDULED"] * len(recipients)
        # Planned again, from the next opening, still a delay (and the plan's margin
        # for each answer) apart.
        gap = timedelta(seconds=2) + settings.plan_margin
        assert sorted(i.scheduled_at for i in items) == [
            tomorrow + gap * k for k in range(len(recipients))
        ]
        assert all(i.attempts == 0 for i in items)
        view = await app.campaigns().get(USER, created.campaign_id)
        assert view.estimated_completion_at == tomorrow + gap * 3

        clock.jump(tomorrow - timedelta(seconds=1))
        await wait_until(lambda: completed(app, created.campaign_id), within=60)
        items = await deliveries(app, created.campaign_id)

    got = arrivals(smtp_sink, created.campaign_id)
    assert sorted(a.rcpt for a in got) == sorted(recipients)
    for a in got:
        assert tomorrow <= clock.at(a.at) < tomorrow + length + IN_FLIGHT
    for item in items:
        assert item.status == "SENT" and item.sent_at is not None
        assert tomorrow <= item.sent_at < tomorrow + length + IN_FLIGHT


# --- b) a retry whose back-off ends after the window closed ----------------------------


async def test_a_retry_due_after_the_window_closed_waits_for_the_next_opening(
    settings: Settings, smtp_sink: SmtpSink
) -> None:
    # Fails if a retry kept its back-off time outside the window (Retry.at not moved
    # to the next opening), or if it went out before that opening.
    refused: list[str] = []

    def policy(address: str) -> str | None:
        if address.startswith("flaky") and not refused:
            refused.append(address)
            return "441 4.4.1 no answer from host"
        return None

    smtp_sink.rcpt_policy = policy
    # A back-off of 100 to 200 s: past the end of a 60 s window, whenever in it the
    # first attempt was made.
    settings = settings.model_copy(update={"retry_base_seconds": 200.0, "retry_cap_seconds": 200.0})
    opens, length = opening(), timedelta(seconds=60)
    tomorrow = opens + DAY
    clock = Clock()
    clock.jump(opens - timedelta(minutes=10))
    async with running(settings, clock=clock) as app:
        await warmed_up(app)
        clock.jump(opens - timedelta(seconds=2))
        created = await create(
            app,
            request(
                ["flaky@example.com", "ok@example.com"],
                clock(),
                delay=1,
                windows=[(opens, length)],
            ),
        )

        async def retried() -> bool:
            items = by_recipient(await deliveries(app, created.campaign_id))
            flaky, ok = items["flaky@example.com"], items["ok@example.com"]
            return flaky.attempts == 1 and flaky.status == "SCHEDULED" and ok.status == "SENT"

        await wait_until(retried, within=60)
        await quiet()
        flaky = by_recipient(await deliveries(app, created.campaign_id))["flaky@example.com"]
        assert flaky.last_error is not None and "441" in flaky.last_error
        assert flaky.scheduled_at == tomorrow  # the back-off ended in the closed time
        assert [a.rcpt for a in arrivals(smtp_sink, created.campaign_id)] == ["ok@example.com"]
        view = await app.campaigns().get(USER, created.campaign_id)
        assert view.estimated_completion_at == tomorrow

        clock.jump(tomorrow - timedelta(seconds=1))
        await wait_until(lambda: completed(app, created.campaign_id), within=60)
        items = by_recipient(await deliveries(app, created.campaign_id))

    got = arrivals(smtp_sink, created.campaign_id)
    assert sorted(a.rcpt for a in got) == ["flaky@example.com", "ok@example.com"]
    for a in got:
        assert inside(clock.at(a.at), opens, length + IN_FLIGHT), a
    flaky = items["flaky@example.com"]
    assert (flaky.status, flaky.attempts) == ("SENT", 2)
    assert flaky.sent_at is not None and tomorrow <= flaky.sent_at < tomorrow + length


# --- c) resume, and retry-failed, after the window closed -----------------------------


async def test_a_resumed_campaign_is_planned_into_the_windows(
    settings: Settings, smtp_sink: SmtpSink
) -> None:
    # Fails if resume planned the rest from now under the rules alone (the fourth
    # send 9 s after resuming, past the window's end), or if a worker sent it there.
    opens, length = opening(), timedelta(seconds=60)
    tomorrow = opens + DAY
    recipients = [f"user{i}@example.com" for i in range(4)]
    clock = Clock()
    clock.jump(opens - timedelta(minutes=10))
    async with running(settings, clock=clock) as app:
        await warmed_up(app)
        clock.jump(opens - timedelta(seconds=30))
        created = await create(
            app, request(recipients, clock(), delay=3, windows=[(opens, length)])
        )
        await app.campaigns().pause(USER, created.campaign_id)
        assert {i.status for i in await deliveries(app, created.campaign_id)} == {"PAUSED"}

        # Resumed 8 s before the window closes: room for three sends 3 s apart.
        resumed_at = opens + length - timedelta(seconds=8)
        clock.jump(resumed_at)
        control = await app.campaigns().resume(USER, created.campaign_id)
        assert control.status == "SCHEDULED"
        planned = sorted(i.scheduled_at for i in await deliveries(app, created.campaign_id))
        assert planned[3] == tomorrow, planned
        for k, at in enumerate(planned[:3]):
            assert resumed_at + timedelta(seconds=3 * k) <= at < opens + length, planned
        assert all(inside(at, opens, length) for at in planned)

        await wait_until(lambda: len(arrivals(smtp_sink, created.campaign_id)) >= 3, within=30)
        await quiet()
        assert len(arrivals(smtp_sink, created.campaign_id)) == 3
        waiting = [i for i in await deliveries(app, created.campaign_id) if i.status != "SENT"]
        assert [(i.status, i.scheduled_at) for i in waiting] == [("SCHEDULED", tomorrow)]

        clock.jump(tomorrow - timedelta(seconds=1))
        await wait_until(lambda: completed(app, created.campaign_id), within=60)

    got = arrivals(smtp_sink, created.campaign_id)
    assert sorted(a.rcpt for a in got) == sorted(recipients)
    times = sorted(clock.at(a.at) for a in got)
    assert all(resumed_at <= t < opens + length + IN_FLIGHT for t in times[:3]), times
    assert tomorrow <= times[3] < tomorrow + length, times


async def test_retried_failures_are_planned_into_the_next_window(
    settings: Settings, smtp_sink: SmtpSink
) -> None:
    # Fails if retry-failed planned the failed delivery from now under the rules alone
    # (now is after the window closed), or if it went out before the next opening.
    smtp_sink.rcpt_policy = lambda a: "550 5.1.1 no such user" if a.startswith("gone") else None
    opens, length = opening(), timedelta(seconds=60)
    tomorrow = opens + DAY
    clock = Clock()
    clock.jump(opens - timedelta(minutes=10))
    async with running(settings, clock=clock) as app:
        await warmed_up(app)
        clock.jump(opens - timedelta(seconds=2))
        created = await create(
            app,
            request(
                ["gone@example.com", "ok@example.com"], clock(), delay=1, windows=[(opens, length)]
            ),
        )
        await wait_until(lambda: completed(app, created.campaign_id), within=60)
        assert (
            by_recipient(await deliveries(app, created.campaign_id))["gone@example.com"].status
            == "FAILED"
        )

        smtp_sink.rcpt_policy = lambda _a: None  # the mailbox exists now
        clock.jump(opens + length + timedelta(minutes=5))
        started = await app.campaigns().retry_failed(USER, created.campaign_id)
        assert started.retried == 1
        gone = by_recipient(await deliveries(app, created.campaign_id))["gone@example.com"]
        assert (gone.status, gone.attempts, gone.scheduled_at) == ("SCHEDULED", 0, tomorrow)
        view = await app.campaigns().get(USER, created.campaign_id)
        assert (view.status, view.estimated_completion_at) == ("RUNNING", tomorrow)
        await quiet()
        assert [a.rcpt for a in arrivals(smtp_sink, created.campaign_id)] == ["ok@example.com"]

        clock.jump(tomorrow - timedelta(seconds=1))
        await wait_until(lambda: completed(app, created.campaign_id), within=60)
        gone = by_recipient(await deliveries(app, created.campaign_id))["gone@example.com"]

    got = {a.rcpt: clock.at(a.at) for a in arrivals(smtp_sink, created.campaign_id)}
    assert set(got) == {"gone@example.com", "ok@example.com"}
    assert opens <= got["ok@example.com"] < opens + length + IN_FLIGHT
    assert tomorrow <= got["gone@example.com"] < tomorrow + length + IN_FLIGHT
    assert (gone.status, gone.attempts) == ("SENT", 1)


# --- d) the claim, asked at instants when a window is closed --------------------------

#: A Monday; Kolkata's 15:00 is 09:30 UTC, Tokyo's 06:00 UTC (neither has summer time).
DAY_ONE = date(2026, 3, 2)
TOKYO = timezone(timedelta(hours=9))


def kolkata(clock_time: str, day: date = DAY_ONE) -> datetime:
    return datetime.combine(day, time.fromisoformat(clock_time), KOLKATA).astimezone(UTC)


async def created_and_queued(db: Database, now: datetime, body: dict[str, Any]) -> CampaignCreated:
    """The campaign ``body`` created at ``now``, its deliveries QUEUED by the dispatcher."""
    service = Campaigns(db, timedelta(hours=1), lambda: now)
    created = CampaignCreated.model_validate_json(
        (await service.create(CampaignRequest.model_validate(body))).body
    )
    horizon = now + timedelta(days=2)
    queued = await db.run(lambda conn: dispatch.claim_due(conn, horizon, 100, now))
    assert len(queued) == created.recipient_count
    return created


async def claimed(db: Database, campaign_id: int, now: datetime) -> Claim:
    """The worker's claim of every delivery of the campaign, at ``now``."""
    service = Campaigns(db, timedelta(hours=1), lambda: now)
    ids = [i.delivery_id for i in (await service.deliveries(USER, campaign_id, None, 0, 100)).items]
    ask = ClaimRequest(
        deliveries={campaign_id: ids},
        now=now,
        owner="worker-1",
        lease=timedelta(minutes=2),
        hold=timedelta(seconds=1),
        window=timedelta(hours=1),
    )
    return (await db.run(lambda conn: claim(conn, ask)))[campaign_id]


async def listed(db: Database, campaign_id: int) -> list[DeliveryItem]:
    service = Campaigns(db, timedelta(hours=1), lambda: datetime.now(UTC))
    return (await service.deliveries(USER, campaign_id, None, 0, 100)).items


async def slots(db: Database) -> int:
    async def work(conn: AsyncConnection) -> int:
        return int((await conn.execute(select(func.count()).select_from(send_slots))).scalar_one())

    return await db.run(work)


#: Two windows a day, [15:00:00, 15:00:10) and [15:00:20, 15:00:30) in Kolkata; four
#: recipients 2 s apart, planned at 15:00:00, :02, :04 and :06.
TWO_WINDOWS = {
    "userId": USER,
    "subject": "s",
    "body": "b",
    "startTime": kolkata("14:59:00").isoformat(),
    "delaySeconds": 2,
    "hourlyLimit": 1000,
    "recipients": [f"user{i}@example.com" for i in range(4)],
    "schedule": {
        "timezone": ZONE,
        "windows": [
            {"start": "15:00:00", "end": "15:00:10"},
            {"start": "15:00:20", "end": "15:00:30"},
        ],
    },
}
NEXT_DAY = DAY_ONE + timedelta(days=1)


@pytest.mark.parametrize(
    ("now", "planned"),
    [
        pytest.param(
            kolkata("15:00:12"),
            [kolkata(t) for t in ("15:00:20", "15:00:22", "15:00:24", "15:00:26")],
            id="between the day's windows: the second one",
        ),
        pytest.param(
            kolkata("15:00:31"),
            [kolkata(t, NEXT_DAY) for t in ("15:00:00", "15:00:02", "15:00:04", "15:00:06")],
            id="after the day's last window: the next day's first",
        ),
        pytest.param(
            kolkata("15:00:30"),
            [kolkata(t, NEXT_DAY) for t in ("15:00:00", "15:00:02", "15:00:04", "15:00:06")],
            id="at the end of the last window (half-open): the next day's first",
        ),
        pytest.param(
            kolkata("14:59:58"),
            [kolkata(t) for t in ("15:00:00", "15:00:02", "15:00:04", "15:00:06")],
            id="before the window opens: kept as planned",
        ),
    ],
)
async def test_a_claim_while_the_window_is_closed_admits_nothing(
    db: Database, now: datetime, planned: list[datetime]
) -> None:
    # Fails if the claim admitted an overdue delivery while its window was closed, or
    # planned what it held back outside the windows.
    created = await created_and_queued(db, kolkata("14:59:00"), TWO_WINDOWS)

    result = await claimed(db, created.campaign_id, now)

    assert result.admitted == []
    assert (result.waiting, result.wait_until) == ([], None)
    assert await slots(db) == 0
    items = await listed(db, created.campaign_id)
    assert [i.status for i in items] == ["SCHEDULED"] * 4
    assert sorted(i.scheduled_at for i in items) == planned


async def test_a_claim_inside_the_window_admits_and_plans_the_rest_into_the_windows(
    db: Database,
) -> None:
    # The control for the table above: the same deliveries, overdue, claimed while the
    # first window is open. One goes (the delay holds the rest), and the rest is
    # planned again inside the windows, 2 s apart.
    created = await created_and_queued(db, kolkata("14:59:00"), TWO_WINDOWS)
    now = kolkata("15:00:07.500000")

    result = await claimed(db, created.campaign_id, now)

    assert len(result.admitted) == 1
    items = await listed(db, created.campaign_id)
    rest = sorted(i.scheduled_at for i in items if i.status == "SCHEDULED")
    assert len(rest) == 3
    assert rest[0] >= now + timedelta(seconds=2)
    assert all(b - a >= timedelta(seconds=2) for a, b in itertools.pairwise(rest))
    for at in rest:
        local = at.astimezone(KOLKATA).time()
        assert time(15, 0) <= local < time(15, 0, 10) or time(15, 0, 20) <= local < time(15, 0, 30)


async def test_a_claim_admits_only_the_recipients_whose_window_is_open(db: Database) -> None:
    # Each recipient in their own zone: at 09:30:05 UTC Kolkata's 15:00 window is
    # open, Tokyo's (06:00 UTC) closed hours ago. Both deliveries are overdue. Fails
    # if the Tokyo recipient got a send outside their window (it was planned first).
    body = {
        "userId": USER,
        "subject": "s",
        "body": "b",
        "startTime": datetime.combine(DAY_ONE, time(5, 0), UTC).isoformat(),
        "delaySeconds": 0,
        "hourlyLimit": 1000,
        "recipients": [
            {"email": "tokyo@example.com", "timezone": "Asia/Tokyo"},
            {"email": "kolkata@example.com", "timezone": ZONE},
        ],
        "schedule": {
            "timezone": "recipient",
            "fallbackTimezone": "UTC",
            "windows": [{"start": "15:00", "end": "15:10"}],
        },
    }
    created = await created_and_queued(db, datetime.combine(DAY_ONE, time(5, 0), UTC), body)
    tokyo_opens = datetime.combine(DAY_ONE, time(15, 0), TOKYO).astimezone(UTC)
    items = by_recipient(await listed(db, created.campaign_id))
    assert items["tokyo@example.com"].scheduled_at == tokyo_opens
    assert items["kolkata@example.com"].scheduled_at == kolkata("15:00:00")

    result = await claimed(db, created.campaign_id, kolkata("15:00:05"))

    assert [r.recipient for r in result.admitted] == ["kolkata@example.com"]
    items = by_recipient(await listed(db, created.campaign_id))
    assert items["kolkata@example.com"].status == "SENDING"
    tokyo = items["tokyo@example.com"]
    assert (tokyo.status, tokyo.scheduled_at) == ("SCHEDULED", tokyo_opens + DAY)
