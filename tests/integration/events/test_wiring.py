"""The events' way out, wired as the commands wire it, on each stack: every event of a
campaign is relayed (to the webhooks' table directly, as in ``mailsched run``, or
through the Kafka events topic and the reader of ``mailsched webhooks``) and fanned
out to the user's endpoint once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.bootstrap import Components
from mailsched.config import Settings
from mailsched.producer.relay import EVENT_CURSOR
from mailsched.store import events
from mailsched.store.tables import events as events_table
from mailsched.store.tables import webhook_messages
from mailsched.store.webhooks import add_endpoint
from tests.conftest import Stack
from tests.integration.test_flow import USER, addresses, request
from tests.support.running import completed, create, running, wait_until
from tests.support.smtp_sink import SmtpSink


@pytest.fixture
def settings(stack: Stack, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> Settings:
    env = stack.env() | {
        "MAILSCHED_SMTP_URL": smtp_sink.url,
        "MAILSCHED_DISPATCH_INTERVAL_SECONDS": "0.05",
        "MAILSCHED_HOLD_SECONDS": "0.5",
        # The endpoint is on loopback, and nobody answers there: its messages wait.
        "MAILSCHED_WEBHOOK_ALLOW_PRIVATE_URLS": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.load()


async def where(app: Components, endpoint_id: int) -> tuple[list[int], list[int], int, int]:
    """The user's event ids, the endpoint's messages' event ids, the relay's position
    and the last event id."""

    async def work(conn: AsyncConnection) -> tuple[list[int], list[int], int, int]:
        written = await conn.execute(
            select(events_table.c.id).where(events_table.c.user_id == USER).order_by("id")
        )
        fanned = await conn.execute(
            select(webhook_messages.c.event_id)
            .where(webhook_messages.c.endpoint_id == endpoint_id)
            .order_by("event_id")
        )
        return (
            list(written.scalars()),
            list(fanned.scalars()),
            await events.cursor(conn, EVENT_CURSOR),
            await events.last_id(conn),
        )

    return await app.db.run(work)


async def test_every_event_of_a_campaign_reaches_the_endpoints_table(settings: Settings) -> None:
    async with running(settings, webhooks=True) as app:

        async def endpoint(conn: AsyncConnection) -> int:
            added = await add_endpoint(
                conn,
                USER,
                "http://127.0.0.1:9/hook",
                None,
                None,
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                False,
                datetime.now(UTC),
            )
            return added.id

        endpoint_id = await app.db.run(endpoint)
        created = await create(app, request(addresses(4)))
        await wait_until(lambda: completed(app, created.campaign_id), within=30)

        async def all_fanned_out() -> bool:
            written, fanned, position, last = await where(app, endpoint_id)
            return bool(written) and fanned == written and position == last

        await wait_until(all_fanned_out, within=30)
        written, _, _, _ = await where(app, endpoint_id)
        # The campaign's scheduling, start, four sends and completion at least.
        assert len(written) >= 7
        assert app.metrics.registry.get_sample_value("mailsched_events_relayed_total") == len(
            written
        )
