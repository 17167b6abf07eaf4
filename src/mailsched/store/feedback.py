"""What comes back after a send: bounces, complaints, soft-bounce streaks, and the
inbound mail that changed nothing. Never commits; the status changes themselves go
through :mod:`mailsched.store.transitions`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
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
) -> None:
    """Keep one bounce or complaint."""
    await conn.execute(
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


async def soft_bounced(conn: AsyncConnection, sent: Sent, now: datetime) -> int:
    """Count a soft bounce of ``sent`` in its address's streak; the streak's length
    after it. A second report about the same delivery counts once."""
    key = normalize(sent.recipient)
    where = (st.user_id == sent.user_id, st.address == key)
    row = (
        await conn.execute(
            select(st.soft_bounces, st.last_delivery_id).where(*where).with_for_update()
        )
    ).first()
    if row is None:
        await conn.execute(
            insert(soft_bounce_streaks).values(
                user_id=sent.user_id,
                address=key,
                soft_bounces=1,
                last_delivery_id=sent.delivery_id,
                updated_at=now,
            )
        )
        return 1
    count, last = int(row[0]), int(row[1])
    if last == sent.delivery_id:
        return count
    await conn.execute(
        update(soft_bounce_streaks)
        .where(*where)
        .values(soft_bounces=st.soft_bounces + 1, last_delivery_id=sent.delivery_id, updated_at=now)
    )
    return count + 1


async def end_streak(conn: AsyncConnection, user_id: int, address: str) -> None:
    """Forget the address's soft bounces (it is suppressed, or allowed again)."""
    await conn.execute(
        delete(soft_bounce_streaks).where(st.user_id == user_id, st.address == normalize(address))
    )


async def sent_counts(conn: AsyncConnection, campaign_id: int) -> tuple[int, int, int]:
    """The campaign's deliveries that were sent, bounced (hard) and complained of: what
    the circuit breaker weighs. Served by ``ix_deliveries_campaign_status``."""
    wanted = [DeliveryStatus.SENT, DeliveryStatus.BOUNCED, DeliveryStatus.COMPLAINED]
    rows = await conn.execute(
        select(d.status, func.count())
        .where(d.campaign_id == campaign_id, d.status.in_([s.value for s in wanted]))
        .group_by(d.status)
    )
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


async def keep(
    conn: AsyncConnection,
    source: str,
    outcome: str,
    raw: bytes,
    mail_from: str | None,
    rcpt_to: str | None,
    now: datetime,
) -> int:
    """Keep an inbound message that changed nothing, for a person to look at; its id."""
    result = await conn.execute(
        insert(inbound_messages).values(
            received_at=now,
            source=source[:16],
            outcome=outcome[:32],
            mail_from=None if mail_from is None else mail_from[:320],
            rcpt_to=None if rcpt_to is None else rcpt_to[:320],
            size=len(raw),
            raw=raw,
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


#: Campaigns the circuit breaker may pause.
BREAKABLE = (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING)
