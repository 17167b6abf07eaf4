"""Sending calendars through the API, over each database: the dry-run plan, a create that
plans the same, recipients' own zones, every refused schedule, and the campaign view.

The app's clock is ``NOW`` (Saturday 2026-11-28 12:00 UTC); start times lie in 2027, so
each plan is exact. Local wall-clock times are written as ``"YYYY-MM-DD HH:MM"``.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.producer.api import create_app
from mailsched.producer.auth import Authenticator, caller_dependency
from mailsched.producer.campaigns import Campaigns
from mailsched.store import suppressions
from mailsched.store.db import Database
from mailsched.store.tables import campaigns, deliveries
from tests.support.api import NOW, URL, client_for, new_key, spec_body

PLAN = f"{URL}/plan"
CAMPAIGNS = "/api/v1/email/campaigns"
BERLIN = "Europe/Berlin"
WORKDAYS = ["mon", "tue", "wed", "thu", "fri"]
EVERY_DAY = [*WORKDAYS, "sat", "sun"]
OFFICE: dict[str, Any] = {
    "timezone": BERLIN,
    "days": WORKDAYS,
    "windows": [{"start": "09:00", "end": "17:00"}],
}
#: One window, 09:00 to 10:00 in each recipient's zone, every day.
MORNINGS: dict[str, Any] = {
    "timezone": "recipient",
    "fallbackTimezone": BERLIN,
    "windows": [{"start": "09:00", "end": "10:00"}],
}


def addresses(count: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}{i:02d}@example.com" for i in range(count)]


def request(
    schedule: dict[str, Any] | None,
    recipients: list[Any],
    start: str,
    *,
    delay: int = 60,
    hourly_limit: int = 1000,
) -> dict[str, Any]:
    """A create body with a schedule; rules loose enough that the windows decide."""
    body = spec_body(
        startTime=start, delaySeconds=delay, hourlyLimit=hourly_limit, recipients=recipients
    )
    if schedule is not None:
        body["schedule"] = schedule
    return body


def utc(local: str, zone: str = BERLIN) -> str:
    """A local wall-clock time in ``zone``, as the API writes the instant (UTC, ``Z``)."""
    at = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(zone))
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wall_clock(api_time: str, zone: str) -> datetime:
    """An API time as local time in ``zone``."""
    return datetime.fromisoformat(api_time).astimezone(ZoneInfo(zone))


def in_window(api_time: str, zone: str, start: str, end: str, days: list[str]) -> bool:
    """Whether ``api_time`` is, in ``zone``, inside ``[start, end)`` (not crossing midnight)
    on one of ``days``."""
    local = wall_clock(api_time, zone)
    weekday = EVERY_DAY[local.weekday()]
    return weekday in days and start <= local.strftime("%H:%M:%S") < end


async def plan(client: httpx.AsyncClient, body: dict[str, Any], **params: Any) -> dict[str, Any]:
    response = await client.post(PLAN, json=body, params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(URL, json=body)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def view(client: httpx.AsyncClient, campaign_id: int) -> dict[str, Any]:
    response = await client.get(f"{URL}/{campaign_id}")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def listed(client: httpx.AsyncClient, campaign_id: int) -> list[dict[str, Any]]:
    """Every delivery of the campaign (at most 1000), in recipient order."""
    response = await client.get(f"{URL}/{campaign_id}/deliveries", params={"limit": 1000})
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    assert page["nextCursor"] is None
    items: list[dict[str, Any]] = page["items"]
    return items


def times_of(items: list[dict[str, Any]]) -> dict[str, str]:
    """Recipient to planned time, from plan deliveries or delivery items alike."""
    return {item["recipient"]: item["scheduledAt"] for item in items}


async def count_rows(db: Database) -> tuple[int, int]:
    async def work(conn: AsyncConnection) -> tuple[int, int]:
        c = (await conn.execute(select(func.count()).select_from(campaigns))).scalar_one()
        d = (await conn.execute(select(func.count()).select_from(deliveries))).scalar_one()
        return c, d

    return await db.run(work)


# 1. The plan endpoint.


async def test_plan_waits_over_the_weekend_for_the_next_window(
    client: httpx.AsyncClient, db: Database
) -> None:
    body = request(OFFICE, addresses(5), "2027-01-08T16:58:00+01:00")  # a Friday
    local_times = [
        "2027-01-08 16:58",
        "2027-01-08 16:59",
        # 17:00 is past the half-open window; Saturday and Sunday are not allowed.
        "2027-01-11 09:00",
        "2027-01-11 09:01",
        "2027-01-11 09:02",
    ]
    assert await plan(client, body) == {
        "recipientCount": 5,
        "duplicatesDropped": 0,
        "suppressed": 0,
        "firstSendAt": "2027-01-08T15:58:00Z",
        "lastSendAt": "2027-01-11T08:02:00Z",
        "perDay": {"2027-01-08": 2, "2027-01-11": 3},
        "deliveries": [
            {"recipient": recipient, "timezone": BERLIN, "scheduledAt": utc(at)}
            for recipient, at in zip(addresses(5), local_times, strict=True)
        ],
    }
    assert (await client.get(CAMPAIGNS)).json()["items"] == []
    assert await count_rows(db) == (0, 0)


async def test_plan_limit_shortens_the_list_not_the_counts(client: httpx.AsyncClient) -> None:
    body = request(OFFICE, [*addresses(5), "USER00@example.com"], "2027-01-08T16:58:00+01:00")
    full = await plan(client, body)
    short = await plan(client, body, limit=3)
    assert short["deliveries"] == full["deliveries"][:3]
    assert len(full["deliveries"]) == 5
    assert {k: v for k, v in short.items() if k != "deliveries"} == {
        "recipientCount": 5,
        "duplicatesDropped": 1,
        "suppressed": 0,
        "firstSendAt": "2027-01-08T15:58:00Z",
        "lastSendAt": "2027-01-11T08:02:00Z",
        "perDay": {"2027-01-08": 2, "2027-01-11": 3},
    }


@pytest.mark.parametrize("limit", ["0", "100001", "-1", "many"])
async def test_plan_limit_out_of_range_is_a_422(client: httpx.AsyncClient, limit: str) -> None:
    body = request(OFFICE, addresses(2), "2027-01-08T16:58:00+01:00")
    response = await client.post(PLAN, json=body, params={"limit": limit})
    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["detail"]] == ["limit"]


@pytest.mark.parametrize("limit", ["1.0", "+1"])
async def test_plan_limit_is_an_integer_in_digits(client: httpx.AsyncClient, limit: str) -> None:
    body = request(OFFICE, addresses(2), "2027-01-08T16:58:00+01:00")
    response = await client.post(PLAN, json=body, params={"limit": limit})
    assert response.status_code == 422, response.text


async def test_per_day_counts_the_schedules_local_dates(client: httpx.AsyncClient) -> None:
    # Berlin's 00:00-01:00 is 23:00-24:00 UTC the day before.
    schedule = {"timezone": BERLIN, "windows": [{"start": "00:00", "end": "01:00"}]}
    body = request(schedule, addresses(4), "2027-01-08T00:00:00+01:00", delay=1800)
    planned = await plan(client, body)
    assert [d["scheduledAt"] for d in planned["deliveries"]] == [
        "2027-01-07T23:00:00Z",
        "2027-01-07T23:30:00Z",
        "2027-01-08T23:00:00Z",
        "2027-01-08T23:30:00Z",
    ]
    assert planned["perDay"] == {"2027-01-08": 2, "2027-01-09": 2}


async def test_plan_for_another_user_is_a_403(client: httpx.AsyncClient) -> None:
    body = request(OFFICE, addresses(2), "2027-01-08T16:58:00+01:00") | {"userId": 2}
    response = await client.post(PLAN, json=body)
    assert response.status_code == 403, response.text
    assert response.json()["detail"][0]["field"] == "userId"


async def test_plan_leaves_suppressed_recipients_out(
    client: httpx.AsyncClient, db: Database
) -> None:
    async def suppress(conn: AsyncConnection) -> None:
        await suppressions.add(conn, 1, "user00@example.com", "manual", NOW)

    await db.run(suppress)
    body = request(OFFICE, addresses(3), "2027-01-08T16:58:00+01:00")
    planned = await plan(client, body)
    assert (planned["recipientCount"], planned["suppressed"]) == (3, 1)
    assert times_of(planned["deliveries"]) == {
        "user01@example.com": "2027-01-08T15:58:00Z",
        "user02@example.com": "2027-01-08T15:59:00Z",
    }
    assert planned["perDay"] == {"2027-01-08": 2}


# 2. A plan is what a create stores.

RECIPIENT_ZONES = [
    {"email": "ny@example.com", "timezone": "America/New_York"},
    "fallback@example.com",
    {"email": "tokyo@example.com", "timezone": "Asia/Tokyo"},
    {"email": "la@example.com", "timezone": "America/Los_Angeles"},
]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            request(
                {
                    "timezone": BERLIN,
                    "days": WORKDAYS,
                    "windows": [
                        {"start": "09:00", "end": "12:00"},
                        {"start": "13:00", "end": "17:30"},
                    ],
                    "excludeDates": ["2027-01-12"],
                    "jitterSeconds": 0,
                },
                addresses(40),
                "2027-01-08T16:58:00+01:00",
                delay=120,
                hourly_limit=10,
            ),
            id="berlin-hourly-limit",
        ),
        pytest.param(
            request(MORNINGS, RECIPIENT_ZONES, "2027-01-07T21:00:00Z", delay=600),
            id="recipient-zones",
        ),
        pytest.param(request(None, addresses(12), "2027-01-08T16:58:00Z"), id="no-schedule"),
    ],
)
async def test_create_stores_the_plans_times(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    planned = await plan(client, body)
    created = await create(client, body)
    items = await listed(client, created["campaignId"])
    assert times_of(items) == times_of(planned["deliveries"])
    assert len(items) == planned["recipientCount"] == created["recipientCount"]
    assert (created["firstSendAt"], created["lastSendAt"]) == (
        planned["firstSendAt"],
        planned["lastSendAt"],
    )
    # The stored zone is a recipient's own one, under a "recipient" schedule only.
    per_recipient = body.get("schedule", {}).get("timezone") == "recipient"
    zones = {d["recipient"]: d["timezone"] for d in planned["deliveries"]}
    assert {i["recipient"]: i["timezone"] for i in items} == (
        zones if per_recipient else dict.fromkeys(zones)
    )


# 3. Each recipient's own zone.


async def test_recipients_get_mail_in_their_own_morning(client: httpx.AsyncClient) -> None:
    recipients = [
        {"email": "ny1@example.com", "timezone": "America/New_York"},
        {"email": "ny2@example.com", "timezone": "America/New_York"},
        {"email": "berlin1@example.com"},
        "berlin2@example.com",
        {"email": "tokyo1@example.com", "timezone": "Asia/Tokyo"},
        {"email": "tokyo2@example.com", "timezone": "Asia/Tokyo"},
        # 09:00 in Auckland (UTC+13) is 20:00 UTC the day before: its UTC date is not its own.
        {"email": "auckland@example.com", "timezone": "Pacific/Auckland"},
    ]
    zones = {
        "ny1@example.com": "America/New_York",
        "ny2@example.com": "America/New_York",
        "berlin1@example.com": BERLIN,
        "berlin2@example.com": BERLIN,
        "tokyo1@example.com": "Asia/Tokyo",
        "tokyo2@example.com": "Asia/Tokyo",
        "auckland@example.com": "Pacific/Auckland",
    }
    # 21:00 UTC: Auckland's window closed a moment ago; Tokyo's opens three hours later.
    body = request(MORNINGS, recipients, "2027-01-07T21:00:00Z")
    planned = await plan(client, body)
    assert [(d["recipient"], d["scheduledAt"]) for d in planned["deliveries"]] == [
        ("tokyo1@example.com", utc("2027-01-08 09:00", "Asia/Tokyo")),
        ("tokyo2@example.com", utc("2027-01-08 09:01", "Asia/Tokyo")),
        ("berlin1@example.com", utc("2027-01-08 09:00", BERLIN)),
        ("berlin2@example.com", utc("2027-01-08 09:01", BERLIN)),
        ("ny1@example.com", utc("2027-01-08 09:00", "America/New_York")),
        ("ny2@example.com", utc("2027-01-08 09:01", "America/New_York")),
        ("auckland@example.com", utc("2027-01-09 09:00", "Pacific/Auckland")),
    ]
    for d in planned["deliveries"]:
        assert d["timezone"] == zones[d["recipient"]]
        assert in_window(d["scheduledAt"], d["timezone"], "09:00", "10:00", EVERY_DAY), d
    # UTC dates: Auckland's send is on 2027-01-09 there, 2027-01-08 in UTC.
    assert planned["perDay"] == {"2027-01-08": 7}

    created = await create(client, body)
    items = await listed(client, created["campaignId"])
    assert {i["recipient"]: i["timezone"] for i in items} == zones
    assert times_of(items) == times_of(planned["deliveries"])


# 4. Every refused schedule names its field, on both routes, and stores nothing.


#: When the refused requests below would start sending.
REFUSED_START = "2027-01-08T16:58:00+01:00"


def _mondays(weeks: int = 60) -> list[str]:
    """Every Monday from the requests' start for ``weeks`` weeks (60: 420 days, more than
    the 400 a schedule must open within, counted from when sending may begin)."""
    start = datetime.fromisoformat(REFUSED_START).date()
    first = start + timedelta(days=-start.weekday() % 7)
    return [(first + timedelta(weeks=i)).isoformat() for i in range(weeks)]


def _mondays_after_one_open() -> list[str]:
    """One Monday open at the start, then 60 excluded: a gap of more than 400 days."""
    return _mondays(61)[1:]


def _with(**changes: Any) -> dict[str, Any]:
    return {"schedule": OFFICE | changes}


def _window(start: Any, end: Any) -> dict[str, Any]:
    return _with(windows=[{"start": start, "end": end}])


def _zones(schedule: dict[str, Any] | None, recipients: list[Any]) -> dict[str, Any]:
    return {"schedule": schedule, "recipients": recipients}


_TOKYO = {"email": "tokyo@example.com", "timezone": "Asia/Tokyo"}
_PER_RECIPIENT = {"timezone": "recipient", "fallbackTimezone": BERLIN}

INVALID: list[Any] = [
    pytest.param(_with(timezone="Mars/Olympus"), ["schedule.timezone"], id="unknown-zone"),
    pytest.param(_with(timezone="europe/berlin"), ["schedule.timezone"], id="zone-case"),
    pytest.param(_with(timezone="UTC+2"), ["schedule.timezone"], id="offset-is-no-zone"),
    pytest.param(
        _zones(OFFICE | _PER_RECIPIENT, ["a@example.com", {"email": "b@x.io", "timezone": "X/Y"}]),
        ["recipients.1"],
        id="unknown-recipient-zone",
    ),
    pytest.param(
        _with(fallbackTimezone="Nowhere/City"), ["schedule.fallbackTimezone"], id="bad-fallback"
    ),
    pytest.param(
        _with(timezone="recipient", fallbackTimezone="Nowhere/City"),
        ["schedule.fallbackTimezone"],
        id="bad-fallback-for-recipient",
    ),
    pytest.param(
        _with(timezone="recipient"), ["schedule.fallbackTimezone"], id="recipient-no-fallback"
    ),
    pytest.param(_zones(None, [_TOKYO]), ["recipients.0.timezone"], id="zone-without-schedule"),
    pytest.param(
        _zones(OFFICE, ["a@example.com", _TOKYO]),
        ["recipients.1.timezone"],
        id="zone-with-fixed-zone-schedule",
    ),
    pytest.param(_with(days=[]), ["schedule.days"], id="no-days"),
    pytest.param(_with(days=["mon", "monday"]), ["schedule.days.1"], id="unknown-day"),
    pytest.param(_with(days="mon"), ["schedule.days"], id="days-not-a-list"),
    pytest.param(_window("10:00", "10:00"), ["schedule.windows.0"], id="empty-window"),
    pytest.param(_window("24:00", "02:00"), ["schedule.windows.0"], id="starts-at-24"),
    pytest.param(_window("9:00", "10:00"), ["schedule.windows.0.start"], id="one-digit-hour"),
    pytest.param(_window("09:00", "25:00"), ["schedule.windows.0.end"], id="hour-25"),
    pytest.param(_window("12:60", "13:00"), ["schedule.windows.0.start"], id="minute-60"),
    pytest.param(_window("09:00", "24:01"), ["schedule.windows.0.end"], id="past-24"),
    pytest.param(_window(900, "10:00"), ["schedule.windows.0.start"], id="number"),
    pytest.param(_window("09:00", None), ["schedule.windows.0.end"], id="null-end"),
    pytest.param(
        _with(windows=[{"start": f"{h:02d}:00", "end": f"{h:02d}:30"} for h in range(13)]),
        ["schedule.windows"],
        id="13-windows",
    ),
    pytest.param(_with(windows=[]), ["schedule.windows"], id="no-windows"),
    pytest.param(
        {"schedule": {"timezone": BERLIN, "days": WORKDAYS}},
        ["schedule.windows"],
        id="windows-missing",
    ),
    pytest.param(
        {"schedule": {"windows": OFFICE["windows"]}}, ["schedule.timezone"], id="zone-missing"
    ),
    pytest.param(_with(excludeDates=["2026-13-01"]), ["schedule.excludeDates.0"], id="month-13"),
    pytest.param(
        _with(excludeDates=["2026-12-24", "tomorrow"]), ["schedule.excludeDates.1"], id="word"
    ),
    pytest.param(_with(excludeDates=[20261224]), ["schedule.excludeDates.0"], id="int-date"),
    pytest.param(
        _with(excludeDates=["2026-12-24T00:00:00Z"]), ["schedule.excludeDates.0"], id="datetime"
    ),
    pytest.param(_with(jitterSeconds=-1), ["schedule.jitterSeconds"], id="jitter-negative"),
    pytest.param(_with(jitterSeconds=86401), ["schedule.jitterSeconds"], id="jitter-over-a-day"),
    pytest.param(_with(jitterSeconds=1.5), ["schedule.jitterSeconds"], id="jitter-fraction"),
    pytest.param(_with(jitterSeconds="10"), ["schedule.jitterSeconds"], id="jitter-string"),
    pytest.param(_with(jitterSeconds=True), ["schedule.jitterSeconds"], id="jitter-bool"),
    pytest.param(
        _with(days=["mon"], excludeDates=_mondays()), ["schedule"], id="never-open-in-400-days"
    ),
    pytest.param(
        _zones(
            OFFICE | _PER_RECIPIENT | {"days": ["mon"], "excludeDates": _mondays()},
            ["a@example.com", _TOKYO],
        ),
        ["schedule"],
        id="never-open-in-any-zone",
    ),
    pytest.param(
        _with(days=["mon"], excludeDates=_mondays_after_one_open()),
        ["schedule.excludeDates"],
        id="a-gap-of-more-than-400-days",
    ),
    pytest.param(_with(holidays=["2026-12-24"]), ["schedule.holidays"], id="unknown-key"),
    pytest.param(_with(time_zone=BERLIN), ["schedule.time_zone"], id="snake-case-key"),
    pytest.param(
        _with(windows=[{"start": "09:00", "end": "10:00", "tz": "UTC"}]),
        ["schedule.windows.0.tz"],
        id="unknown-window-key",
    ),
    pytest.param({"schedule": "weekdays"}, ["schedule"], id="not-an-object"),
]


@pytest.mark.parametrize(("changes", "fields"), INVALID)
async def test_refused_schedule_names_the_field_on_both_routes(
    client: httpx.AsyncClient, db: Database, changes: dict[str, Any], fields: list[str]
) -> None:
    body = request(None, addresses(2), REFUSED_START) | changes
    created = await client.post(URL, json=body)
    planned = await client.post(PLAN, json=body)
    assert created.status_code == 422, created.text
    answer = created.json()
    assert answer["error"] == "invalid_request"
    assert [d["field"] for d in answer["detail"]] == fields
    if re.fullmatch(r"recipients\.[0-9]+", fields[0]):
        # The recipient as a whole is named: the message must say what of it is wrong.
        assert "timezone" in answer["detail"][0]["message"]
    assert (planned.status_code, planned.json()) == (422, answer)
    assert await count_rows(db) == (0, 0)


# 5. The campaign view.


class Clock:
    """The app's clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def clocked_app(db: Database, clock: Clock) -> FastAPI:
    caller = caller_dependency(Authenticator(db, 6000))
    return create_app(Campaigns(db, timedelta(hours=1), clock), caller)


