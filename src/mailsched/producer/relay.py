"""The outbox relay: publishes rows that services wrote in their own transactions.

A service that must tell the queue something writes a row in the transaction that
makes it true, instead of publishing after the commit (where a queue that is down
would lose the message, or abort the work around it). The relay, which runs beside
the dispatcher, takes a batch of rows oldest first, publishes it in one send and
deletes it, all in one transaction: a failed publish rolls back and the rows wait
for the next try.

So delivery is at least once, never not at all: a message goes twice when the
commit fails after the publish, and when :meth:`Database.run
<mailsched.store.db.Database.run>` runs the whole unit of work again after a
deadlock or a lock wait timeout, publish included. Readers of the destination
accept duplicates (a dead letter names its delivery).

:class:`Outbox` is one kind of row and where it goes; today the one kind is dead
letters (:class:`DeadLetterOutbox`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.errors import MailschedError
from mailsched.queue import DeadLetter, DueDelivery
from mailsched.store import dead_letters
from mailsched.store.db import Database
from mailsched.store.dead_letters import DeadLetterRow

log = logging.getLogger(__name__)

Row = TypeVar("Row")


class Outbox(Protocol[Row]):
    """One outbox table and its destination."""

    async def take(self, conn: AsyncConnection, limit: int) -> Sequence[Row]:
        """Lock up to ``limit`` rows, oldest first."""
        ...

    async def publish(self, rows: Sequence[Row]) -> None:
        """Hand the rows to their destination; raise a MailschedError if it refused."""
        ...

    async def remove(self, conn: AsyncConnection, rows: Sequence[Row]) -> None:
        """Delete published rows."""
        ...


class DeadLetterSink(Protocol):
    """Where dead letters go (a :class:`~mailsched.queue.DeliveryQueue` is one)."""

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None: ...


class DeadLetterOutbox:
    """Failed deliveries, from the ``dead_letters`` table to the dead-letter topic."""

    def __init__(self, sink: DeadLetterSink) -> None:
        self._sink = sink

    async def take(self, conn: AsyncConnection, limit: int) -> Sequence[DeadLetterRow]:
        return await dead_letters.oldest(conn, limit)

    async def publish(self, rows: Sequence[DeadLetterRow]) -> None:
        await self._sink.dead_letter(
            [DeadLetter(DueDelivery(r.delivery_id, r.campaign_id), r.reason) for r in rows]
        )

    async def remove(self, conn: AsyncConnection, rows: Sequence[DeadLetterRow]) -> None:
        await dead_letters.remove(conn, rows)


class Relay(Generic[Row]):
    """Publishes an outbox's rows until told to stop, backing off while publishing fails."""

    def __init__(
        self,
        name: str,
        db: Database,
        outbox: Outbox[Row],
        *,
        batch_size: int = 100,
        interval: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        self._name = name
        self._db = db
        self._outbox = outbox
        self._batch_size = batch_size
        self._interval = interval
        self._max_backoff = max_backoff

    async def relay_once(self) -> int:
        """Publish and delete one batch of rows; return how many.

        The publish is inside the unit of work, which ``db.run`` may repeat: see the
        module docstring.
        """
        outbox, limit = self._outbox, self._batch_size

        async def work(conn: AsyncConnection) -> int:
            rows = await outbox.take(conn, limit)
            if rows:
                await outbox.publish(rows)
                await outbox.remove(conn, rows)
            return len(rows)

        return await self._db.run(work)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; a failure is retried with backoff, never given up."""
        failures = 0
        while not stop.is_set():
            try:
                relayed = await self.relay_once()
            except MailschedError as exc:
                failures += 1
                delay = min(self._max_backoff, self._interval * 2**failures)
                log.warning("%s relay: %s; retrying in %.1f s", self._name, exc, delay)
            else:
                failures = 0
                if relayed >= self._batch_size:
                    continue  # more is waiting: no pause
                delay = self._interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
