"""The events table on both databases: ids in order, the feed's filters, the relay's
cursor, and pruning."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.events import Event, EventType, NewEvent
from mailsched.errors import DuplicateKey
from mailsched.store import events
from mailsched.store.campaigns import NewCampaign, NewDelivery, insert_campaign
from mailsched.store.db import Database
from mailsched.store.tables import deliveries
from mailsched.store.tables import events as events_table

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _event(user: int, kind: EventType, campaign: int | None = 1, at: datetime = T0) -> NewEvent:
    return NewEvent(user, kind, at, campaign, 7, {"recipient": "jörg@example.com"})


async def test_ids_follow_each_other_across_transactions(db: Database) -> None:
    async def write(conn: AsyncConnection) -> int:
        return await events.append(
            conn, [_event(1, EventType.DELIVERY_SENT), _event(2, EventType.DELIVERY_FAILED)]
        )

    assert await db.run(write) == 2
    assert await db.run(write) == 4

    async def read(conn: AsyncConnection) -> list[int]:
        return [ev.id for ev in await events.after(conn, 0, 100)]

    assert await db.run(read) == [1, 2, 3, 4]


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_a_later_transaction_waits_for_the_counter_and_commits_after(db: Database) -> None:
    """The first writer holds the counter until it commits: the second's ids, taken
    after, are never visible before the first's."""
    first_took = asyncio.Event()
    release = asyncio.Event()

    async def slow(conn: AsyncConnection) -> int:
        last = await events.append(conn, [_event(1, EventType.DELIVERY_SENT)])
        first_took.set()
        await release.wait()
        return last

    async def fast(conn: AsyncConnection) -> int:
        return await events.append(conn, [_event(1, EventType.DELIVERY_SENT)])

    slow_task = asyncio.create_task(db.run(slow))
    await first_took.wait()
    fast_task = asyncio.create_task(db.run(fast))

    async def visible(conn: AsyncConnection) -> list[int]:
        return [ev.id for ev in await events.after(conn, 0, 10)]

    await asyncio.sleep(0.2)  # the fast writer is now waiting for the counter, if anywhere
    assert await db.run(visible) == []
    assert not fast_task.done()
    release.set()
    assert await slow_task == 1
    assert await fast_task == 2
    assert await db.run(visible) == [1, 2]


async def test_the_feed_is_per_user_and_filters(db: Database) -> None:
    async def write(conn: AsyncConnection) -> None:
        await events.append(
            conn,
            [
                _event(1, EventType.CAMPAIGN_SCHEDULED, 1),
                _event(2, EventType.DELIVERY_SENT, 2),
                _event(1, EventType.DELIVERY_SENT, 1),
                _event(1, EventType.DELIVERY_SENT, 3),
                _event(1, EventType.RECIPIENT_UNSUBSCRIBED, None),
            ],
        )

    await db.run(write)

    async def feed(conn: AsyncConnection) -> dict[str, list[int]]:
        return {
            "all": [e.id for e in (await events.page(conn, 1, 0, 100))[0]],
            "after": [e.id for e in (await events.page(conn, 1, 3, 100))[0]],
            "limit": [e.id for e in (await events.page(conn, 1, 0, 2))[0]],
            "type": [e.id for e in (await events.page(conn, 1, 0, 100, ["delivery.sent"]))[0]],
            "campaign": [e.id for e in (await events.page(conn, 1, 0, 100, campaign_id=3))[0]],
            "other": [e.id for e in (await events.page(conn, 2, 0, 100))[0]],
        }

    assert await db.run(feed) == {
        "all": [1, 3, 4, 5],
        "after": [4, 5],
        "limit": [1, 3],
        "type": [3, 4],
        "campaign": [4],
        "other": [2],
    }

    async def first(conn: AsyncConnection) -> dict[str, object]:
        return (await events.page(conn, 1, 0, 1))[0][0].item()

    assert await db.run(first) == {
        "eventId": 1,
        "type": "campaign.scheduled",
        "timestamp": "2026-12-01T09:00:00.000Z",
        "data": {"campaignId": 1, "deliveryId": 7, "recipient": "jörg@example.com"},
    }