async def test_view_echoes_the_schedule_normalized(client: httpx.AsyncClient) -> None:
    schedule = {
        "timezone": "recipient",
        "fallbackTimezone": "America/Chicago",
        "days": ["fri", "mon", "mon"],
        "windows": [{"start": "22:00:00", "end": "02:00"}, {"start": "09:00:30", "end": "24:00"}],
        "excludeDates": ["2027-12-25", "2027-01-01", "2027-12-24"],
    }
    created = await create(client, request(schedule, addresses(2), "2027-01-08T16:58:00Z"))
    assert (await view(client, created["campaignId"]))["schedule"] == {
        "timezone": "recipient",
        "fallbackTimezone": "America/Chicago",
        "days": ["mon", "fri"],
        "windows": [{"start": "22:00", "end": "02:00"}, {"start": "09:00:30", "end": "24:00"}],
        "excludeDates": ["2027-01-01", "2027-12-24", "2027-12-25"],
        "jitterSeconds": 0,
    }
    fixed = await create(client, request(OFFICE, addresses(2), "2027-01-08T16:58:00Z"))
    assert (await view(client, fixed["campaignId"]))["schedule"] == OFFICE | {
        "fallbackTimezone": None,
        "excludeDates": [],
        "jitterSeconds": 0,
    }
    plain = await create(client, request(None, addresses(2), "2027-01-08T16:58:00Z"))
    assert (await view(client, plain["campaignId"]))["schedule"] is None


