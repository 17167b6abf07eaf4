"""Deployment-wide secrets, made once and shared by every process through the database."""

from __future__ import annotations

import secrets as random

from sqlalchemy import select
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.store.tables import secrets


async def get_or_create(conn: AsyncConnection, name: str) -> str:
    """The secret called ``name``: 64 random hex digits, made on first use.

    Processes starting together may both find none: each inserts its own, the
    database keeps the first, and both return that one. The insert skips a
    duplicate instead of failing, so the transaction stays usable.
    """
    found = await _read(conn, name)
    if found is not None:
        return found
    values = {"name": name, "value": random.token_hex(32)}
    if conn.dialect.name == "mysql":
        insert = mysql.insert(secrets).values(values)
        # A no-op update on a duplicate: unlike INSERT IGNORE, other errors still raise.
        await conn.execute(insert.on_duplicate_key_update(name=insert.inserted.name))
    else:
        await conn.execute(sqlite.insert(secrets).values(values).on_conflict_do_nothing())
    found = await _read(conn, name)
    assert found is not None, "the secret was inserted or found in this transaction"
    return found


async def _read(conn: AsyncConnection, name: str) -> str | None:
    result = await conn.execute(select(secrets.c.value).where(secrets.c.name == name))
    value: str | None = result.scalar_one_or_none()
    return value