async def test_prune_leaves_what_the_relay_has_not_published(db: Database) -> None:
    async def write(conn: AsyncConnection) -> None:
        await events.append(conn, [_event(1, EventType.DELIVERY_SENT) for _ in range(4)])

    await db.run(write)

    async def prune(conn: AsyncConnection) -> int:
        return await events.prune(conn, T0 + timedelta(days=1), 100, through=2)

    assert await db.run(prune) == 2

    async def left(conn: AsyncConnection) -> list[int]:
        return [e.id for e in await events.after(conn, 0, 10)]

    assert await db.run(left) == [3, 4]


async def test_a_page_looks_through_a_bounded_range_and_says_where_it_stopped(
    db: Database,
) -> None:
    """A filter that matches nothing still moves the cursor on, a window at a time,
    and never past the last id committed."""

    async def write(conn: AsyncConnection) -> None:
        kinds = [EventType.DELIVERY_SENT] * 9 + [EventType.DELIVERY_FAILED]
        await events.append(conn, [_event(1, kind) for kind in kinds])

    await db.run(write)

    async def failed(conn: AsyncConnection, after: int) -> tuple[list[int], int]:
        found, cursor = await events.page(conn, 1, after, 100, ["delivery.failed"], scan=4)
        return [e.id for e in found], cursor

    assert await db.run(lambda conn: failed(conn, 0)) == ([], 4)
    assert await db.run(lambda conn: failed(conn, 4)) == ([], 8)
    assert await db.run(lambda conn: failed(conn, 8)) == ([10], 10)
    assert await db.run(lambda conn: failed(conn, 10)) == ([], 10)

    async def full(conn: AsyncConnection) -> tuple[list[int], int]:
        found, cursor = await events.page(conn, 1, 0, 3)
        return [e.id for e in found], cursor

    assert await db.run(full) == ([1, 2, 3], 3)


async def test_relay_cursor_starts_at_zero_and_only_moves_forward(db: Database) -> None:
    async def move(conn: AsyncConnection) -> list[int]:
        seen = [await events.cursor(conn, "events", lock=True)]
        await events.advance(conn, "events", 5)
        seen.append(await events.cursor(conn, "events"))
        await events.advance(conn, "events", 3)
        seen.append(await events.cursor(conn, "events"))
        return seen

    assert await db.run(move) == [0, 5, 5]


async def test_prune_deletes_old_events_in_batches(db: Database) -> None:
    async def write(conn: AsyncConnection) -> None:
        await events.append(
            conn,
            [_event(1, EventType.DELIVERY_SENT, at=T0 + timedelta(days=d)) for d in range(5)],
        )

    await db.run(write)

    async def prune(conn: AsyncConnection) -> int:
        return await events.prune(conn, T0 + timedelta(days=3), 2, through=5)

    assert [await db.run(prune) for _ in range(3)] == [2, 1, 0]

    async def left(conn: AsyncConnection) -> list[int]:
        return [e.id for e in await events.after(conn, 0, 10)]

    assert await db.run(left) == [4, 5]


# --- the flush at the end of every unit of work ------------------------------------


async def _staged_ids(db: Database, count: int) -> list[int]:
    """A campaign of ``count`` deliveries, written without events; their ids."""
    new = NewCampaign(1, "s", "b", T0, 0, 1000)
    recipients = [NewDelivery(f"u{i}@example.com", T0) for i in range(count)]

    async def work(conn: AsyncConnection) -> list[int]:
        await insert_campaign(conn, new, recipients, T0)
        events.discard(conn)  # its own "scheduled" event is not this test's business
        return [r.id for r in await conn.execute(select(deliveries.c.id).order_by("id"))]

    return await db.run(work)


