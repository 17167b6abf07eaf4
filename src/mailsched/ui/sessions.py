"""Signing in to the dashboard: an API key exchanged for a server-side session.

The browser keeps only a random token in an HttpOnly cookie; the key itself is
checked once, exactly as the API checks it, and never stored in the browser.
The database keeps the token's SHA-256, the user, the key's id and a CSRF token.

A revoked key ends its sessions at once: :func:`find` joins the session to its
key's row on every request (two primary-key lookups in one query), rather than
relying on the revoke deleting sessions, which ``mailsched keys revoke`` and any
future revoke path would each have to remember.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.producer.auth import Authenticator
from mailsched.store import keys, ui_sessions
from mailsched.store.db import Database
from mailsched.store.ui_sessions import UiSession

#: A working day: long enough not to sign in twice, short enough that a
#: forgotten browser does not stay signed in.
LIFETIME = timedelta(hours=8)


@dataclass(frozen=True, slots=True)
class Opened:
    """A new session: the token for the cookie, and the row."""

    token: str
    session: UiSession


def token_digest(token: str) -> str:
    """The stored form of a session token."""
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Sign in, find, sign out. Each method is one transaction."""

    def __init__(self, db: Database, auth: Authenticator, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._auth = auth
        self._clock = clock

    async def sign_in(self, key: str) -> Opened | None:
        """A session for ``key``'s user, or ``None`` if the API would refuse the key."""
        caller = await self._auth.caller(key)
        if caller is None:
            return None
        token = secrets.token_urlsafe(32)
        now = self._clock()

        async def work(conn: AsyncConnection) -> UiSession | None:
            stored = await keys.find_key(conn, caller.key_prefix)
            # The authenticator caches keys for seconds: a revoke in between still counts.
            if stored is None or stored.revoked_at is not None:
                return None
            await ui_sessions.prune_sessions(conn, now)
            session = UiSession(
                token_digest(token),
                stored.user_id,
                stored.id,
                secrets.token_urlsafe(32),
                now + LIFETIME,
            )
            await ui_sessions.open_session(conn, session, now)
            return session

        session = await self._db.run(work)
        return None if session is None else Opened(token, session)

    async def find(self, token: str | None) -> UiSession | None:
        """The live session a cookie's token stands for."""
        if not token:
            return None
        now = self._clock()

        async def work(conn: AsyncConnection) -> UiSession | None:
            return await ui_sessions.find_session(conn, token_digest(token), now)

        return await self._db.run(work)

    async def sign_out(self, session: UiSession) -> None:
        """End the session."""

        async def work(conn: AsyncConnection) -> None:
            await ui_sessions.close_session(conn, session.token_digest)

        await self._db.run(work)
