"""The reader of the events topic: a batch's offsets are committed only after the
database took it, and a batch the database refused is written again before
anything else is read."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.events import Event
from mailsched.errors import StoreUnavailable
from mailsched.producer.event_intake import EventIntake
from mailsched.store.db import Database

T = TypeVar("T")
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Item:
    event: Event


class Source:
    """Hands out prepared batches; records what was committed, and what was read."""

    def __init__(self, batches: list[list[int]], stop: asyncio.Event) -> None:
        self.batches = batches
        self.stop = stop
        self.log: list[tuple[str, list[int]]] = []

    async def receive(self, max_items: int, timeout: float) -> Sequence[Item]:  # noqa: ASYNC109
        if not self.batches:
            self.stop.set()
            return []
        ids = self.batches.pop(0)
        self.log.append(("read", ids))
        return [Item(Event(i, 1, "delivery.sent", T0, 1, {})) for i in ids]

    async def commit(self, received: Sequence[Item]) -> None:
        self.log.append(("commit", [r.event.id for r in received]))


class Transactions:
    """A database whose first ``failures`` transactions fail."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("the database went away")
        return await work(cast(AsyncConnection, None))


class Sink:
    def __init__(self, log: list[tuple[str, list[int]]]) -> None:
        self.log = log

    async def publish(self, conn: AsyncConnection, events: Sequence[Event]) -> None:
        self.log.append(("write", [e.id for e in events]))


async def test_offsets_follow_the_write_and_a_refused_batch_is_written_again() -> None:
    stop = asyncio.Event()
    source = Source([[1, 2], [3]], stop)
    db: Any = Transactions(failures=2)
    intake = EventIntake(cast(Database, db), source, Sink(source.log), max_backoff=0.01)
    await asyncio.wait_for(intake.run(stop), 10)
    assert source.log == [
        ("read", [1, 2]),
        ("write", [1, 2]),
        ("commit", [1, 2]),
        ("read", [3]),
        ("write", [3]),
        ("commit", [3]),
    ]
    assert db.failures == 0  # the first batch was refused twice before it went in