async def test_estimated_completion_follows_pause_resume_and_cancel(db: Database) -> None:
    clock = Clock(NOW)  # Saturday 13:00 in Berlin
    schedule = OFFICE | {"windows": [{"start": "09:00", "end": "10:00"}]}
    body = request(schedule, addresses(5), "2026-11-01T00:00:00Z")  # past: start now
    async with client_for(clocked_app(db, clock), await new_key(db, 1)) as client:
        created = await create(client, body)
        path = f"{URL}/{created['campaignId']}"
        assert created["lastSendAt"] == utc("2026-11-30 09:04")  # Monday
        fresh = await view(client, created["campaignId"])
        assert fresh["estimatedCompletionAt"] == created["lastSendAt"]
        assert fresh["plannedLastSendAt"] == created["lastSendAt"]

        assert (await client.post(f"{path}/pause")).status_code == 200
        assert (await view(client, created["campaignId"]))["estimatedCompletionAt"] is None

        # Monday 10:30 in Berlin: today's window has closed; nothing was sent.
        clock.now = datetime.fromisoformat(utc("2026-11-30 10:30"))
        assert (await client.post(f"{path}/resume")).status_code == 200
        resumed = await view(client, created["campaignId"])
        estimate = resumed["estimatedCompletionAt"]
        assert estimate == utc("2026-12-01 09:04")
        assert datetime.fromisoformat(estimate) >= clock.now
        assert in_window(estimate, BERLIN, "09:00", "10:00", WORKDAYS)
        for item in await listed(client, created["campaignId"]):
            assert in_window(item["scheduledAt"], BERLIN, "09:00", "10:00", WORKDAYS), item
            assert datetime.fromisoformat(item["scheduledAt"]) >= clock.now

        assert (await client.post(f"{path}/cancel")).status_code == 200
        assert (await view(client, created["campaignId"]))["estimatedCompletionAt"] is None


