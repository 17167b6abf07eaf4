"""Who is calling: ``Authorization: Bearer <key>`` to a user id, and per-key request limits."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.producer.throttle import TokenBucket
from mailsched.store import keys
from mailsched.store.db import Database

_CACHE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller."""

    user_id: int
    key_prefix: str


class TooManyRequests(Exception):
    """A key sent more requests than its limit; ``retry_after`` is in seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many requests; retry after {retry_after:.0f} s")
        self.retry_after = retry_after


class Authenticator:
    """Checks keys against the database, with a few seconds of cache, and limits their rate."""

    def __init__(
        self,
        db: Database,
        requests_per_minute: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._monotonic = monotonic
        self._rate = requests_per_minute
        self._cache: dict[str, tuple[float, keys.StoredKey | None]] = {}
        self._buckets: dict[str, TokenBucket] = {}

    async def caller(self, key: str) -> Caller | None:
        """The caller a key stands for, or ``None`` for a malformed, unknown or revoked key."""
        parts = keys.split(key)
        if parts is None:
            return None
        prefix, secret = parts
        stored = await self._lookup(prefix)
        if stored is None or stored.revoked_at is not None:
            return None
        if not hmac.compare_digest(stored.secret_hash, keys.digest(secret)):
            return None
        return Caller(stored.user_id, prefix)

    def admit(self, caller: Caller) -> None:
        """Count one request; raise :class:`TooManyRequests` past the key's rate."""
        bucket = self._buckets.get(caller.key_prefix)
        if bucket is None:
            bucket = TokenBucket(rate=self._rate / 60.0, burst=max(1, self._rate // 6))
            self._buckets[caller.key_prefix] = bucket
        wait = bucket.take(self._monotonic())
        if wait > 0:
            raise TooManyRequests(wait)

    async def _lookup(self, prefix: str) -> keys.StoredKey | None:
        now = self._monotonic()
        hit = self._cache.get(prefix)
        if hit is not None and now - hit[0] < _CACHE_SECONDS:
            return hit[1]

        async def work(conn: AsyncConnection) -> keys.StoredKey | None:
            return await keys.find_key(conn, prefix)

        stored = await self._db.run(work)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[prefix] = (now, stored)
        return stored


_bearer = HTTPBearer(auto_error=False, description="An API key from `mailsched keys create`")


def caller_dependency(auth: Authenticator) -> Callable[..., Awaitable[Caller]]:
    """A FastAPI dependency: the authenticated, rate-limited caller, or 401 / 429."""

    async def current_caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        caller = None if credentials is None else await auth.caller(credentials.credentials)
        if caller is None:
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="a valid API key is required: Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        auth.admit(caller)
        return caller

    return current_caller
