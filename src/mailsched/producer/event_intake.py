"""The events topic into the database, for ``mailsched webhooks``.

Each batch read from the topic is handed to an
:class:`~mailsched.producer.relay.EventSink` (the webhooks' fan-out) in one
transaction, and only once that has committed are the batch's offsets committed.
So an event is at least once in the database: a process killed between the two
commits leaves the offsets behind, and the partition's next owner writes the
batch again (the sink ignores events it already holds).

A batch the database refuses is tried again, with backoff, before anything else
is read: reading on would let later offsets be acknowledged while the batch is
still owed, and nothing would read it again until the group rebalanced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.events import Event
from mailsched.errors import MailschedError
from mailsched.producer.relay import EventSink
from mailsched.store.db import Database

log = logging.getLogger(__name__)


class Received(Protocol):
    """One event as the source hands it out."""

    @property
    def event(self) -> Event: ...


R = TypeVar("R", bound=Received)


class EventSource(Protocol[R]):
    """Where events come from (the Kafka events topic, in a consumer group)."""

    async def receive(
        self,
        max_items: int,
        timeout: float,  # noqa: ASYNC109 - the source applies it
    ) -> Sequence[R]:
        """Up to ``max_items`` events, waiting at most ``timeout`` seconds for the first."""
        ...

    async def commit(self, received: Sequence[R]) -> None:
        """Note ``received`` as written for good."""
        ...


class EventIntake(Generic[R]):
    """Reads events from a source and writes them through a sink, until told to stop."""

    def __init__(
        self,
        db: Database,
        source: EventSource[R],
        sink: EventSink,
        *,
        batch_size: int = 500,
        poll: float = 0.5,
        max_backoff: float = 30.0,
        on_written: Callable[[], None] | None = None,
    ) -> None:
        """``on_written`` is called after each batch the sink has taken for good."""
        self._db = db
        self._source = source
        self._sink = sink
        self._batch_size = batch_size
        self._poll = poll
        self._max_backoff = max_backoff
        self._on_written = on_written

    async def write(self, batch: Sequence[R]) -> None:
        """Hand ``batch`` to the sink in one transaction, then commit it at the source."""
        events = [r.event for r in batch]

        async def work(conn: AsyncConnection) -> None:
            await self._sink.publish(conn, events)

        await self._db.run(work)
        if self._on_written is not None:
            self._on_written()
        await self._source.commit(batch)

    async def run(self, stop: asyncio.Event) -> None:
        """Read and write until ``stop`` is set; failures are retried with backoff."""
        owed: Sequence[R] = ()
        failures = 0
        while not stop.is_set():
            try:
                if not owed:
                    owed = await self._source.receive(self._batch_size, self._poll)
                if owed:
                    await self.write(owed)
                    owed = ()
                failures = 0
                continue
            except MailschedError as exc:
                failures += 1
                delay = min(self._max_backoff, 0.2 * 2**failures)
                log.warning("event intake: %s; retrying in %.1f s", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
