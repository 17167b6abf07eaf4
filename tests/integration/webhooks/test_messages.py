"""The webhook messages as a job table, on each database: leases, takeovers, claims, prunes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.store import webhook_messages as messages
from mailsched.store.db import Database
from tests.integration.webhooks.conftest import add_endpoint, add_events, fan_out, now

LEASE = timedelta(seconds=70)


async def test_a_crashed_senders_messages_come_back_after_the_lease(db: Database) -> None:
    endpoint_id, _ = await add_endpoint(db, 1, "http://127.0.0.1:9/")
    await fan_out(db, await add_events(db, 1, 2))
    t0 = now() + timedelta(seconds=1)

    async def claim_at(conn: AsyncConnection, at: timedelta) -> list[messages.Claim]:
        due = await messages.due_endpoints(conn, t0 + at, (), 10)
        assert due in ([], [endpoint_id])
        return await messages.claim_single(conn, endpoint_id, t0 + at, 10, t0 + at + LEASE)

    first = await db.run(lambda conn: claim_at(conn, timedelta(0)))
    assert [c.attempts for c in first] == [1, 1]
    # The sender dies without a word: nothing is due while its lease lasts…
    assert await db.run(lambda conn: claim_at(conn, LEASE - timedelta(seconds=1))) == []
    # …and everything is, after.
    again = await db.run(lambda conn: claim_at(conn, LEASE + timedelta(seconds=1)))
    assert [c.attempts for c in again] == [2, 2]

    # The first sender wakes up and records a failure: its lease is over, so the
    # messages stay with the second one.
    async def late(conn: AsyncConnection) -> None:
        await messages.retry(conn, first[0], t0)
        await messages.finish(conn, first[1], t0)

    await db.run(late)
    assert await db.run(lambda conn: claim_at(conn, 2 * LEASE)) == []
    third = await db.run(lambda conn: claim_at(conn, 3 * LEASE))
    assert [c.attempts for c in third] == [3, 3]


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_concurrent_claims_take_different_messages(db: Database) -> None:
    """SQLite runs one writer at a time, so this race is MariaDB's only."""
    endpoint_id, _ = await add_endpoint(db, 1, "http://127.0.0.1:9/")
    await fan_out(db, await add_events(db, 1, 5))
    at = now() + timedelta(seconds=1)
    async with db.engine.connect() as one, db.engine.connect() as two:
        await one.begin()
        await two.begin()
        first = await messages.claim_single(one, endpoint_id, at, 3, at + LEASE)
        second = await messages.claim_single(two, endpoint_id, at, 3, at + LEASE)
        await one.commit()
        await two.commit()
    ids = [c.event_ids[0] for c in first + second]
    assert len(first) == 3
    assert len(second) == 2
    assert len(set(ids)) == 5


async def test_finished_messages_are_pruned_after_a_day(db: Database) -> None:
    endpoint_id, _ = await add_endpoint(db, 1, "http://127.0.0.1:9/")
    events = await add_events(db, 1, 3)
    await fan_out(db, events)
    at = now() + timedelta(seconds=1)

    async def deliver(conn: AsyncConnection) -> None:
        for claim in await messages.claim_single(conn, endpoint_id, at, 2, at + LEASE):
            await messages.finish(conn, claim, at)

    await db.run(deliver)

    async def prune(conn: AsyncConnection, before: timedelta) -> int:
        return await messages.prune_finished(conn, at + before, 1000)

    assert await db.run(lambda conn: prune(conn, timedelta(0))) == 0
    assert await db.run(lambda conn: prune(conn, timedelta(days=1))) == 2
    backlog = await db.run(messages.backlog)
    assert backlog == {endpoint_id: (1, events[2].id)}


async def test_fan_out_in_bulk(db: Database) -> None:
    """Thousands of events in one call: chunked inserts, within each database's limits."""
    first, _ = await add_endpoint(db, 1, "http://127.0.0.1:9/")
    second, _ = await add_endpoint(db, 1, "http://127.0.0.1:9/", types=["delivery.sent"])
    await add_endpoint(db, 2, "http://127.0.0.1:9/")
    events = await add_events(db, 1, 2500)
    await fan_out(db, events)
    await fan_out(db, events)
    backlog = await db.run(messages.backlog)
    assert backlog == {first: (2500, events[0].id), second: (2500, events[0].id)}
