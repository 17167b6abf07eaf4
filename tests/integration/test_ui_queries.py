"""The dashboard's own reads on each database: the chart's times, read without the
column type's conversion, are the stored instants; the progress feed's rate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.store.db import Database
from mailsched.store.tables import campaigns, deliveries, send_slots
from mailsched.ui import queries
from tests.integration.test_ui import _campaign, _sign_in, app, browser
from tests.support.api import NOW, new_key

__all__ = ["app", "browser"]  # the fixtures, shared with test_ui

T0 = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)


async def test_send_times_are_the_stored_instants_as_naive_utc(db: Database) -> None:
    d = deliveries.c

    async def work(
        conn: AsyncConnection,
    ) -> tuple[tuple[list[datetime], list[datetime]], list[Any]]:
        campaign_id = (
            await conn.execute(
                insert(campaigns).values(
                    user_id=1,
                    subject="s",
                    body="b",
                    start_time=T0,
                    delay_seconds=0,
                    hourly_limit=10,
                    status="RUNNING",
                    recipient_count=3,
                    created_at=T0,
                )
            )
        ).inserted_primary_key[0]
        times = [T0, T0 + timedelta(seconds=1, microseconds=1), T0 + timedelta(hours=25)]
        await conn.execute(
            insert(deliveries),
            [
                {
                    "campaign_id": campaign_id,
                    "recipient": f"u{i}@example.com",
                    "status": "SCHEDULED",
                    "scheduled_at": t,
                    "attempts": 0,
                }
                for i, t in enumerate(times)
            ],
        )
        await conn.execute(
            update(deliveries)
            .where(d.campaign_id == campaign_id, d.scheduled_at == times[1])
            .values(status="SENT", sent_at=times[1] + timedelta(microseconds=7))
        )
        typed = (
            await conn.execute(
                select(d.scheduled_at, d.sent_at).where(d.campaign_id == campaign_id)
            )
        ).all()
        return await queries.send_times(conn, campaign_id), typed

    (planned, sent), typed = await db.run(work)
    assert all(t.tzinfo is None for t in planned + sent)
    assert sorted(t.replace(tzinfo=UTC) for t in planned) == sorted(r.scheduled_at for r in typed)
    assert [t.replace(tzinfo=UTC) for t in sent] == [
        r.sent_at for r in typed if r.sent_at is not None
    ]
    assert sent == [datetime(2026, 11, 28, 12, 0, 1, 123464)]


async def test_the_feeds_rate_counts_each_campaigns_sends_of_the_last_minute(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    """Finished in the minute before now (half-open: exactly a minute ago is out), or
    still in flight; each campaign its own, another user's left out."""
    key = await new_key(db, 1)
    busy, quiet = await _campaign(app, key), await _campaign(app, key)
    theirs = await _campaign(app, await new_key(db, 2), userId=2)
    ago = [10, 30, 59.999, 60, 61, 3600, None]  # seconds before NOW; None: in flight

    async def slots(conn: AsyncConnection) -> None:
        rows = [
            {
                "campaign_id": campaign_id,
                "seq": seq,
                "delivery_id": seq,
                "started_at": NOW - timedelta(hours=2),
                "finished_at": None if s is None else NOW - timedelta(seconds=s),
                "worker": "test",
                "outcome": None if s is None else "SENT",
            }
            for campaign_id in (busy, theirs)
            for seq, s in enumerate(ago, start=1)
        ]
        await conn.execute(insert(send_slots), rows)

    await db.run(slots)
    await _sign_in(browser, key)
    feed = (await browser.get(f"/ui/data/progress?ids={quiet},{theirs},{busy},{busy}")).json()
    rates = [(row["id"], row["rate"]) for row in feed["campaigns"]]
    assert rates == [(quiet, "—"), (busy, "4/min"), (busy, "4/min")]
    page = (await browser.get(f"/ui/campaigns/{busy}")).text
    assert "4/min" in page


async def test_a_bounce_or_a_complaint_after_the_send_still_counts_as_done(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    key = await new_key(db, 1)
    campaign_id = await _campaign(app, key, recipients=[f"u{i}@example.com" for i in range(4)])
    d = deliveries.c

    async def finish(conn: AsyncConnection) -> None:
        ids = (
            await conn.scalars(select(d.id).where(d.campaign_id == campaign_id).order_by(d.id))
        ).all()
        for ident, status in zip(ids, ("SENT", "BOUNCED", "COMPLAINED"), strict=False):
            await conn.execute(
                update(deliveries).where(d.id == ident).values(status=status, sent_at=NOW)
            )

    await db.run(finish)
    await _sign_in(browser, key)
    (row,) = (await browser.get(f"/ui/data/progress?ids={campaign_id}")).json()["campaigns"]
    assert row["percent"] == 75
    # Bounced and complained-of emails were sent: 3 of 4.
    assert row["sent"] == 3