async def test_a_flush_numbers_events_in_the_order_they_were_staged(db: Database) -> None:
    """Single events and events read from delivery rows, interleaved, across more than
    one query's worth of parameters (MySQL sends the flush in as few queries as fit)."""
    ids = await _staged_ids(db, 25)
    many = 12_000  # 72,000 parameters: more than one query of the one-trip flush

    async def work(conn: AsyncConnection) -> None:
        events.stage(conn, [_event(1, EventType.CAMPAIGN_SCHEDULED)])
        events.stage(conn, [events.DeliveryEvents(EventType.DELIVERY_CANCELLED, 1, ids, T0, {})])
        events.stage(conn, [_event(2, EventType.DELIVERY_SENT) for _ in range(many)])
        events.stage(
            conn,
            [events.DeliveryEvents(EventType.DELIVERY_SENT, 1, ids[:3], T0, {"smtpCode": 250})],
        )
        events.stage(conn, [_event(1, EventType.CAMPAIGN_COMPLETED)])

    await db.run(work)

    async def read(conn: AsyncConnection) -> list[Event]:
        return await events.after(conn, 0, 20_000)

    found = await db.run(read)
    assert [ev.id for ev in found] == list(range(1, 1 + 1 + 25 + many + 3 + 1))
    kinds = [ev.type for ev in found]
    assert kinds[0] == EventType.CAMPAIGN_SCHEDULED
    assert kinds[1:26] == [EventType.DELIVERY_CANCELLED] * 25
    assert [ev.data["deliveryId"] for ev in found[1:26]] == ids
    assert kinds[26 : 26 + many] == [EventType.DELIVERY_SENT] * many
    assert {ev.user_id for ev in found[26 : 26 + many]} == {2}
    tail = found[26 + many :]
    assert [(ev.type, ev.data.get("deliveryId")) for ev in tail[:3]] == [
        (EventType.DELIVERY_SENT, i) for i in ids[:3]
    ]
    assert tail[0].data["smtpCode"] == 250
    assert tail[3].type == EventType.CAMPAIGN_COMPLETED

    async def counter(conn: AsyncConnection) -> int:
        return await events.last_id(conn)

    assert await db.run(counter) == found[-1].id


async def test_a_flush_that_fails_halfway_stores_nothing(db: Database) -> None:
    """On MySQL the flush is one multi-statement query ending in COMMIT; a statement
    that fails after the counter's UPDATE must fail the unit of work and roll back
    all of it, not be found (and only logged) when the cursor closes."""
    ids = await _staged_ids(db, 2)

    async def squat(conn: AsyncConnection) -> None:
        # A row where the next event's id will be: its INSERT is refused.
        await conn.execute(
            insert(events_table).values(
                id=1, user_id=9, type="x", occurred_at=T0, campaign_id=None, data="{}"
            )
        )

    await db.run(squat)

    async def work(conn: AsyncConnection) -> None:
        await conn.execute(
            update(deliveries).where(deliveries.c.id == ids[0]).values(status="PAUSED")
        )
        events.stage(conn, [_event(1, EventType.DELIVERY_SENT)])

    with pytest.raises(DuplicateKey):
        await db.run(work)

    async def state(conn: AsyncConnection) -> tuple[str, int, int]:
        status = (
            await conn.execute(select(deliveries.c.status).where(deliveries.c.id == ids[0]))
        ).scalar_one()
        count = (await conn.execute(select(func.count()).select_from(events_table))).scalar_one()
        return status, count, await events.last_id(conn)

    assert await db.run(state) == ("SCHEDULED", 1, 0)


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_a_flush_leaves_the_counter_free_when_it_returns(db: Database) -> None:
    """On MySQL the flush ends with the transaction's COMMIT, sent with the counter's
    UPDATE: no writer waits for the counter while this client gets round to its own
    COMMIT (which finds nothing left to do)."""
    async with db.engine.begin() as conn:
        events.stage(conn, [_event(1, EventType.DELIVERY_SENT)])
        await events.flush(conn)
        async with db.engine.connect() as other:
            await other.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
            # Waits a second and fails if the first connection still holds the counter.
            taken = await events.append(other, [_event(2, EventType.DELIVERY_SENT)])
            await other.commit()
    assert taken == 2
