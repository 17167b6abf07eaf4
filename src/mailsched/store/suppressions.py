"""Suppressed addresses: per user, the recipients that must not be mailed again.

Addresses are stored lower-cased and matched exactly against the lower-cased
recipient. The comparison is made again in Python after each query, because a
MySQL column under a case- and accent-insensitive collation (``utf8mb4_unicode_ci``
says ``jörg@x`` = ``jorg@x``) matches more than the same address.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.model import SUPPRESS, UNCLAIMED_DELIVERY_STATUSES, CampaignStatus
from mailsched.store import transitions
from mailsched.store.campaigns import complete_if_done
from mailsched.store.tables import campaigns, deliveries, suppressions

s = suppressions.c
d = deliveries.c

#: Addresses per ``IN (...)``: keeps statements small for a 100k-recipient campaign.
_CHUNK = 1000

#: Campaigns that can still have deliveries to suppress.
_LIVE_CAMPAIGNS = [CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED]


@dataclass(frozen=True, slots=True)
class Suppression:
    """One suppressed address."""

    address: str
    reason: str
    created_at: datetime
    detail: str | None = None
    expires_at: datetime | None = None


def normalize(address: str) -> str:
    """The form addresses are stored and compared in."""
    return address.lower()


async def add(
    conn: AsyncConnection,
    user_id: int,
    address: str,
    reason: str,
    now: datetime,
    *,
    detail: str | None = None,
    expires_at: datetime | None = None,
) -> bool:
    """Suppress ``address`` for ``user_id``; false if it already was (the first reason
    stays). An expired suppression, or an expiring one when a permanent one is added,
    is replaced (true); an expiring one is extended by a later expiring one (false).

    Two concurrent adds of one address both succeed, and may both return true.
    """
    key = normalize(address)
    existing = (
        await conn.execute(
            select(s.address, s.expires_at).where(s.user_id == user_id, s.address == key)
        )
    ).first()
    values = {
        "user_id": user_id,
        "address": key,
        "reason": reason[:32],
        "created_at": now,
        "detail": None if detail is None else detail[:500],
        "expires_at": expires_at,
    }
    if existing is not None:
        where = (s.user_id == user_id, s.address == key)
        if existing.expires_at is None:
            return False
        if existing.expires_at <= now or expires_at is None:
            # Expired, or an expiring one made permanent: the new one replaces it.
            await conn.execute(update(suppressions).where(*where).values(values))
            return True
        if expires_at > existing.expires_at:
            # Bounced again: it lasts from the latest bounce.
            await conn.execute(update(suppressions).where(*where).values(expires_at=expires_at))
        return False
    # Skip a duplicate rather than fail: the transaction stays usable.
    if conn.dialect.name == "mysql":
        insert = mysql.insert(suppressions).values(values)
        await conn.execute(insert.on_duplicate_key_update(reason=s.reason))
    else:
        await conn.execute(sqlite.insert(suppressions).values(values).on_conflict_do_nothing())
    return True


async def remove(conn: AsyncConnection, user_id: int, address: str) -> bool:
    """Mail ``address`` again; false if it was not suppressed."""
    key = normalize(address)
    stored = await conn.execute(
        select(s.address).where(s.user_id == user_id, s.address == key).with_for_update()
    )
    if key not in {r.address for r in stored}:
        return False
    # At most one row compares equal to key under any collation (it is the primary
    # key), and that row is key itself.
    result = await conn.execute(delete(suppressions).where(s.user_id == user_id, s.address == key))
    return result.rowcount > 0


async def page(
    conn: AsyncConnection, user_id: int, after: str | None, limit: int, now: datetime
) -> list[Suppression]:
    """The user's suppressions in force at ``now``, in address order, starting after
    ``after``."""
    query = select(s.address, s.reason, s.created_at, s.detail, s.expires_at).where(
        s.user_id == user_id, or_(s.expires_at.is_(None), s.expires_at > now)
    )
    if after is not None:
        query = query.where(s.address > normalize(after))
    rows = await conn.execute(query.order_by(s.address).limit(limit))
    return [Suppression(r.address, r.reason, r.created_at, r.detail, r.expires_at) for r in rows]


async def suppressed(
    conn: AsyncConnection, user_id: int, addresses: Sequence[str], now: datetime
) -> set[str]:
    """Those of ``addresses`` (as given) that ``user_id`` has suppressed at ``now``,
    ignoring case (an expired suppression no longer counts).

    One primary-key ``IN`` query per thousand addresses.
    """
    wanted = {normalize(a) for a in addresses}
    found: set[str] = set()
    keys = sorted(wanted)
    for start in range(0, len(keys), _CHUNK):
        rows = await conn.execute(
            select(s.address).where(
                s.user_id == user_id,
                s.address.in_(keys[start : start + _CHUNK]),
                or_(s.expires_at.is_(None), s.expires_at > now),
            )
        )
        found.update(r.address for r in rows)
    return {a for a in addresses if normalize(a) in found}


async def mark_suppressed(conn: AsyncConnection, delivery_ids: Iterable[int], now: datetime) -> int:
    """Move those of ``delivery_ids`` not yet claimed (SCHEDULED, QUEUED, PAUSED) to
    SUPPRESSED; return how many moved."""
    ids = list(delivery_ids)
    if not ids:
        return 0
    fields = {"reason": "the address was suppressed"}
    return await transitions.move(conn, SUPPRESS, now, ids=ids, fields=fields)


async def suppress_pending(conn: AsyncConnection, user_id: int, address: str, now: datetime) -> int:
    """Suppress every delivery of ``user_id``'s campaigns to ``address`` not yet claimed.

    Deliveries a worker has claimed already (SENDING) go out. A campaign left with
    nothing to send completes. Returns how many deliveries were suppressed.
    """
    key = normalize(address)
    live = select(campaigns.c.id).where(
        campaigns.c.user_id == user_id, campaigns.c.status.in_(_LIVE_CAMPAIGNS)
    )
    # Served by ix_campaigns_user, then ix_deliveries_campaign_status per campaign.
    rows = await conn.execute(
        select(d.id, d.campaign_id, d.recipient).where(
            d.campaign_id.in_(live),
            d.status.in_(list(UNCLAIMED_DELIVERY_STATUSES)),
            func.lower(d.recipient) == key,
        )
    )
    matches = [(r.id, r.campaign_id) for r in rows if normalize(r.recipient) == key]
    moved = await mark_suppressed(conn, [did for did, _ in matches], now)
    for campaign_id in sorted({cid for _, cid in matches}):
        await complete_if_done(conn, campaign_id, now)
    return moved


async def has_any(conn: AsyncConnection, user_id: int) -> bool:
    """Whether the user has suppressed any address (most have not: skip the lookups)."""
    query = select(suppressions.c.address).where(suppressions.c.user_id == user_id).limit(1)
    return (await conn.execute(query)).first() is not None
