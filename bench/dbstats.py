"""What the bench reads from (and bulk-writes to) a stack's database."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.model import DeliveryStatus
from mailsched.store.db import Database
from mailsched.store.dispatch import claim_due
from mailsched.store.tables import campaigns, deliveries, send_slots

d = deliveries.c
FINAL = [DeliveryStatus.SENT, DeliveryStatus.FAILED]


async def finished(db: Database) -> int:
    """Deliveries SENT or FAILED."""

    async def work(conn: AsyncConnection) -> int:
        query = select(func.count()).select_from(deliveries).where(d.status.in_(FINAL))
        return int((await conn.execute(query)).scalar_one())

    return await db.run(work)


async def send_span(db: Database) -> tuple[int, float]:
    """How many were SENT, and seconds from the first ``sent_at`` to the last."""

    async def work(conn: AsyncConnection) -> tuple[int, float]:
        query = select(func.count(), func.min(d.sent_at), func.max(d.sent_at)).where(
            d.status == DeliveryStatus.SENT
        )
        count, first, last = (await conn.execute(query)).one()
        if not count:
            return 0, 0.0
        return int(count), (last - first).total_seconds()

    return await db.run(work)


async def lateness(db: Database) -> dict[str, list[float]]:
    """Seconds each SENT delivery was late: ``sent_at`` and its last slot's ``started_at``
    behind its first plan (``planned_at``, or ``scheduled_at`` when no re-plan moved
    it), and ``started_at`` behind the last plan (``replanned``: what re-planning hid)."""

    async def work(conn: AsyncConnection) -> dict[str, list[float]]:
        started = (
            select(send_slots.c.delivery_id, func.max(send_slots.c.started_at).label("at"))
            .group_by(send_slots.c.delivery_id)
            .subquery()
        )
        query = (
            select(d.scheduled_at, d.planned_at, d.sent_at, started.c.at)
            .join(started, started.c.delivery_id == d.id)
            .where(d.status == DeliveryStatus.SENT)
        )
        rows = (await conn.execute(query)).all()
        sent = [(r.sent_at - (r.planned_at or r.scheduled_at)).total_seconds() for r in rows]
        start = [(_utc(r.at) - (r.planned_at or r.scheduled_at)).total_seconds() for r in rows]
        last = [(_utc(r.at) - r.scheduled_at).total_seconds() for r in rows]
        return {"sent": sent, "started": start, "replanned": last}

    return await db.run(work)


def _utc(value: datetime) -> datetime:
    # A subquery's max() loses the column type: MariaDB hands back naive UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max, in milliseconds."""
    if not values:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    ordered = sorted(values)
    cuts = (
        statistics.quantiles(ordered, n=100, method="inclusive")
        if len(ordered) > 1
        else [ordered[0]] * 99
    )
    return {
        "p50_ms": round(cuts[49] * 1000, 1),
        "p99_ms": round(cuts[98] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


async def bulk_backlog(db: Database, rows: int, per_campaign: int, first: datetime) -> float:
    """Insert ``rows`` SCHEDULED deliveries planned a second apart from ``first`` (weeks ahead),
    straight through SQLAlchemy Core, in campaigns of ``per_campaign``; return seconds taken."""
    started = time.perf_counter()
    done = 0
    while done < rows:
        size = min(per_campaign, rows - done)

        async def work(conn: AsyncConnection, size: int = size, offset: int = done) -> None:
            now = datetime.now(UTC)
            result = await conn.execute(
                insert(campaigns).values(
                    user_id=1,
                    subject="backlog",
                    body="backlog",
                    start_time=first,
                    delay_seconds=1,
                    hourly_limit=3600,
                    status="SCHEDULED",
                    recipient_count=size,
                    slot_seq=0,
                    created_at=now,
                )
            )
            campaign_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            for chunk in range(0, size, 10_000):
                await conn.execute(
                    insert(deliveries),
                    [
                        {
                            "campaign_id": campaign_id,
                            "recipient": f"b{offset + i}@example.com",
                            "scheduled_at": first + timedelta(seconds=offset + i),
                            "status": DeliveryStatus.SCHEDULED,
                            "attempts": 0,
                        }
                        for i in range(chunk, min(chunk + 10_000, size))
                    ],
                )

        await db.run(work)
        done += size
    return time.perf_counter() - started


async def time_claim_due(db: Database, repeats: int = 20) -> dict[str, Any]:
    """Time :func:`claim_due` (rolled back, so nothing is claimed) and EXPLAIN its SELECT."""
    captured: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "deliveries" in statement:
            captured.append((statement, params))

    timings: list[float] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        for _ in range(repeats):
            async with db.engine.connect() as conn, conn.begin() as tx:
                now = datetime.now(UTC)
                started = time.perf_counter()
                await claim_due(conn, now + timedelta(seconds=1), 1000, now)
                timings.append(time.perf_counter() - started)
                await tx.rollback()
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
    plan = await _explain(db, *captured[-1]) if captured else []
    return {
        "median_ms": round(statistics.median(timings) * 1000, 2),
        "max_ms": round(max(timings) * 1000, 2),
        "explain": plan,
    }


async def _explain(db: Database, statement: str, params: Any) -> list[dict[str, Any]]:
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            await cursor.execute("EXPLAIN " + statement, params)
            names = [c[0] for c in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]
        finally:
            await cursor.close()


async def server_version(db: Database) -> str:
    async with db.engine.connect() as conn:
        return str((await conn.execute(text("SELECT VERSION()"))).scalar_one())
