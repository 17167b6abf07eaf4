"""The event relay and the pruner on both databases: every event once per pass in id
order, from a cursor that survives restarts and that two relays take in turns; a
refused publish moves nothing; old events go only once they are published."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.events import Event, EventType, NewEvent
from mailsched.errors import QueueUnavailable, StoreUnavailable
from mailsched.metrics import Metrics
from mailsched.producer.relay import EVENT_CURSOR, EventOutbox, EventPruner, Relay
from mailsched.store import events, feedback
from mailsched.store.db import Database
from tests.support.running import wait_until

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class Recording:
    """A sink that keeps every batch it is given."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    @property
    def ids(self) -> list[int]:
        return [i for batch in self.batches for i in batch]

    async def publish(self, conn: AsyncConnection, published: Sequence[Event]) -> None:
        self.batches.append([ev.id for ev in published])


async def write(db: Database, count: int, at: datetime = T0, user: int = 1) -> None:
    async def work(conn: AsyncConnection) -> None:
        new = [NewEvent(user, EventType.DELIVERY_SENT, at, 1, i) for i in range(count)]
        await events.append(conn, new)

    await db.run(work)


async def position(db: Database) -> int:
    async def work(conn: AsyncConnection) -> int:
        return await events.cursor(conn, EVENT_CURSOR)

    return await db.run(work)


def relay(db: Database, sink: Any, batch_size: int = 3, **options: Any) -> Relay[Event]:
    metrics = options.pop("metrics", Metrics())
    clock = options.pop("clock", lambda: T0)
    return Relay("event", db, EventOutbox(sink, metrics, clock), batch_size=batch_size, **options)


async def test_each_pass_publishes_the_next_events_in_order_and_a_restart_resumes(
    db: Database,
) -> None:
    await write(db, 4)
    await write(db, 3)
    first = Recording()
    passes = [await relay(db, first).relay_once() for _ in range(4)]
    assert passes == [3, 3, 1, 0]
    assert first.batches == [[1, 2, 3], [4, 5, 6], [7]]
    assert await position(db) == 7

    await write(db, 2)
    restarted = Recording()  # a new process: nothing in memory, only the cursor
    assert await relay(db, restarted).relay_once() == 2
    assert restarted.batches == [[8, 9]]


async def test_a_refused_publish_moves_nothing_and_is_published_again(db: Database) -> None:
    await write(db, 2)

    class Refusing(Recording):
        async def publish(self, conn: AsyncConnection, published: Sequence[Event]) -> None:
            await super().publish(conn, published)
            raise QueueUnavailable("kafka _MSG_TIMED_OUT: Local: Message timed out")

    with pytest.raises(QueueUnavailable):
        await relay(db, Refusing()).relay_once()
    assert await position(db) == 0

    accepting = Recording()
    assert await relay(db, accepting).relay_once() == 2
    assert accepting.batches == [[1, 2]]


async def test_a_publish_whose_commit_fails_goes_again_with_the_same_ids(db: Database) -> None:
    """The sink took the events, then the transaction failed: at least once."""
    await write(db, 2)
    sink = Recording()

    class CommitFails(EventOutbox):
        async def remove(self, conn: AsyncConnection, rows: Sequence[Event]) -> None:
            await super().remove(conn, rows)
            raise StoreUnavailable("lost the connection before the commit")

    failing = Relay("event", db, CommitFails(sink, Metrics(), lambda: T0), batch_size=10)
    with pytest.raises(StoreUnavailable):
        await failing.relay_once()
    assert await position(db) == 0
    assert await relay(db, sink, batch_size=10).relay_once() == 2
    assert sink.batches == [[1, 2], [1, 2]]


class Held(Recording):
    """A sink that holds its first batch (its relay's transaction open) until released."""

    def __init__(self) -> None:
        super().__init__()
        self.publishing, self.release = asyncio.Event(), asyncio.Event()

    async def publish(self, conn: AsyncConnection, published: Sequence[Event]) -> None:
        await super().publish(conn, published)
        self.publishing.set()
        await self.release.wait()


class Watched(EventOutbox):
    """Notes its MariaDB connection's id as it starts to take, to be seen waiting."""

    connection_id: int | None = None

    async def take(self, conn: AsyncConnection, limit: int) -> Sequence[Event]:
        if conn.dialect.name == "mysql":
            self.connection_id = (await conn.execute(text("SELECT CONNECTION_ID()"))).scalar_one()
        return await super().take(conn, limit)


async def _lock_wait(db: Database, connection_id: int | None) -> bool:
    if connection_id is None:
        return False

    async def work(conn: AsyncConnection) -> bool:
        state = await conn.execute(
            text(
                "SELECT trx_state FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = :i"
            ),
            {"i": connection_id},
        )
        return state.scalar_one_or_none() == "LOCK WAIT"

    return await db.run(work)


