"""What comes back after a send: bounces, complaints, soft-bounce streaks, and the
inbound mail that changed nothing. Never commits; the status changes themselves go
through :mod:`mailsched.store.transitions`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.model import CampaignStatus, DeliveryStatus
from mailsched.store.suppressions import normalize
from mailsched.store.tables import (
    bounces,
    campaigns,
    deliveries,
    inbound_messages,
    soft_bounce_streaks,
)

d = deliveries.c
b = bounces.c
st = soft_bounce_streaks.c


@dataclass(frozen=True, slots=True)
class Sent:
    """What a report needs to know of the delivery it names."""

    delivery_id: int
    campaign_id: int
    user_id: int
    recipient: str
    status: DeliveryStatus


async def deliveries_named(conn: AsyncConnection, ids: Sequence[int]) -> dict[int, Sent]:
    """The deliveries of ``ids`` that exist, with their campaign's user."""
    if not ids:
        return {}
    rows = await conn.execute(
        select(d.id, d.campaign_id, d.recipient, d.status, campaigns.c.user_id)
        .join(campaigns, campaigns.c.id == d.campaign_id)
        .where(d.id.in_(sorted(set(ids))))
    )
    return {
        r.id: Sent(r.id, r.campaign_id, r.user_id, r.recipient, DeliveryStatus(r.status))
        for r in rows
    }


async def record(
    conn: AsyncConnection,
    sent: Sent,
    kind: str,
    status: str | None,
    diagnostic: str | None,
    source: str,
    now: datetime,
) -> int:
    """Keep one bounce or complaint; its id."""
    result = await conn.execute(
        insert(bounces).values(
            user_id=sent.user_id,
            campaign_id=sent.campaign_id,
            delivery_id=sent.delivery_id,
            recipient=normalize(sent.recipient),
            kind=kind,
            status=(status or None) and status[:16],
            diagnostic=(diagnostic or None) and diagnostic[:500],
            source=source[:16],
            received_at=now,
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


async def soft_bounced(conn: AsyncConnection, sent: Sent, bounce_id: int) -> int:
    """The address's streak once the soft bounce ``bounce_id`` (just recorded) counts:
    how many distinct deliveries to it soft-bounced since the streak started. Reports
    about the same delivery (a server's repeated "delayed" notices) count once."""
    key = normalize(sent.recipient)
    # Start the streak unless it runs: an insert that skips a duplicate, so two
    # reports at once cannot both insert (READ COMMITTED takes no gap locks).
    values = {"user_id": sent.user_id, "address": key, "first_bounce_id": bounce_id}
    if conn.dialect.name == "mysql":
        statement = mysql.insert(soft_bounce_streaks).values(values)
        await conn.execute(statement.on_duplicate_key_update(first_bounce_id=st.first_bounce_id))
    else:
        await conn.execute(
            sqlite.insert(soft_bounce_streaks).values(values).on_conflict_do_nothing()
        )
    first = (
        await conn.execute(
            select(st.first_bounce_id)
            .where(st.user_id == sent.user_id, st.address == key)
            .with_for_update()
        )
    ).scalar_one()
    counted = await conn.execute(
        select(func.count(func.distinct(b.delivery_id))).where(
            b.user_id == sent.user_id,
            b.recipient == key,
            b.kind == "soft",
            b.id >= first,
        )
    )
    return int(counted.scalar_one())


async def end_streak(conn: AsyncConnection, user_id: int, address: str) -> None:
    """Forget the address's soft bounces (it is suppressed, or allowed again)."""
    await conn.execute(
        delete(soft_bounce_streaks).where(st.user_id == user_id, st.address == normalize(address))
    )


async def sent_counts(
    conn: AsyncConnection, campaign_id: int, since: datetime | None = None
) -> tuple[int, int, int]:
    """The campaign's deliveries that were sent (since ``since``, if given), bounced
    (hard) and complained of: what the circuit breaker weighs. Served by
    ``ix_deliveries_campaign_status``."""
    wanted = [DeliveryStatus.SENT, DeliveryStatus.BOUNCED, DeliveryStatus.COMPLAINED]
    query = (
        select(d.status, func.count())
        .where(d.campaign_id == campaign_id, d.status.in_([s.value for s in wanted]))
        .group_by(d.status)
    )
    if since is not None:
        query = query.where(d.sent_at >= since)
    rows = await conn.execute(query)
    counts = {DeliveryStatus(r[0]): int(r[1]) for r in rows}
    bounced = counts.get(DeliveryStatus.BOUNCED, 0)
    complained = counts.get(DeliveryStatus.COMPLAINED, 0)
    return counts.get(DeliveryStatus.SENT, 0) + bounced + complained, bounced, complained


async def set_pause_reason(conn: AsyncConnection, campaign_id: int, reason: str | None) -> None:
    """Say why the campaign paused by itself (``None``: it did not, or no longer is)."""
    await conn.execute(
        update(campaigns)
        .where(campaigns.c.id == campaign_id)
        .values(pause_reason=None if reason is None else reason[:200])
    )


async def resumed(conn: AsyncConnection, campaign_id: int, now: datetime) -> None:
    """A person resumed the campaign: no reason to show any more, and if the circuit
    breaker had paused it, it weighs only the sends from now on (else the next
    bounce would trip it again at once)."""
    c = campaigns.c
    # In this order: MySQL's SET reads the columns already set by the statement.
    await conn.execute(
        update(campaigns)
        .where(c.id == campaign_id)
        .ordered_values(
            (c.breaker_since, case((c.pause_reason.is_not(None), now), else_=c.breaker_since)),
            (c.pause_reason, None),
        )
    )


async def keep(
    conn: AsyncConnection,
    source: str,
    outcome: str,
    raw: bytes,
    mail_from: str | None,
    rcpt_to: str | None,
    now: datetime,
) -> int:
    """Keep an inbound message that changed nothing, for a person to look at (its first
    :data:`KEPT_BYTES`); its id."""
    result = await conn.execute(
        insert(inbound_messages).values(
            received_at=now,
            source=source[:16],
            outcome=outcome[:32],
            mail_from=None if mail_from is None else mail_from[:320],
            rcpt_to=None if rcpt_to is None else rcpt_to[:320],
            size=len(raw),
            raw=raw[:KEPT_BYTES],
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


async def prune_kept(conn: AsyncConnection, before: datetime, limit: int) -> int:
    """Forget up to ``limit`` kept messages received before ``before``."""
    m = inbound_messages.c
    ids = [
        r.id
        for r in await conn.execute(
            select(m.id).where(m.received_at < before).order_by(m.id).limit(limit)
        )
    ]
    if not ids:
        return 0
    await conn.execute(delete(inbound_messages).where(m.id.in_(ids)))
    return len(ids)


#: How much of a kept inbound message is stored: enough to see what it is.
KEPT_BYTES = 256 * 1024

#: Campaigns the circuit breaker may pause.
BREAKABLE = (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING)
