"""Campaign requests, built before the clock starts, and posted to a running API."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

HUGE_LIMIT = 1_000_000_000


def campaign_body(
    recipients: int,
    *,
    start: datetime | None = None,
    delay: int = 0,
    hourly_limit: int = HUGE_LIMIT,
    tag: str = "c",
) -> bytes:
    """A ``POST /api/v1/email/campaign`` body; ``start`` ``None`` means now (a past time)."""
    when = start or datetime(2020, 1, 1, tzinfo=UTC)
    return json.dumps(
        {
            "userId": 1,
            "subject": f"Benchmark {tag}",
            "body": "Hello,\n\nthis is a benchmark email of about a hundred bytes of plain text.\n",
            "startTime": when.isoformat(),
            "delaySeconds": delay,
            "hourlyLimit": hourly_limit,
            "recipients": [f"user{i}.{tag}@example.com" for i in range(recipients)],
        }
    ).encode()


def far_future() -> datetime:
    """Weeks ahead: nothing planned there is sent while the bench runs."""
    return datetime.now(UTC) + timedelta(days=21)


@dataclass(frozen=True, slots=True)
class Posted:
    """A campaign the API accepted and how long the 201 took."""

    campaign_id: int
    seconds: float


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
    if response.status_code != 201:
        raise RuntimeError(f"POST answered {response.status_code}: {response.text[:500]}")
    return Posted(int(response.json()["campaignId"]), seconds)


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=httpx.Limits(max_connections=32))
