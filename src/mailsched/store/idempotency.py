"""Stored first responses for ``Idempotency-Key`` requests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.store.tables import idempotency_keys

k = idempotency_keys.c


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What was answered the first time a key was used."""

    request_hash: str
    status_code: int
    response: str
    created_at: datetime


async def find(
    conn: AsyncConnection, user_id: int, key: str, not_before: datetime
) -> StoredResponse | None:
    """The stored response for ``(user_id, key)`` made at or after ``not_before``, locked.

    An older one has expired: it is deleted, and the key is free again.
    """
    row = (
        await conn.execute(
            select(idempotency_keys).where(k.user_id == user_id, k.key == key).with_for_update()
        )
    ).first()
    if row is None:
        return None
    if row.created_at < not_before:
        await conn.execute(delete(idempotency_keys).where(k.user_id == user_id, k.key == key))
        return None
    return StoredResponse(row.request_hash, row.status_code, row.response, row.created_at)


async def save(
    conn: AsyncConnection,
    user_id: int,
    key: str,
    request_hash: str,
    status_code: int,
    response: str,
    now: datetime,
) -> None:
    """Remember the response; a concurrent first use of the same key fails on the primary key."""
    await conn.execute(
        insert(idempotency_keys).values(
            user_id=user_id,
            key=key,
            request_hash=request_hash,
            status_code=status_code,
            response=response,
            created_at=now,
        )
    )
