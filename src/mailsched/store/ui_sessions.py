"""Dashboard sessions: open, find (only while its key is live), close, prune.

Never commits: the dashboard's session service owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.store.tables import api_keys, ui_sessions

u = ui_sessions.c


@dataclass(frozen=True, slots=True)
class UiSession:
    """A live session's row, without its token (only the digest is stored)."""

    token_digest: str
    user_id: int
    key_id: int
    csrf: str
    expires_at: datetime


async def open_session(conn: AsyncConnection, session: UiSession, now: datetime) -> None:
    """Store a new session."""
    await conn.execute(
        insert(ui_sessions).values(
            token_digest=session.token_digest,
            user_id=session.user_id,
            key_id=session.key_id,
            csrf=session.csrf,
            created_at=now,
            expires_at=session.expires_at,
        )
    )


async def find_session(conn: AsyncConnection, token_digest: str, now: datetime) -> UiSession | None:
    """The session, if it has not expired and its API key is not revoked.

    One primary-key lookup joined to the key's row by its primary key: cheap enough
    for every request, and a revoke takes effect on the next one.
    """
    row = (
        await conn.execute(
            select(u.token_digest, u.user_id, u.key_id, u.csrf, u.expires_at)
            .join(api_keys, api_keys.c.id == u.key_id)
            .where(
                u.token_digest == token_digest,
                u.expires_at > now,
                api_keys.c.revoked_at.is_(None),
            )
        )
    ).first()
    if row is None:
        return None
    return UiSession(row.token_digest, row.user_id, row.key_id, row.csrf, row.expires_at)


async def close_session(conn: AsyncConnection, token_digest: str) -> None:
    """Delete the session (signed out)."""
    await conn.execute(delete(ui_sessions).where(u.token_digest == token_digest))


async def prune_sessions(conn: AsyncConnection, now: datetime) -> int:
    """Delete expired sessions; how many went."""
    result = await conn.execute(delete(ui_sessions).where(u.expires_at <= now))
    return int(result.rowcount)
