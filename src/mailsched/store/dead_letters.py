"""The dead-letter outbox's queries: written with the FAILED outcome, read and
deleted by the relay (see :mod:`mailsched.producer.relay`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.store.tables import dead_letters
from mailsched.store.transitions import Facts

dl = dead_letters.c

#: The width of ``dead_letters.reason`` (and of ``deliveries.last_error``).
_REASON_CHARS = 500


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """A failed delivery waiting to be published to the dead-letter topic."""

    id: int
    delivery_id: int
    campaign_id: int
    reason: str


async def add_failed(
    conn: AsyncConnection,
    failed: Sequence[tuple[int, str]],
    held: Mapping[int, Facts],
    now: datetime,
) -> None:
    """A dead letter for each ``(delivery id, reason)`` of ``failed``, in the transaction
    that records them FAILED.

    ``held`` are the rows the caller holds locked under its lease
    (:func:`mailsched.store.transitions.held`): exactly those move to FAILED. A row
    whose lease was taken over gets none from this late writer: the reaper took it
    back, and the worker that failed it since wrote its dead letter.
    """
    rows = [
        {
            "delivery_id": did,
            "campaign_id": held[did].campaign_id,
            "reason": reason[:_REASON_CHARS],
            "created_at": now,
        }
        for did, reason in failed
        if did in held
    ]
    if rows:
        await conn.execute(insert(dead_letters), rows)


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
