"""Webhook endpoints and their attempts: what the API reads and writes, and fan-out reads.

The messages waiting for endpoints are in :mod:`mailsched.store.webhook_messages`.
An endpoint is never deleted, only marked ``deleted_at`` (its id must never name
another endpoint); its secret is emptied then, as nothing will be signed with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.store.tables import webhook_attempts, webhook_endpoints

we = webhook_endpoints.c
wa = webhook_attempts.c

#: User ids per ``IN (...)`` in a fan-out's read of endpoints.
_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A webhook endpoint, without its secret."""

    id: int
    user_id: int
    url: str
    description: str | None
    #: The subscribed event types; ``None`` for all, including types added later.
    event_types: tuple[str, ...] | None
    batch: bool
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None

    def wants(self, event_type: str) -> bool:
        """Whether events of ``event_type`` go to this endpoint."""
        return self.event_types is None or event_type in self.event_types


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request made to an endpoint; ``id`` is 0 until stored."""

    endpoint_id: int
    #: The ``webhook-id`` header: the event id, or ``batch_<key>``.
    message_id: str
    #: The first event the request carried, and how many it carried.
    event_id: int
    event_count: int
    attempted_at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None
    id: int = 0


async def add_endpoint(
    conn: AsyncConnection,
    user_id: int,
    url: str,
    description: str | None,
    event_types: Sequence[str] | None,
    secret: str,
    batch: bool,
    now: datetime,
) -> Endpoint:
    """Store a new endpoint; return it."""
    types = None if event_types is None else tuple(event_types)
    result = await conn.execute(
        insert(webhook_endpoints).values(
            user_id=user_id,
            url=url,
            description=description,
            event_types=None if types is None else json.dumps(types),
            secret=secret,
            batch=batch,
            created_at=now,
        )
    )
    key = result.inserted_primary_key
    assert key is not None, "an INSERT of one row has its key"
    endpoint_id = int(key[0])
    return Endpoint(endpoint_id, user_id, url, description, types, batch, now, None, None)


async def live_count(conn: AsyncConnection, user_id: int) -> int:
    """How many endpoints ``user_id`` has (disabled ones count; deleted ones do not)."""
    query = select(func.count()).where(we.user_id == user_id, we.deleted_at.is_(None))
    return int((await conn.execute(query)).scalar_one())


async def page(conn: AsyncConnection, user_id: int, after: int, limit: int) -> list[Endpoint]:
    """The user's endpoints with ids after ``after``, oldest first, at most ``limit``."""
    query = (
        select(webhook_endpoints)
        .where(we.user_id == user_id, we.deleted_at.is_(None), we.id > after)
        .order_by(we.id)
        .limit(limit)
    )
    return [_endpoint(row) for row in await conn.execute(query)]


async def find(conn: AsyncConnection, user_id: int, endpoint_id: int) -> Endpoint | None:
    """The user's endpoint ``endpoint_id``, unless it is another user's or deleted."""
    query = select(webhook_endpoints).where(
        we.id == endpoint_id, we.user_id == user_id, we.deleted_at.is_(None)
    )
    row = (await conn.execute(query)).first()
    return None if row is None else _endpoint(row)


async def delete_endpoint(
    conn: AsyncConnection, user_id: int, endpoint_id: int, now: datetime
) -> bool:
    """Mark the endpoint deleted; false if there was none to delete. Its waiting
    messages are dropped by the deliverer, in chunks (there may be millions)."""
    result = await conn.execute(
        update(webhook_endpoints)
        .where(we.id == endpoint_id, we.user_id == user_id, we.deleted_at.is_(None))
        .values(deleted_at=now, secret="")
    )
    return result.rowcount > 0


async def subscribers(conn: AsyncConnection, user_ids: Iterable[int]) -> list[Endpoint]:
    """The enabled endpoints of these users: one query per thousand users."""
    ids = sorted(set(user_ids))
    found: list[Endpoint] = []
    for start in range(0, len(ids), _CHUNK):
        query = select(webhook_endpoints).where(
            we.user_id.in_(ids[start : start + _CHUNK]),
            we.deleted_at.is_(None),
            we.disabled_at.is_(None),
        )
        found.extend(_endpoint(row) for row in await conn.execute(query))
    return found


async def disable(conn: AsyncConnection, endpoint_id: int, now: datetime, reason: str) -> bool:
    """Stop sending to the endpoint; false if it was disabled already."""
    result = await conn.execute(
        update(webhook_endpoints)
        .where(we.id == endpoint_id, we.disabled_at.is_(None))
        .values(disabled_at=now, disabled_reason=reason[:200])
    )
    return result.rowcount > 0


async def record_attempts(conn: AsyncConnection, attempts: Sequence[Attempt]) -> None:
    """Store these attempts."""
    if not attempts:
        return
    await conn.execute(
        insert(webhook_attempts),
        [
            {
                "endpoint_id": a.endpoint_id,
                "message_id": a.message_id,
                "event_id": a.event_id,
                "event_count": a.event_count,
                "attempted_at": a.attempted_at,
                "status_code": a.status_code,
                "duration_ms": a.duration_ms,
                "error": None if a.error is None else a.error[:500],
            }
            for a in attempts
        ],
    )


async def attempts_page(
    conn: AsyncConnection, endpoint_id: int, before: int | None, limit: int
) -> list[Attempt]:
    """The endpoint's attempts, newest first, with ids below ``before`` when given."""
    query = select(webhook_attempts).where(wa.endpoint_id == endpoint_id)
    if before is not None:
        query = query.where(wa.id < before)
    query = query.order_by(wa.id.desc()).limit(limit)
    return [
        Attempt(
            endpoint_id=r.endpoint_id,
            message_id=r.message_id,
            event_id=r.event_id,
            event_count=r.event_count,
            attempted_at=r.attempted_at,
            status_code=r.status_code,
            duration_ms=r.duration_ms,
            error=r.error,
            id=r.id,
        )
        for r in await conn.execute(query)
    ]


async def prune_attempts(conn: AsyncConnection, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` of the oldest attempts made before ``before``; return how
    many. A primary-key range, as :func:`mailsched.store.events.prune`: call it again
    until it returns less than ``limit``."""
    rows = (await conn.execute(select(wa.id, wa.attempted_at).order_by(wa.id).limit(limit))).all()
    old = [r.id for r in rows if r.attempted_at < before]
    if not old:
        return 0
    result = await conn.execute(
        delete(webhook_attempts).where(wa.id <= max(old), wa.attempted_at < before)
    )
    return result.rowcount


def _endpoint(r: Row[Any]) -> Endpoint:
    types = None if r.event_types is None else tuple(json.loads(r.event_types))
    return Endpoint(
        id=r.id,
        user_id=r.user_id,
        url=r.url,
        description=r.description,
        event_types=types,
        batch=bool(r.batch),
        created_at=r.created_at,
        disabled_at=r.disabled_at,
        disabled_reason=r.disabled_reason,
    )
