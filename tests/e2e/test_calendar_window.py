"""A sending window on the real clock, through real processes, on both stacks.

Embedded: one ``mailsched run``. Real: ``mailsched api`` (with the dispatcher),
``mailsched worker`` and ``mailsched webhooks`` on MariaDB + Kafka. A campaign
whose window (in Asia/Kolkata, UTC+05:30) opens a few seconds after it is
created and stays open for six: the SMTP sink on loopback records when each
message arrives, and the API says what became of the rest.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack
from tests.support.deployment import Api, deployed
from tests.support.rules import min_gap
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.e2e

ZONE = "Asia/Kolkata"
KOLKATA = timezone(timedelta(hours=5, minutes=30))
DAY = timedelta(days=1)
#: From the campaign's creation to the window's opening, at least.
LEAD = timedelta(seconds=7)
LENGTH = timedelta(seconds=6)
DELAY = 1
RECIPIENTS = 30
#: A send starts inside the window; its SMTP transaction may end a little after.
IN_FLIGHT = 2.0
ENV = {"MAILSCHED_FROM": "news@example.com"}


def clock_text(t: datetime, *, end: bool = False) -> str:
    """``t``'s Kolkata wall-clock time as the API takes it; midnight as the end of a
    window is ``24:00`` (``00:00`` would be a window of no length)."""
    local = t.astimezone(KOLKATA).strftime("%H:%M:%S")
    return "24:00" if end and local == "00:00:00" else local


def instant(text: str) -> datetime:
    """An API date-time (UTC if it names no zone)."""
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def window_campaign(recipients: list[str], now: datetime) -> tuple[dict[str, Any], datetime]:
    """A campaign starting ``now`` whose window opens :data:`LEAD` (and up to a second)
    later and lasts :data:`LENGTH`; and when it opens."""
    opens = now.replace(microsecond=0) + LEAD + timedelta(seconds=1)
    closes = opens + LENGTH
    body = {
        "userId": 1,
        "subject": "In your window",
        "body": "Hello, this arrives in your window.",
        "startTime": now.isoformat(),
        "delaySeconds": DELAY,
        "hourlyLimit": 100_000,
        "recipients": recipients,
        "schedule": {
            "timezone": ZONE,
            "windows": [{"start": clock_text(opens), "end": clock_text(closes, end=True)}],
        },
    }
    return body, opens


async def listing(api: Api, campaign_id: int) -> list[dict[str, Any]]:
    """The campaign's deliveries (one page: fewer than 100)."""
    response = await api.client.get(
        f"/api/v1/email/campaign/{campaign_id}/deliveries", params={"limit": 100}
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def until_seconds_after(t: datetime, seconds: float) -> None:
    await asyncio.sleep(max(0.0, (t - datetime.now(UTC)).total_seconds() + seconds))


def check_later_days(pending: list[datetime], opens: datetime) -> Counter[int]:
    """That ``pending`` (sorted) waits for the same local window on later days: the
    next day's first, each day's window filled before the next; sends per day."""
    per_window = math.ceil(LENGTH.total_seconds() / DELAY)
    days = Counter((t - opens) // DAY for t in pending)
    assert pending[0] == opens + DAY, pending
    for t in pending:
        assert t >= opens + DAY and (t - opens) % DAY < LENGTH, (t, pending)
    last_day = math.ceil(len(pending) / per_window)
    assert sorted(days) == list(range(1, last_day + 1)), days
    assert all(days[k] == per_window for k in range(1, last_day)), days
    return days


async def test_sends_start_only_inside_the_window_and_the_rest_waits_for_the_next_days(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    # Fails if a message arrived before the window opened or after it closed (beyond
    # a transaction in flight), if the window's time was left unused (fewer than
    # four of its six possible sends), or if what did not fit is planned outside
    # the same local window on later days. A window that crosses local midnight
    # belongs to the day it starts on: every day is allowed, so it is the same window.
    recipients = [f"user{i}@example.com" for i in range(RECIPIENTS)]
    async with deployed(stack, ENV | {"MAILSCHED_SMTP_URL": smtp_sink.url}, tmp_path) as (
        app,
        api,
    ):
        await asyncio.to_thread(app.wait_joined)
        body, opens = window_campaign(recipients, datetime.now(UTC))
        closes = opens + LENGTH
        created = await api.campaign(body)
        campaign_id = created["campaignId"]
        # Watch until well after the window closed: a late send would show by then.
        await until_seconds_after(closes, IN_FLIGHT + 2)
        items = await listing(api, campaign_id)
        view = (await api.client.get(f"/api/v1/email/campaign/{campaign_id}")).json()
        assert not app.tracebacks(), app.output()

    received = sorted(a.at for a in smtp_sink.arrivals)
    sent = [i for i in items if i["status"] == "SENT"]
    pending = sorted(instant(i["scheduledAt"]) for i in items if i["status"] != "SENT")
    per_window = math.ceil(LENGTH.total_seconds() / DELAY)
    figures = {
        "stack": stack.name,
        "window": f"{clock_text(opens)}-{clock_text(closes, end=True)} {ZONE}",
        "sent in the window": len(received),
        "first receipt after opening (s)": round(received[0] - opens.timestamp(), 3)
        if received
        else None,
        "last receipt after closing (s)": round(received[-1] - closes.timestamp(), 3)
        if received
        else None,
        "smallest gap (s)": round(min_gap(received), 3),
        "planned per later day": dict(sorted(Counter((t - opens) // DAY for t in pending).items())),
        "estimatedCompletionAt": view["estimatedCompletionAt"],
    }
    print(f"calendar window, {stack.name}: {figures}")

    assert instant(created["firstSendAt"]) == opens  # planned at the opening, not at once
    assert per_window - 2 <= len(received) <= per_window, figures
    assert opens.timestamp() <= received[0], figures  # nothing before the window opened
    assert received[-1] <= closes.timestamp() + IN_FLIGHT, figures
    assert min_gap(received) >= DELAY, figures
    assert len(sent) == len(received)
    for item in sent:
        assert opens <= instant(item["sentAt"]) <= closes + timedelta(seconds=IN_FLIGHT), item

    # The rest waits, SCHEDULED, for the same local window on later days.
    assert {i["status"] for i in items if i["status"] != "SENT"} == {"SCHEDULED"}
    assert len(pending) == RECIPIENTS - len(received)
    days = check_later_days(pending, opens)
    assert view["status"] == "RUNNING"
    assert instant(view["estimatedCompletionAt"]) == pending[-1], figures
    assert (pending[-1] - opens) // DAY == max(days)


async def test_a_worker_down_for_the_whole_window_sends_nothing_after_it(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    # The worker (all of ``mailsched run`` when embedded) is killed before the window
    # opens and started again after it closed: every delivery is overdue then. Fails
    # if the worker sent one (the claim took its planned time, not its window), or
    # planned them again outside the window on later days.
    recipients = [f"user{i}@example.com" for i in range(RECIPIENTS // 3)]
    async with deployed(stack, ENV | {"MAILSCHED_SMTP_URL": smtp_sink.url}, tmp_path) as (
        app,
        api,
    ):
        await asyncio.to_thread(app.wait_joined)
        body, opens = window_campaign(recipients, datetime.now(UTC))
        closes = opens + LENGTH
        campaign_id = (await api.campaign(body))["campaignId"]
        role = "run" if app.embedded else "worker"
        await asyncio.to_thread(app.kill, role)
        await until_seconds_after(closes, 1)
        await asyncio.to_thread(app.restart, role)
        restarted = datetime.now(UTC)

        async def handled() -> list[datetime] | None:
            items = await listing(api, campaign_id)
            if any(i["status"] != "SCHEDULED" for i in items):
                return None
            planned = sorted(instant(i["scheduledAt"]) for i in items)
            return planned if planned[0] >= opens + DAY else None

        deadline = asyncio.get_running_loop().time() + 90
        while (pending := await handled()) is None:
            assert asyncio.get_running_loop().time() < deadline, await listing(api, campaign_id)
            if smtp_sink.arrivals:
                break  # a send went out: said below
            await asyncio.sleep(0.2)
        replanned = datetime.now(UTC)
        await asyncio.sleep(IN_FLIGHT)  # room for a wrongly admitted send to arrive
        assert not app.tracebacks(), app.output()

    print(
        f"calendar window, worker down, {stack.name}: planned again "
        f"{(replanned - restarted).total_seconds():.1f} s after the restart"
    )
    assert smtp_sink.arrivals == [], "a send started after its window had closed"
    assert pending is not None and len(pending) == len(recipients)
    check_later_days(pending, opens)
