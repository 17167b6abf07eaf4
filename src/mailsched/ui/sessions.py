"""Signing in to the dashboard: an API key exchanged for a server-side session.

The browser keeps only a random token in an HttpOnly cookie; the key itself is
checked once, exactly as the API checks it, and never stored in the browser.
The database keeps the token's SHA-256, the user, the key's id and a CSRF token.

A revoked key ends its sessions at once: :func:`find` joins the session to its
key's row on every request (two primary-key lookups in one query), rather than
relying on the revoke deleting sessions, which ``mailsched keys revoke`` and any
future revoke path would each have to remember.

Guessing keys is slowed by :class:`FailedSignIns`: an address with 10 failed
sign-ins in the last minute is refused without its key being checked.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.producer.auth import Authenticator, TooManyRequests
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


class TooManySignIns(TooManyRequests):
    """An address failed to sign in too often; ``retry_after`` is in whole seconds."""


class FailedSignIns:
    """Failed sign-ins per client address in a sliding ``window``: at ``attempts``
    failures the address is refused until the oldest of them leaves the window.

    An attempt is counted before its key is checked (:meth:`begin`) and taken back
    when the key was good (:meth:`withdraw`), so concurrent guesses cannot pass
    the limit together. In memory and per process, like the API's rate limits: a
    restart forgets it. At most ``max_clients`` addresses are kept (the least
    recently seen goes first), each with at most ``attempts`` times.
    """

    def __init__(
        self,
        clock: Callable[[], datetime],
        attempts: int = 10,
        window: timedelta = timedelta(minutes=1),
        max_clients: int = 10_000,
    ) -> None:
        if attempts < 1 or window <= timedelta(0) or max_clients < 1:
            raise ValueError("attempts and max_clients must be at least 1, the window > 0")
        self._clock = clock
        self._attempts = attempts
        self._window = window
        self._max_clients = max_clients
        self._failures: OrderedDict[str, deque[datetime]] = OrderedDict()

    def begin(self, client: str) -> None:
        """Count an attempt from ``client``; raise :class:`TooManySignIns` (and count
        nothing) while it is over the limit."""
        now = self._clock()
        times = self._failures.pop(client, None) or deque(maxlen=self._attempts)
        while times and now - times[0] >= self._window:
            times.popleft()
        if len(times) >= self._attempts:
            self._failures[client] = times
            wait = (times[0] + self._window - now).total_seconds()
            raise TooManySignIns(max(1, math.ceil(wait)))
        times.append(now)
        self._failures[client] = times  # the most recently seen last
        while len(self._failures) > self._max_clients:
            self._failures.popitem(last=False)

    def withdraw(self, client: str) -> None:
        """Take back ``client``'s latest attempt: its key was good, or never checked."""
        times = self._failures.get(client)
        if times:
            times.pop()
        if not times:
            self._failures.pop(client, None)

    def __len__(self) -> int:
        """How many addresses are tracked."""
        return len(self._failures)


def token_digest(token: str) -> str:
    """The stored form of a session token."""
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Sign in, find, sign out. Each method is one transaction."""

    def __init__(
        self,
        db: Database,
        auth: Authenticator,
        clock: Callable[[], datetime],
        failures: FailedSignIns | None = None,
    ) -> None:
        self._db = db
        self._auth = auth
        self._clock = clock
        self._failures = failures or FailedSignIns(clock)

    async def sign_in(self, key: str, client: str) -> Opened | None:
        """A session for ``key``'s user, or ``None`` if the API would refuse the key;
        raises :class:`TooManySignIns`, without checking the key, while the ``client``
        address has failed too often."""
        self._failures.begin(client)
        try:
            opened = await self._open(key)
        except BaseException:
            self._failures.withdraw(client)  # the database failed, not the guess
            raise
        if opened is not None:
            self._failures.withdraw(client)
        return opened

    async def _open(self, key: str) -> Opened | None:
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