async def test_resume_before_the_start_keeps_the_start(client: httpx.AsyncClient) -> None:
    body = request(OFFICE, addresses(3), "2027-01-08T16:58:00+01:00")
    created = await create(client, body)
    path = f"{URL}/{created['campaignId']}"
    assert (await client.post(f"{path}/pause")).status_code == 200
    assert (await client.post(f"{path}/resume")).status_code == 200
    times = times_of(await listed(client, created["campaignId"]))
    assert min(times.values()) >= "2027-01-08T15:58:00Z", times


# 6. Jitter.


async def test_jitter_delays_sends_within_the_window(client: httpx.AsyncClient) -> None:
    start = "2027-01-11T09:00:00+01:00"  # a Monday
    steady = await plan(client, request(OFFICE, addresses(50), start, delay=0))
    jittered = await plan(
        client, request(OFFICE | {"jitterSeconds": 600}, addresses(50), start, delay=0)
    )
    assert set(times_of(steady["deliveries"]).values()) == {"2027-01-11T08:00:00Z"}
    plain, late = times_of(steady["deliveries"]), times_of(jittered["deliveries"])
    assert late.keys() == plain.keys()
    assert len(set(late.values())) > 1
    for recipient, at in late.items():
        assert at >= plain[recipient], recipient
        assert in_window(at, BERLIN, "09:00", "17:00", WORKDAYS), at


