"""The dead-letter outbox's queries: written with the FAILED outcome, read and
deleted by the relay (see :mod:`mailsched.producer.relay`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.model import DeliveryStatus
from mailsched.store.tables import UTCDateTime, dead_letters, deliveries

dl = dead_letters.c
d = deliveries.c


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """A failed delivery waiting to be published to the dead-letter topic."""

    id: int
    delivery_id: int
    campaign_id: int
    reason: str


async def add_failed(conn: AsyncConnection, delivery_ids: Sequence[int], now: datetime) -> None:
    """A dead letter for each of ``delivery_ids`` that is FAILED, its last error the reason.

    Called in the transaction that records the outcomes, after them: a row whose
    lease was taken over was not marked FAILED by it, and gets none.
    """
    if not delivery_ids:
        return
    failed = select(
        d.id, d.campaign_id, func.coalesce(d.last_error, ""), literal(now, UTCDateTime)
    ).where(d.id.in_(delivery_ids), d.status == DeliveryStatus.FAILED.value)
    await conn.execute(
        insert(dead_letters).from_select(
            ["delivery_id", "campaign_id", "reason", "created_at"], failed
        )
    )


async def oldest(conn: AsyncConnection, limit: int) -> list[DeadLetterRow]:
    """Lock up to ``limit`` dead letters, oldest first.

    ``SKIP LOCKED``: two relays (two dispatchers) take different rows instead of
    publishing the same ones twice.
    """
    rows = (
        await conn.execute(
            select(dl.id, dl.delivery_id, dl.campaign_id, dl.reason)
            .order_by(dl.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    return [DeadLetterRow(r.id, r.delivery_id, r.campaign_id, r.reason) for r in rows]


async def remove(conn: AsyncConnection, rows: Sequence[DeadLetterRow]) -> None:
    """Delete dead letters the queue holds now."""
    if rows:
        await conn.execute(delete(dead_letters).where(dl.id.in_([r.id for r in rows])))
