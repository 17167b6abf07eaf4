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
accept duplicates (a dead letter names its delivery, an event its id).

:class:`Outbox` is one kind of row and where it goes. Two kinds: dead letters
(:class:`DeadLetterOutbox`, rows deleted once published) and events
(:class:`EventOutbox`, an append-only table read from a cursor, which
:class:`EventPruner` trims after the retention period).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.events import Event
from mailsched.errors import MailschedError
from mailsched.metrics import Metrics
from mailsched.queue import DeadLetter, DueDelivery
from mailsched.store import dead_letters, events, feedback, shaping
from mailsched.store.db import Database
from mailsched.store.dead_letters import DeadLetterRow

log = logging.getLogger(__name__)

Row = TypeVar("Row")


class Outbox(Protocol[Row]):
    """One outbox table and its destination."""

    async def take(self, conn: AsyncConnection, limit: int) -> Sequence[Row]:
        """Lock up to ``limit`` rows, oldest first."""
        ...

    async def publish(self, conn: AsyncConnection, rows: Sequence[Row]) -> None:
        """Hand the rows to their destination; raise a MailschedError if it refused.

        ``conn`` is the relay's transaction, for a destination in the same database.
        """
        ...

    async def remove(self, conn: AsyncConnection, rows: Sequence[Row]) -> None:
        """Delete published rows, or move past them."""
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

    async def publish(self, _conn: AsyncConnection, rows: Sequence[DeadLetterRow]) -> None:
        await self._sink.dead_letter(
            [DeadLetter(DueDelivery(r.delivery_id, r.campaign_id), r.reason) for r in rows]
        )

    async def remove(self, conn: AsyncConnection, rows: Sequence[DeadLetterRow]) -> None:
        await dead_letters.remove(conn, rows)


class EventSink(Protocol):
    """Where events go: the Kafka events topic, or the webhooks' table (``mailsched run``)."""

    async def publish(self, conn: AsyncConnection, events: Sequence[Event]) -> None:
        """Take ``events`` (in id order) for good, or raise a MailschedError.

        ``conn`` is the relay's transaction: a sink in the same database writes in
        it, so its rows commit with the cursor's move or not at all. Another sink
        ignores it.
        """
        ...


#: The ``relay_cursors`` row of the event relay.
EVENT_CURSOR = "events"


class EventOutbox:
    """Events, from the ``events`` table after the relay's cursor to an :class:`EventSink`.

    Events are never deleted here (the feed reads them too): the cursor moves past
    them. Its row is locked by :meth:`take` until the transaction ends, so relays in
    several processes take turns and never publish the same batch side by side.
    """

    def __init__(self, sink: EventSink, metrics: Metrics, clock: Callable[[], datetime]) -> None:
        self._sink = sink
        self._metrics = metrics
        self._clock = clock

    async def take(self, conn: AsyncConnection, limit: int) -> Sequence[Event]:
        position = await events.cursor(conn, EVENT_CURSOR, lock=True)
        taken = await events.after(conn, position, limit)
        # The lag as this pass finds it: how long the first unpublished event has waited.
        lag = (self._clock() - taken[0].occurred_at).total_seconds() if taken else 0.0
        self._metrics.relay_lag.set(max(0.0, lag))
        return taken

    async def publish(self, conn: AsyncConnection, rows: Sequence[Event]) -> None:
        await self._sink.publish(conn, rows)

    async def remove(self, conn: AsyncConnection, rows: Sequence[Event]) -> None:
        await events.advance(conn, EVENT_CURSOR, rows[-1].id)


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
        on_relayed: Callable[[int], None] | None = None,
    ) -> None:
        """``on_relayed`` is told how many rows each committed pass published."""
        self._name = name
        self._db = db
        self._outbox = outbox
        self._batch_size = batch_size
        self._interval = interval
        self._max_backoff = max_backoff
        self._on_relayed = on_relayed

    async def relay_once(self) -> int:
        """Publish and delete one batch of rows; return how many.

        The publish is inside the unit of work, which ``db.run`` may repeat: see the
        module docstring.
        """
        outbox, limit = self._outbox, self._batch_size

        async def work(conn: AsyncConnection) -> int:
            rows = await outbox.take(conn, limit)
            if rows:
                await outbox.publish(conn, rows)
                await outbox.remove(conn, rows)
            return len(rows)

        relayed = await self._db.run(work)
        if relayed and self._on_relayed is not None:
            self._on_relayed(relayed)
        return relayed

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


class EventPruner:
    """Deletes events older than the retention period, never one the relay has not
    published, in short transactions of ``batch_size`` events; the inbound mail kept
    for inspection (bounces that changed nothing) after the same period; and the
    shaping groups' numbered sends after two days."""

    def __init__(
        self,
        db: Database,
        retention: timedelta,
        clock: Callable[[], datetime],
        *,
        batch_size: int = 1000,
        interval: float = 60.0,
    ) -> None:
        self._db = db
        self._retention = retention
        self._clock = clock
        self._batch_size = batch_size
        self._interval = interval

    async def prune_once(self) -> int:
        """Delete every event and kept message due; return how many."""
        before, limit = self._clock() - self._retention, self._batch_size

        async def work(conn: AsyncConnection) -> tuple[int, bool]:
            # The relay's position, read without its lock: it only moves forward, so
            # a stale one is only cautious.
            published = await events.cursor(conn, EVENT_CURSOR)
            deleted = await events.prune(conn, before, limit, through=published)
            return deleted, deleted == limit

        async def kept(conn: AsyncConnection) -> tuple[int, bool]:
            deleted = await feedback.prune_kept(conn, before, limit)
            return deleted, deleted == limit

        async def numbered(conn: AsyncConnection) -> tuple[int, bool]:
            # The shaping groups' numbered sends: the longest window is a day.
            old = self._clock() - timedelta(days=2)
            deleted = await shaping.prune(conn, old, limit)
            return deleted, deleted == limit

        total = 0
        for step in (work, kept, numbered):
            while True:
                deleted, more = await self._db.run(step)
                total += deleted
                if not more:
                    break
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Prune now, then every ``interval`` seconds, until ``stop`` is set."""
        while not stop.is_set():
            try:
                pruned = await self.prune_once()
            except MailschedError as exc:
                log.warning("event pruner: %s; trying again in %.0f s", exc, self._interval)
            else:
                if pruned:
                    log.info("pruned %d events older than %s", pruned, self._retention)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
