"""The store's concurrency promises, on each database: claims never overlap."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.model import DeliveryStatus
from mailsched.queue import DueDelivery
from mailsched.store import dispatch
from mailsched.store.campaigns import NewCampaign, NewDelivery, insert_campaign
from mailsched.store.db import Database

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


async def seed(db: Database, count: int) -> int:
    new = NewCampaign(1, "s", "b", NOW, 0, 1000)
    recipients = [NewDelivery(f"u{i}@example.com", NOW) for i in range(count)]

    async def work(conn: AsyncConnection) -> int:
        return await insert_campaign(conn, new, recipients, NOW)

    return await db.run(work)


async def test_concurrent_dispatchers_never_claim_the_same_delivery(db: Database) -> None:
    await seed(db, 3000)
    claimed: list[list[DueDelivery]] = []

    async def dispatcher() -> None:
        while True:

            async def work(conn: AsyncConnection) -> list[DueDelivery]:
                due = await dispatch.claim_due(conn, NOW, 250, NOW)
                await asyncio.sleep(0.01)  # hold the locks while "publishing"
                return due

            batch = await db.run(work)
            if not batch:
                return
            claimed.append(batch)

    await asyncio.gather(*(dispatcher() for _ in range(4)))
    ids = [d.delivery_id for batch in claimed for d in batch]
    assert len(ids) == 3000
    assert len(set(ids)) == 3000
    counts = await db.run(dispatch.count_by_status)
    assert counts[DeliveryStatus.QUEUED] == 3000


async def test_the_claim_query_uses_the_due_index(db: Database) -> None:
    if db.dialect != "mysql":
        return  # SQLite has one writer; the plan that matters is MySQL's
    await seed(db, 200)

    async def explain(conn: AsyncConnection) -> list[dict[str, Any]]:
        query = (
            "EXPLAIN SELECT id, campaign_id FROM deliveries WHERE status = 'SCHEDULED' "
            "AND scheduled_at <= :t ORDER BY scheduled_at LIMIT 1000 FOR UPDATE SKIP LOCKED"
        )
        rows = await conn.execute(text(query), {"t": NOW.replace(tzinfo=None)})
        return [dict(r._mapping) for r in rows]

    (plan,) = await db.run(explain)
    assert plan["key"] == "ix_deliveries_due", plan
    assert "filesort" not in str(plan.get("Extra") or "")


async def test_expired_leases_are_taken_over_and_counted(db: Database) -> None:
    await seed(db, 2)

    async def lease_out(conn: AsyncConnection) -> None:
        await conn.execute(
            text("UPDATE deliveries SET status='SENDING', lease_owner='gone', lease_until=:t"),
            {"t": (NOW - timedelta(seconds=1)).replace(tzinfo=None)},
        )

    await db.run(lease_out)

    async def reap(conn: AsyncConnection) -> int:
        return await dispatch.expire_leases(conn, NOW, 100)

    assert await db.run(reap) == 2
    assert await db.run(reap) == 0
    counts = await db.run(dispatch.count_by_status)
    assert counts[DeliveryStatus.SCHEDULED] == 2
