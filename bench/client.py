"""Campaign requests, built before the clock starts, and posted to a running API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

HUGE_LIMIT = 1_000_000_000


def campaign_body(
    recipients: int,
    *,
    start: datetime | None = None,
    delay: int = 0,
    hourly_limit: int = HUGE_LIMIT,
    tag: str = "c",
    zones: Sequence[str] = (),
) -> bytes:
    """A ``POST /api/v1/email/campaign`` body; ``start`` ``None`` means now (a past time).

    With ``zones``, a sending calendar in each recipient's zone (office hours on
    weekdays, with jitter), the recipients' zones taken from ``zones`` in turn.
    """
    when = start or datetime(2020, 1, 1, tzinfo=UTC)
    body: dict[str, Any] = {
        "userId": 1,
        "subject": f"Benchmark {tag}",
        "body": "Hello,\n\nthis is a benchmark email of about a hundred bytes of plain text.\n",
        "startTime": when.isoformat(),
        "delaySeconds": delay,
        "hourlyLimit": hourly_limit,
        "recipients": [f"user{i}.{tag}@example.com" for i in range(recipients)],
    }
    if zones:
        body["recipients"] = [
            {"email": address, "timezone": zones[i % len(zones)]}
            for i, address in enumerate(body["recipients"])
        ]
        body["schedule"] = OFFICE_HOURS
    return json.dumps(body).encode()


#: The calendar of a zoned benchmark campaign.
OFFICE_HOURS = {
    "timezone": "recipient",
    "fallbackTimezone": "Europe/Berlin",
    "days": ["mon", "tue", "wed", "thu", "fri"],
    "windows": [{"start": "09:00", "end": "12:00"}, {"start": "13:00", "end": "17:30"}],
    "excludeDates": ["2026-12-24", "2026-12-25", "2027-01-01"],
    "jitterSeconds": 120,
}

#: Thirty zones from UTC-10 to UTC+14, with half- and quarter-hour offsets and DST
#: in both hemispheres.
THIRTY_ZONES = (
    "Pacific/Honolulu", "America/Anchorage", "America/Los_Angeles", "America/Denver",
    "America/Chicago", "America/New_York", "America/Halifax", "America/St_Johns",
    "America/Sao_Paulo", "America/Santiago", "Atlantic/Azores", "Europe/London",
    "Europe/Berlin", "Europe/Athens", "Africa/Cairo", "Europe/Moscow", "Asia/Tehran",
    "Asia/Dubai", "Asia/Kabul", "Asia/Karachi", "Asia/Kolkata", "Asia/Kathmandu",
    "Asia/Dhaka", "Asia/Bangkok", "Asia/Shanghai", "Asia/Tokyo", "Australia/Adelaide",
    "Australia/Lord_Howe", "Pacific/Chatham", "Pacific/Kiritimati",
)  # fmt: skip


def far_future() -> datetime:
    """Weeks ahead: nothing planned there is sent while the bench runs."""
    return datetime.now(UTC) + timedelta(days=21)


@dataclass(frozen=True, slots=True)
class Posted:
    """A campaign the API accepted and how long the 201 took."""

    campaign_id: int
    seconds: float


class Unavailable(RuntimeError):
    """The API answered 503: nothing was stored, and it asks to be asked again."""


async def post(client: httpx.AsyncClient, port: int, body: bytes, key: str | None) -> Posted:
    """POST ``body`` (with API key ``key``, if any); raise unless the answer is 201."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    started = time.perf_counter()
    response = await client.post(
        f"http://127.0.0.1:{port}/api/v1/email/campaign", content=body, headers=headers
    )
    seconds = time.perf_counter() - started
    if response.status_code == 503:
        raise Unavailable(f"POST answered 503: {response.text[:500]}")
    if response.status_code != 201:
        raise RuntimeError(f"POST answered {response.status_code}: {response.text[:500]}")
    return Posted(int(response.json()["campaignId"]), seconds)


async def post_all(
    client: httpx.AsyncClient,
    port: int,
    key: str | None,
    bodies: Iterable[bytes],
    parallel: int = 16,
) -> None:
    """POST every body, ``parallel`` at a time (one client posting many campaigns); a 503
    is retried twice, half a second later (not the 5 s the API asks for, which would
    overrun a start planned around the posting), and said on stdout."""
    gate = asyncio.Semaphore(parallel)

    async def send(body: bytes) -> None:
        async with gate:
            for retries_left in (2, 1, 0):
                try:
                    await post(client, port, body, key)
                    return
                except Unavailable as exc:
                    if not retries_left:
                        raise
                    print(f"  bench: {exc}; posting again", flush=True)
                    await asyncio.sleep(0.5)

    await asyncio.gather(*(send(b) for b in bodies))


async def posting_time(
    client: httpx.AsyncClient, port: int, key: str | None, sample: Sequence[bytes], count: int
) -> float:
    """Seconds that posting ``count`` bodies like ``sample`` should take, a quarter more
    than ``sample`` took to post (bodies planned weeks ahead, so never due while a run
    lasts): a start planned after posting must not fall inside it, on a machine whose
    speed others' work changes from one minute to the next."""
    started = time.perf_counter()
    await post_all(client, port, key, sample)
    return 1.25 * (time.perf_counter() - started) * count / len(sample)


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=httpx.Limits(max_connections=32))
