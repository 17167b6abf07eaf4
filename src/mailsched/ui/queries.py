"""Read-only queries of one campaign's deliveries for its dashboard page, and of the
list's send rates.

The store has no function for these (the deliveries table itself pages through
the store's ``list_deliveries``), so they live here, beside their one user. None
of them checks ownership: the caller does that first through
:meth:`Campaigns.get`. Each is one statement served by the
``(campaign_id, status, scheduled_at)`` index or a scan of the campaign's own rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import NullType

from mailsched.domain.model import DeliveryStatus
from mailsched.store.tables import deliveries, send_slots

#: A column's value as the driver returns it, with no conversion.
_AS_STORED = NullType()
#: What "due next" means: deliveries that have not started sending.
_WAITING = (DeliveryStatus.SCHEDULED.value, DeliveryStatus.QUEUED.value)


@dataclass(frozen=True, slots=True)
class Due:
    """One of the next sends."""

    delivery_id: int
    recipient: str
    scheduled_at: datetime
    status: DeliveryStatus


async def send_times(
    conn: AsyncConnection, campaign_id: int
) -> tuple[list[datetime], list[datetime]]:
    """The campaign's planned times (every delivery's ``scheduled_at``) and real send
    times (``sent_at`` where set), for the chart, as naive UTC datetimes (the
    chart reads naive times as UTC).

    Cost: one query reading two columns of every delivery of the campaign, so
    100,000 pairs of datetimes for the largest one: the whole page then took
    0.8-1.1 s on SQLite and MariaDB. The values are taken as the driver gives
    them, without :class:`~mailsched.store.tables.UTCDateTime`'s conversion of
    each to an aware datetime, which was about a third of this read (see
    docs/benchmarks.md, Dashboard). The page reads it once per load; the polls
    read only the counts.
    """
    d = deliveries.c
    rows = (
        await conn.execute(
            select(
                type_coerce(d.scheduled_at, _AS_STORED), type_coerce(d.sent_at, _AS_STORED)
            ).where(d.campaign_id == campaign_id)
        )
    ).all()
    # datetime from MariaDB's driver, str from SQLite's.
    planned: list[Any] = [scheduled_at for scheduled_at, _ in rows]
    sent: list[Any] = [sent_at for _, sent_at in rows if sent_at is not None]
    if conn.dialect.name == "sqlite":  # SQLite keeps them as ISO 8601 text
        return list(map(datetime.fromisoformat, planned)), list(map(datetime.fromisoformat, sent))
    return planned, sent


async def finishes(
    conn: AsyncConnection, campaign_ids: list[int], since: datetime
) -> dict[int, int]:
    """How many sends of each campaign finished after ``since`` or are still in flight,
    in one statement for all of them (a campaign with none is left out).

    The same rows as the store's ``recent_finishes`` counts, without its cap: a
    scan of each campaign's send slots by primary key, as that one was.
    """
    s = send_slots.c
    query = (
        select(s.campaign_id, func.count().label("n"))
        .where(
            s.campaign_id.in_(campaign_ids),
            or_(s.finished_at.is_(None), s.finished_at > since),
        )
        .group_by(s.campaign_id)
    )
    return {int(r.campaign_id): int(r.n) for r in await conn.execute(query)}


async def next_due(conn: AsyncConnection, campaign_id: int, limit: int) -> list[Due]:
    """The first ``limit`` SCHEDULED or QUEUED deliveries by planned time."""
    d = deliveries.c
    query = (
        select(d.id, d.recipient, d.scheduled_at, d.status)
        .where(d.campaign_id == campaign_id, d.status.in_(_WAITING))
        .order_by(d.scheduled_at, d.id)
        .limit(limit)
    )
    return [
        Due(r.id, r.recipient, r.scheduled_at, DeliveryStatus(r.status))
        for r in await conn.execute(query)
    ]


async def top_errors(conn: AsyncConnection, campaign_id: int, limit: int) -> list[tuple[str, int]]:
    """The campaign's most frequent ``last_error`` values (SMTP replies), with counts."""
    d = deliveries.c
    count = func.count().label("n")
    query = (
        select(d.last_error, count)
        .where(d.campaign_id == campaign_id, d.last_error.is_not(None))
        .group_by(d.last_error)
        .order_by(count.desc(), d.last_error)
        .limit(limit)
    )
    return [(str(r.last_error), int(r.n)) for r in await conn.execute(query)]