async def test_jitter_keeps_the_delay_and_the_hourly_limit(client: httpx.AsyncClient) -> None:
    schedule = OFFICE | {"jitterSeconds": 600}
    body = request(schedule, addresses(30), "2027-01-11T09:00:00+01:00", hourly_limit=10)
    sends = sorted(
        datetime.fromisoformat(d["scheduledAt"]) for d in (await plan(client, body))["deliveries"]
    )
    assert all(b - a >= timedelta(seconds=60) for a, b in pairwise(sends))
    assert all(b - a >= timedelta(hours=1) for a, b in zip(sends, sends[10:], strict=False))


# 7. A window across midnight belongs to the day it starts on.

LATE_FRIDAYS = {
    "timezone": BERLIN,
    "days": ["fri"],
    "windows": [{"start": "22:00", "end": "02:00"}],
}


@pytest.mark.parametrize(
    ("start", "delay", "exclude", "expected"),
    [
        pytest.param(
            "2027-01-08 23:59",
            1800,
            [],
            [
                "2027-01-08 23:59",
                "2027-01-09 00:29",
                "2027-01-09 00:59",
                "2027-01-09 01:29",
                "2027-01-09 01:59",
                "2027-01-15 22:00",
                "2027-01-15 22:30",
            ],
            id="on-past-midnight-until-2",
        ),
        pytest.param(
            "2027-01-09 01:58",
            60,
            [],
            ["2027-01-09 01:58", "2027-01-09 01:59", "2027-01-15 22:00"],
            id="stops-at-2",
        ),
        pytest.param(
            "2027-01-08 00:30",
            60,
            [],
            ["2027-01-08 22:00", "2027-01-08 22:01"],
            id="friday-small-hours-are-thursdays",
        ),
        pytest.param(
            "2027-01-09 00:30",
            60,
            ["2027-01-08"],
            ["2027-01-15 22:00", "2027-01-15 22:01"],
            id="excluded-friday-takes-saturday-morning",
        ),
        pytest.param(
            "2027-01-09 00:30",
            60,
            ["2027-01-09"],
            ["2027-01-09 00:30", "2027-01-09 00:31"],
            id="excluded-saturday-leaves-fridays-window",
        ),
    ],
)
async def test_window_across_midnight(
    client: httpx.AsyncClient, start: str, delay: int, exclude: list[str], expected: list[str]
) -> None:
    schedule = LATE_FRIDAYS | {"excludeDates": exclude}
    at = datetime.fromisoformat(start).replace(tzinfo=ZoneInfo(BERLIN)).isoformat()
    planned = await plan(client, request(schedule, addresses(len(expected)), at, delay=delay))
    assert [d["scheduledAt"] for d in planned["deliveries"]] == [utc(t) for t in expected]
    assert planned["perDay"] == dict(Counter(t[:10] for t in expected))
