"""A draft through real processes on both stacks: a CSV streamed over a real socket,
scheduled, sent; and a client that goes away mid-upload, which leaves nothing.

Embedded: one ``mailsched run``. Real: ``mailsched api`` (with the dispatcher),
``mailsched worker`` and ``mailsched webhooks`` on MariaDB + Kafka.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import Stack
from tests.support.deployment import Api, deployed
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.e2e

ENV = {"MAILSCHED_FROM": "news@example.com"}
URL = "/api/v1/email/campaign"


async def new_draft(api: Api, **changes: object) -> int:
    body = {
        "userId": 1,
        "subject": "Hello {{ name }}",
        "body": "News for {{ city }}.",
        "startTime": datetime.now(UTC).isoformat(),
        "delaySeconds": 0,
        "hourlyLimit": 100_000,
        "draft": True,
        **changes,
    }
    created = await api.campaign(body)
    assert created["status"] == "DRAFT"
    return int(created["campaignId"])


async def csv_rows(count: int) -> AsyncIterator[bytes]:
    yield b"email,name,vars.city\r\n"
    for i in range(count):
        yield f'user{i}@example.com,"User {i}",City {i}\r\n'.encode()
        await asyncio.sleep(0)


async def test_a_streamed_csv_is_scheduled_and_sent(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    env = ENV | {"MAILSCHED_SMTP_URL": smtp_sink.url}
    async with deployed(stack, env, tmp_path) as (app, api):
        await asyncio.to_thread(app.wait_joined)
        campaign_id = await new_draft(api)
        uploaded = await api.client.post(
            f"{URL}/{campaign_id}/recipients",
            content=csv_rows(40),
            headers={"Content-Type": "text/csv", "Idempotency-Key": "e2e-upload"},
        )
        assert uploaded.status_code == 200, uploaded.text
        assert uploaded.json()["added"] == 40
        scheduled = await api.client.post(f"{URL}/{campaign_id}/schedule")
        assert scheduled.status_code == 200, scheduled.text
        await api.completed(campaign_id, within=60)
        events = [e["type"] for e in await api.feed(campaign_id)]
        assert not app.tracebacks(), app.output()

    mine = [a for a in smtp_sink.arrivals if a.campaign_id == campaign_id]
    assert sorted(a.rcpt for a in mine) == sorted(f"user{i}@example.com" for i in range(40))
    letter = next(a.message for a in mine if a.rcpt == "user7@example.com")
    assert letter["Subject"] == "Hello User 7"
    assert "News for City 7." in letter.get_body().get_content()  # type: ignore[union-attr]
    assert events[0] == "campaign.scheduled"
    assert events.count("delivery.sent") == 40
    assert events[-1] == "campaign.completed"


def _cut_upload(base_url: str, key: str, campaign_id: int) -> None:
    """Send an upload's headers and four fifths of its declared body (more than the
    server reads before it stores a batch) over a real socket, then close it."""
    where = urlsplit(base_url)
    body = "".join(f'"user{i}@example.com"\n' for i in range(20_000)).encode()
    head = (
        f"POST {URL}/{campaign_id}/recipients HTTP/1.1\r\n"
        f"Host: {where.hostname}\r\n"
        f"Authorization: Bearer {key}\r\n"
        "Content-Type: application/x-ndjson\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    assert where.hostname is not None and where.port is not None
    with socket.create_connection((where.hostname, where.port)) as conn:
        conn.sendall(head + body[: len(body) * 4 // 5])


async def test_a_client_that_goes_away_mid_upload_leaves_nothing(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    env = ENV | {"MAILSCHED_SMTP_URL": smtp_sink.url}
    async with deployed(stack, env, tmp_path) as (app, api):
        campaign_id = await new_draft(api, subject="Plain", body="Plain text.")
        await asyncio.to_thread(_cut_upload, app.base_url, app.key, campaign_id)
        # The server notices the closed connection, rolls back, and lets the draft go.
        for _ in range(100):
            view = (await api.client.get(f"{URL}/{campaign_id}")).json()
            whole = await api.client.post(
                f"{URL}/{campaign_id}/recipients",
                content=b'"last@example.com"\n',
                headers={"Content-Type": "application/x-ndjson"},
                timeout=30,
            )
            if whole.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert whole.status_code == 200, whole.text
        assert view["recipientCount"] == 0
        # Only the whole upload's one recipient is in the draft.
        assert whole.json()["recipientCount"] == 1
        listed = await api.client.get(f"{URL}/{campaign_id}/deliveries")
        assert [i["recipient"] for i in listed.json()["items"]] == ["last@example.com"]
        assert not app.tracebacks(), app.output()