def _on_sqlite_wait(db: Database, waiting: asyncio.Event) -> None:
    """SQLite has one writer at a time: a second waits for the file's lock as it
    connects or at BEGIN IMMEDIATE, before its take."""

    def starting(*_args: Any) -> None:
        waiting.set()

    for name in ("connect", "begin"):
        sa_event.listen(db.engine.sync_engine, name, starting, insert=True)


async def test_two_relays_never_publish_the_same_batch(database_url: str, db: Database) -> None:
    """Relay A holds its batch in publish; relay B starts its pass meanwhile and must
    wait for A's cursor instead of taking the same events."""
    await write(db, 5)

    async def ran_before(conn: AsyncConnection) -> int:
        return await events.cursor(conn, EVENT_CURSOR)  # the cursor's row exists

    assert await db.run(ran_before) == 0
    other = Database.from_url(database_url)  # the second process's own pool
    a_sink, b_sink, b_waiting = Held(), Recording(), asyncio.Event()
    b_outbox = Watched(b_sink, Metrics(), lambda: T0)
    if db.dialect == "sqlite":
        _on_sqlite_wait(other, b_waiting)
    tasks: list[asyncio.Task[int]] = []
    try:
        tasks.append(asyncio.create_task(relay(db, a_sink, batch_size=10).relay_once()))
        await a_sink.publishing.wait()
        tasks.append(asyncio.create_task(Relay("event", other, b_outbox).relay_once()))

        async def b_blocked_or_published() -> bool:
            if await _lock_wait(db, b_outbox.connection_id):
                b_waiting.set()
            return bool(b_sink.batches) or b_waiting.is_set()

        await wait_until(b_blocked_or_published, within=30)
        assert b_sink.batches == [], "B took A's events while A held them"
        a_sink.release.set()
        assert [await task for task in tasks] == [5, 0]
        assert a_sink.batches == [[1, 2, 3, 4, 5]]
        assert b_sink.batches == []
    finally:
        a_sink.release.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await other.dispose()


async def test_the_relay_reports_its_lag_and_what_it_published(db: Database) -> None:
    await write(db, 3, at=T0)
    metrics = Metrics()
    now = T0 + timedelta(seconds=5)
    counted = relay(
        db,
        Recording(),
        batch_size=2,
        metrics=metrics,
        clock=lambda: now,
        on_relayed=metrics.relayed.inc,
    )

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name)

    assert await counted.relay_once() == 2
    assert sample("mailsched_event_relay_lag_seconds") == 5.0
    assert sample("mailsched_events_relayed_total") == 2
    assert await counted.relay_once() == 1
    assert sample("mailsched_events_relayed_total") == 3
    assert await counted.relay_once() == 0
    assert sample("mailsched_event_relay_lag_seconds") == 0.0


async def test_the_pruner_deletes_only_old_events_the_relay_has_published(db: Database) -> None:
    for day in range(5):  # ids 1..5, one a day
        await write(db, 1, at=T0 + timedelta(days=day))
    now = T0 + timedelta(days=4, hours=1)
    pruner = EventPruner(db, timedelta(days=2), lambda: now, batch_size=2)  # old: ids 1..3

    async def left() -> list[int]:
        async def work(conn: AsyncConnection) -> list[int]:
            return [ev.id for ev in await events.after(conn, 0, 100)]

        return await db.run(work)

    assert await pruner.prune_once() == 0  # nothing published yet
    assert await left() == [1, 2, 3, 4, 5]

    async def publish_through(last: int) -> None:
        async def work(conn: AsyncConnection) -> None:
            await events.cursor(conn, EVENT_CURSOR, lock=True)
            await events.advance(conn, EVENT_CURSOR, last)

        await db.run(work)

    await publish_through(1)
    assert await pruner.prune_once() == 1
    assert await left() == [2, 3, 4, 5]
    await publish_through(5)
    assert await pruner.prune_once() == 2  # in batches of two: 2 and 3, then none
    assert await left() == [4, 5]


async def test_the_pruner_forgets_inbound_mail_kept_past_the_retention(db: Database) -> None:
    async def keep(at: datetime) -> None:
        async def work(conn: AsyncConnection) -> None:
            await feedback.keep(conn, "smtp", "forged", b"x" * 10, "<>", "b@x", at)

        await db.run(work)

    for day in range(5):
        await keep(T0 + timedelta(days=day))
    now = T0 + timedelta(days=4, hours=1)
    assert await EventPruner(db, timedelta(days=2), lambda: now, batch_size=2).prune_once() == 3

    async def left() -> int:
        async def work(conn: AsyncConnection) -> int:
            return int(
                (await conn.execute(text("SELECT COUNT(*) FROM inbound_messages"))).scalar_one()
            )

        return await db.run(work)

    assert await left() == 2
