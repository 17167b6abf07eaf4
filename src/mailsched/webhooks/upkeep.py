"""The deliverer's upkeep: the backlog gauges now and then, and pruning.

Kept: finished messages for a day (long enough for any Kafka redelivery of an
event to meet its row and add nothing), attempts for seven days (what
``GET /api/v1/webhooks/{id}/attempts`` shows). Both are pruned in short
statements of a thousand rows, so no prune holds a long lock.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.metrics import Metrics
from mailsched.store import webhook_messages as messages
from mailsched.store import webhooks as endpoints
from mailsched.store.db import Database

log = logging.getLogger(__name__)

FINISHED_KEPT = timedelta(days=1)
ATTEMPTS_KEPT = timedelta(days=7)
#: Seconds between samples of the backlog (a GROUP BY over the waiting messages).
STATS_INTERVAL = 10.0
#: Seconds between prunes.
PRUNE_INTERVAL = 60.0
_PRUNE_CHUNK = 1000
#: Chunks per prune and table: a backlog of deletions waits for the next prune.
_PRUNE_ROUNDS = 50

Prune = Callable[[AsyncConnection, datetime, int], Awaitable[int]]


class Upkeep:
    """Runs each chore when its interval has passed since the last run."""

    def __init__(self, db: Database, clock: Callable[[], datetime], metrics: Metrics) -> None:
        self._db = db
        self._clock = clock
        self._metrics = metrics
        self._next_stats: datetime | None = None
        self._next_prune: datetime | None = None
        self._labels: set[str] = set()

    async def __call__(self) -> None:
        """Do whatever chore is due."""
        now = self._clock()
        if self._next_stats is None or now >= self._next_stats:
            self._next_stats = now + timedelta(seconds=STATS_INTERVAL)
            await self.sample(now)
        if self._next_prune is None or now >= self._next_prune:
            self._next_prune = now + timedelta(seconds=PRUNE_INTERVAL)
            await self.prune(now)

    async def sample(self, now: datetime) -> None:
        """Set the backlog per endpoint and the age of the oldest undelivered event."""

        async def work(conn: AsyncConnection) -> tuple[dict[int, int], datetime | None]:
            found = await messages.backlog(conn)
            oldest = None
            if found:
                oldest = await messages.occurred_at(conn, min(f for _, f in found.values()))
            return {e: count for e, (count, _) in found.items()}, oldest

        counts, oldest = await self._db.run(work)
        labels = {str(e) for e in counts}
        for gone in self._labels - labels:
            self._metrics.webhook_backlog.remove(gone)
        for endpoint_id, count in counts.items():
            self._metrics.webhook_backlog.labels(str(endpoint_id)).set(count)
        self._labels = labels
        age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        self._metrics.webhook_oldest_seconds.set(age)

    async def prune(self, now: datetime) -> None:
        """Delete finished messages and old attempts past their keeping time."""
        finished = await self._drain(messages.prune_finished, now - FINISHED_KEPT)
        attempts = await self._drain(endpoints.prune_attempts, now - ATTEMPTS_KEPT)
        if finished or attempts:
            log.info("pruned %d finished webhook messages, %d attempts", finished, attempts)

    async def _drain(self, prune: Prune, before: datetime) -> int:
        async def work(conn: AsyncConnection) -> int:
            return await prune(conn, before, _PRUNE_CHUNK)

        total = 0
        for _ in range(_PRUNE_ROUNDS):
            deleted = await self._db.run(work)
            total += deleted
            if deleted < _PRUNE_CHUNK:
                break
        return total
