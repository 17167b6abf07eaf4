"""The dispatcher's queries: claim due deliveries, and recover ones the queue lost."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.events import timestamp
from mailsched.domain.model import DISPATCH, REQUEUE, TAKE_OVER, DeliveryStatus, SendOutcome
from mailsched.queue import DueDelivery
from mailsched.store import transitions
from mailsched.store.tables import deliveries, send_slots

d = deliveries.c

_EXPIRED = "lease expired: the worker stopped before recording the outcome"


@dataclass(frozen=True, slots=True)
class Due:
    """What one dispatch pass claimed: the deliveries still on their plan, then those
    already behind it. Iterating gives them all, on time first."""

    on_time: list[DueDelivery]
    behind: list[DueDelivery] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.on_time) + len(self.behind)

    def __iter__(self) -> Iterator[DueDelivery]:
        return itertools.chain(self.on_time, self.behind)


async def claim_due(
    conn: AsyncConnection,
    horizon: datetime,
    limit: int,
    now: datetime,
    behind_before: datetime | None = None,
) -> Due:
    """Lock up to ``limit`` SCHEDULED deliveries planned at or before ``horizon`` and mark them
    QUEUED (in this transaction: the caller publishes them, then commits).

    With ``behind_before``, those planned from then on come first (on time), and
    those planned before it (behind) only fill what room is left: a backlog,
    however large, never holds back a delivery that can still be on time.

    ``SKIP LOCKED`` lets several dispatchers claim side by side without waiting
    for, or taking, each other's rows; ``ix_deliveries_due`` serves each range.
    """
    planned = d.scheduled_at
    if behind_before is None:
        on_time = await _lock_due(conn, (planned <= horizon,), limit)
        behind: list[DueDelivery] = []
    else:
        on_time = await _lock_due(conn, (planned >= behind_before, planned <= horizon), limit)
        room = limit - len(on_time)
        behind = await _lock_due(conn, (planned < behind_before,), room) if room else []
    due = Due(on_time, behind)
    if due:
        ids = [x.delivery_id for x in due]
        await transitions.move(conn, DISPATCH, now, ids=ids, values={"queued_at": now})
    return due


async def _lock_due(
    conn: AsyncConnection, planned: tuple[ColumnElement[bool], ...], limit: int
) -> list[DueDelivery]:
    query = (
        select(d.id, d.campaign_id)
        .where(d.status == DeliveryStatus.SCHEDULED, *planned)
        .order_by(d.scheduled_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [DueDelivery(r.id, r.campaign_id) for r in await conn.execute(query)]


async def requeue_stale(
    conn: AsyncConnection, queued_before: datetime, limit: int, now: datetime
) -> int:
    """Put back to SCHEDULED deliveries QUEUED before ``queued_before``: their message was lost
    (a wiped topic, an in-process queue that died with its process). Returns how many."""
    stale = (d.status == DeliveryStatus.QUEUED, d.queued_at < queued_before)
    ids = await _lock_ids(conn, stale, limit)
    if not ids:
        return 0
    # The condition again: a worker may have moved a row since the select.
    return await transitions.move(conn, REQUEUE, now, ids=ids, when=stale[1:])


async def expire_leases(conn: AsyncConnection, now: datetime, limit: int) -> int:
    """Take SENDING deliveries whose lease has run out back to SCHEDULED, due now.

    Their worker died or stalled somewhere between claim and record, maybe after
    the server's 250 reply: sending again is the at-least-once choice. Their
    send slots are closed at ``now``, the latest the lost send can have ended.
    """
    expired = (d.status == DeliveryStatus.SENDING, d.lease_until < now)
    ids = await _lock_ids(conn, expired, limit)
    if not ids:
        return 0
    facts = await transitions.lock(conn, [d.id.in_(ids), *expired])
    if not facts:
        return 0
    moved = await transitions.move_each(
        conn,
        TAKE_OVER,
        now,
        {i: (now,) for i in facts},
        ("scheduled_at",),
        facts=facts,
        same={"lease_owner": None, "lease_until": None, "last_error": _EXPIRED},
        fields={i: {"retryAt": timestamp(now), "reason": _EXPIRED} for i in facts},
    )
    slots = send_slots.c
    open_slots = (
        await conn.execute(
            select(slots.delivery_id, slots.seq).where(
                slots.delivery_id.in_(list(facts)), slots.finished_at.is_(None)
            )
        )
    ).all()
    await conn.execute(
        update(send_slots)
        .where(slots.delivery_id.in_(list(facts)), slots.finished_at.is_(None))
        .values(finished_at=now, outcome=SendOutcome.ORPHANED)
    )
    transitions.stage_possible_duplicates(
        conn,
        now,
        (
            (r.delivery_id, facts[r.delivery_id], r.seq, SendOutcome.ORPHANED, _EXPIRED)
            for r in open_slots
        ),
    )
    return moved


async def reset_queued(conn: AsyncConnection, now: datetime) -> int:
    """Put every QUEUED delivery back to SCHEDULED (an in-process queue starts empty)."""
    return await transitions.move(conn, REQUEUE, now)


async def _lock_ids(
    conn: AsyncConnection, where: tuple[ColumnElement[bool], ...], limit: int
) -> list[int]:
    query = select(d.id).where(*where).limit(limit).with_for_update(skip_locked=True)
    return [r.id for r in await conn.execute(query)]


async def count_by_status(conn: AsyncConnection) -> dict[DeliveryStatus, int]:
    """How many deliveries there are in each status (an index scan of ``ix_deliveries_due``)."""
    rows = await conn.execute(select(d.status, func.count()).group_by(d.status))
    counts = dict.fromkeys(DeliveryStatus, 0)
    for status, count in rows:
        counts[DeliveryStatus(status)] = count
    return counts
