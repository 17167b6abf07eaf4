"""API keys: create, look up, revoke. The secret part is stored only as a digest."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.store.tables import api_keys

#: ``ms_<prefix>_<secret>``: the prefix finds the row, the secret proves the key.
KEY_PREFIX = "ms"


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key's row, without its secret."""

    id: int
    user_id: int
    prefix: str
    secret_hash: str
    revoked_at: datetime | None


def digest(secret: str) -> str:
    """The stored form of a key's secret part."""
    return hashlib.sha256(secret.encode()).hexdigest()


def split(key: str) -> tuple[str, str] | None:
    """``(prefix, secret)`` of a well-formed key, else ``None``."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


async def create_key(
    conn: AsyncConnection, user_id: int, name: str | None, now: datetime
) -> tuple[int, str]:
    """Store a new key for ``user_id``; return its id and the full key (shown once)."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    result = await conn.execute(
        insert(api_keys).values(
            user_id=user_id,
            prefix=prefix,
            secret_hash=digest(secret),
            name=name,
            created_at=now,
        )
    )
    key_id = result.inserted_primary_key
    assert key_id is not None
    return int(key_id[0]), f"{KEY_PREFIX}_{prefix}_{secret}"


async def find_key(conn: AsyncConnection, prefix: str) -> StoredKey | None:
    """The key with this prefix, revoked or not."""
    row = (await conn.execute(select(api_keys).where(api_keys.c.prefix == prefix))).first()
    if row is None:
        return None
    return StoredKey(row.id, row.user_id, row.prefix, row.secret_hash, row.revoked_at)


async def revoke_key(conn: AsyncConnection, key: str, now: datetime) -> bool:
    """Revoke by full key, by prefix, or by id; true if a live key was revoked."""
    parts = split(key)
    prefix = parts[0] if parts else key
    where = api_keys.c.prefix == prefix
    if key.isdigit():
        where = api_keys.c.id == int(key)
    result = await conn.execute(
        update(api_keys).where(where, api_keys.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return result.rowcount > 0


async def count_keys(conn: AsyncConnection) -> int:
    """How many keys exist (revoked included)."""
    return int((await conn.execute(select(func.count()).select_from(api_keys))).scalar_one())
