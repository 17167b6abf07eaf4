"""The store's promises, on each database: claims never overlap, outcomes land row by row."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.model import DeliveryStatus, SendOutcome
from mailsched.queue import DueDelivery
from mailsched.store import dispatch, sending
from mailsched.store.campaigns import NewCampaign, NewDelivery, complete_finished, insert_campaign
from mailsched.store.db import Database, create_engine
from mailsched.store.tables import campaigns, deliveries, send_slots

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


class _User1(dict[int, int]):
    """Every campaign of these tests belongs to user 1 (see :func:`seed`)."""

    def __missing__(self, key: int) -> int:
        return 1


ALL_USER_1 = _User1()
d = deliveries.c

#: For races between two writing transactions: SQLite runs one at a time (every
#: transaction begins IMMEDIATE), so they cannot happen there.
on_mariadb_only = pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)


async def seed(db: Database, count: int) -> int:
    new = NewCampaign(1, "s", "b", NOW, 0, 1000)
    recipients = [NewDelivery(f"u{i}@example.com", NOW) for i in range(count)]

    async def work(conn: AsyncConnection) -> int:
        return await insert_campaign(conn, new, recipients, NOW)

    return await db.run(work)


@on_mariadb_only
async def test_a_dispatcher_skips_the_deliveries_another_one_is_claiming(db: Database) -> None:
    await seed(db, 6)
    every = set(await db.run(lambda conn: conn.scalars(select(d.id))))
    # A second engine: the other dispatcher's own connection, and no retry to hide a wait.
    url = db.engine.url.render_as_string(hide_password=False)
    other_db = Database(create_engine(url, pool_size=1), retries=0)
    claimed, read = asyncio.Event(), asyncio.Event()

    async def first(conn: AsyncConnection) -> list[DueDelivery]:
        due = await dispatch.claim_due(conn, NOW, 4, NOW)
        claimed.set()
        # Hold the claim open, as while publishing, until the other has read its rows.
        await read.wait()
        return due

    def has_read(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            read.set()

    async def second(conn: AsyncConnection) -> list[DueDelivery]:
        event.listen(conn.sync_connection, "after_cursor_execute", has_read)
        return await dispatch.claim_due(conn, NOW, 4, NOW)

    async def second_while_first_holds() -> list[DueDelivery]:
        await claimed.wait()
        try:
            return await other_db.run(second)
        finally:
            read.set()  # a claim that failed (or waited out a lock) must not hang the first

    try:
        held, other = await asyncio.gather(db.run(first), second_while_first_holds())
    finally:
        await other_db.dispose()

    # Without the locks, the second would read 4 of the 6 as SCHEDULED: 2 of the first's.
    assert len(held) == 4
    assert sorted(x.delivery_id for x in other) == sorted(every - {x.delivery_id for x in held})
    counts = await db.run(dispatch.count_by_status)
    assert counts[DeliveryStatus.QUEUED] == 6


#: The dispatcher's claim query (``dispatch.claim_due``), as each database gets it.
CLAIM = (
    "SELECT id, campaign_id FROM deliveries WHERE status = 'SCHEDULED' "
    "AND scheduled_at <= :t ORDER BY scheduled_at LIMIT 1000"
)


async def test_the_claim_query_uses_the_due_index(db: Database) -> None:
    await seed(db, 200)

    async def explain(conn: AsyncConnection) -> list[dict[str, Any]]:
        if db.dialect == "mysql":
            query = f"EXPLAIN {CLAIM} FOR UPDATE SKIP LOCKED"
        else:
            query = f"EXPLAIN QUERY PLAN {CLAIM}"
        rows = await conn.execute(text(query), {"t": NOW.replace(tzinfo=None)})
        return [dict(r._mapping) for r in rows]

    plan = await db.run(explain)
    if db.dialect == "mysql":
        (step,) = plan
        assert step["key"] == "ix_deliveries_due", plan
        assert "filesort" not in str(step.get("Extra") or "")
    else:
        # SQLite names the index it searches, and a sort it adds ("USE TEMP B-TREE").
        steps = " / ".join(step["detail"] for step in plan)
        assert "USING INDEX ix_deliveries_due" in steps, steps
        assert "TEMP B-TREE" not in steps, steps


async def test_expired_leases_are_taken_over_and_counted(db: Database) -> None:
    await seed(db, 2)

    async def lease_out(conn: AsyncConnection) -> None:
        await conn.execute(
            text("UPDATE deliveries SET status='SENDING', lease_owner='gone', lease_until=:t"),
            {"t": (NOW - timedelta(seconds=1)).replace(tzinfo=None)},
        )

    await db.run(lease_out)

    async def reap(conn: AsyncConnection) -> int:
        return await dispatch.expire_leases(conn, NOW, 100)

    assert await db.run(reap) == 2
    assert await db.run(reap) == 0
    counts = await db.run(dispatch.count_by_status)
    assert counts[DeliveryStatus.SCHEDULED] == 2


async def test_outcomes_are_recorded_row_by_row_for_the_lease_holder_only(db: Database) -> None:
    campaign_id = await seed(db, 6)
    took = NOW + timedelta(microseconds=123_456)

    async def claim(conn: AsyncConnection) -> list[int]:
        ids = [r.id for r in await conn.execute(select(d.id).order_by(d.id))]
        await conn.execute(update(deliveries).values(status=DeliveryStatus.QUEUED))
        lease_until = NOW + timedelta(minutes=1)
        await sending.take_slots(conn, {campaign_id: (1, ids)}, NOW, "me", lease_until)
        # The sixth was taken over by another worker meanwhile.
        await conn.execute(update(deliveries).where(d.id == ids[5]).values(lease_owner="other"))
        return ids

    ids = await db.run(claim)
    outcomes = sending.Outcomes(
        sent=[(ids[0], took), (ids[1], took + timedelta(seconds=1))],
        retry=[sending.Retry(ids[2], NOW + timedelta(minutes=5), "451 later", 0)],
        failed=[(ids[3], "550 no such user")],
        released=[ids[4], ids[5]],
        finished=[
            (1, took, SendOutcome.SENT),
            (2, took + timedelta(seconds=1), SendOutcome.SENT),
            (3, took, SendOutcome.SLOWED),
        ],
    )

    async def write(conn: AsyncConnection) -> int:
        return await sending.record(conn, "me", {campaign_id: outcomes}, NOW, ALL_USER_1)

    assert await db.run(write) == 1  # the taken-over row

    async def read(conn: AsyncConnection) -> dict[int, Any]:
        rows = await conn.execute(select(deliveries).order_by(d.id))
        return {r.id: r for r in rows}

    rows = await db.run(read)
    sent, later, retry, failed, released, other = (rows[i] for i in ids)
    assert (sent.status, sent.sent_at, sent.lease_owner) == ("SENT", took, None)
    assert later.sent_at == took + timedelta(seconds=1)
    assert (retry.status, retry.scheduled_at, retry.last_error, retry.attempts) == (
        "SCHEDULED",
        NOW + timedelta(minutes=5),
        "451 later",
        0,
    )
    assert (failed.status, failed.last_error, failed.attempts) == ("FAILED", "550 no such user", 1)
    assert (released.status, released.scheduled_at) == ("SCHEDULED", NOW)
    assert (other.status, other.lease_owner) == ("SENDING", "other")

    async def slots(conn: AsyncConnection) -> list[tuple[Any, ...]]:
        rows = await conn.execute(
            select(send_slots.c.seq, send_slots.c.finished_at, send_slots.c.outcome).order_by(
                send_slots.c.seq
            )
        )
        return [tuple(r) for r in rows]

    assert (await db.run(slots))[:4] == [
        (1, took, "SENT"),
        (2, took + timedelta(seconds=1), "SENT"),
        (3, took, "SLOWED"),
        (4, None, None),
    ]


async def test_one_write_records_several_campaigns_whose_slot_numbers_overlap(
    db: Database,
) -> None:
    first, second = await seed(db, 2), await seed(db, 2)
    took = NOW + timedelta(seconds=1)

    async def claim(conn: AsyncConnection) -> dict[int, list[int]]:
        rows = await conn.execute(select(d.id, d.campaign_id).order_by(d.id))
        ids: dict[int, list[int]] = {}
        for r in rows:
            ids.setdefault(r.campaign_id, []).append(r.id)
        await conn.execute(update(deliveries).values(status=DeliveryStatus.QUEUED))
        taken = {cid: (1, found) for cid, found in ids.items()}
        await sending.take_slots(conn, taken, NOW, "me", NOW + timedelta(minutes=1))
        return ids

    ids = await db.run(claim)
    batch = {
        first: sending.Outcomes(
            sent=[(ids[first][0], took)], finished=[(1, took, SendOutcome.SENT)]
        ),
        second: sending.Outcomes(
            sent=[(ids[second][1], took + timedelta(seconds=1))],
            finished=[(2, took + timedelta(seconds=1), SendOutcome.SENT)],
        ),
    }

    assert await db.run(lambda conn: sending.record(conn, "me", batch, NOW, ALL_USER_1)) == 0

    async def slots(conn: AsyncConnection) -> list[tuple[Any, ...]]:
        c = send_slots.c
        rows = await conn.execute(
            select(c.campaign_id, c.seq, c.finished_at).order_by(c.campaign_id, c.seq)
        )
        return [tuple(r) for r in rows]

    assert await db.run(slots) == [
        (first, 1, took),
        (first, 2, None),
        (second, 1, None),
        (second, 2, took + timedelta(seconds=1)),
    ]


@on_mariadb_only
async def test_the_last_of_two_concurrent_final_writes_completes_the_campaign(
    db: Database,
) -> None:
    campaign_id = await seed(db, 2)

    async def claim(conn: AsyncConnection) -> list[int]:
        ids = [r.id for r in await conn.execute(select(d.id).order_by(d.id))]
        await conn.execute(update(deliveries).values(status=DeliveryStatus.QUEUED))
        await sending.take_slots(conn, {campaign_id: (1, ids)}, NOW, "me", NOW)
        return ids

    first, second = await db.run(claim)
    written = {first: asyncio.Event(), second: asyncio.Event()}

    def finishing(mine: int, seq: int, other: int) -> Callable[[AsyncConnection], Awaitable[int]]:
        async def work(conn: AsyncConnection) -> int:
            batch = {
                campaign_id: sending.Outcomes(
                    sent=[(mine, NOW)], finished=[(seq, NOW, SendOutcome.SENT)]
                )
            }
            await sending.record(conn, "me", batch, NOW, ALL_USER_1)
            written[mine].set()
            # Both check while the other's outcome is written but not committed.
            await written[other].wait()
            return await complete_finished(conn, [campaign_id], NOW)

        return work

    # Each sees the other's delivery still SENDING; without the locked re-check both
    # would commit and leave the campaign RUNNING. (The two lock requests deadlock
    # on the foreign-key locks the writes hold; Database.run retries the loser.)
    results = await asyncio.gather(
        db.run(finishing(first, 1, second)), db.run(finishing(second, 2, first))
    )

    assert sorted(results) == [0, 1]

    async def status(conn: AsyncConnection) -> str:
        query = select(campaigns.c.status).where(campaigns.c.id == campaign_id)
        return str((await conn.execute(query)).scalar_one())

    assert await db.run(status) == "COMPLETED"


# --- the fast paths, which bypass UTCDateTime's parameter processing ------------------


async def test_the_bulk_insert_refuses_a_naive_time(db: Database) -> None:
    new = NewCampaign(1, "s", "b", NOW, 0, 1000)
    naive = [NewDelivery("a@example.com", NOW), NewDelivery("b@example.com", datetime(2026, 1, 1))]

    with pytest.raises(ValueError, match="naive datetime"):
        await db.run(lambda conn: insert_campaign(conn, new, naive, NOW))

    count = await db.run(lambda conn: conn.scalar(select(func.count()).select_from(deliveries)))
    assert count == 0


async def test_outcome_writes_refuse_a_naive_time(db: Database) -> None:
    campaign_id = await seed(db, 1)

    async def claim(conn: AsyncConnection) -> int:
        (did,) = [r.id for r in await conn.execute(select(d.id))]
        await conn.execute(update(deliveries).values(status=DeliveryStatus.QUEUED))
        await sending.take_slots(conn, {campaign_id: (1, [did])}, NOW, "me", NOW)
        return did

    did = await db.run(claim)
    sent_at = datetime(2026, 11, 28, 12, 0, 1)  # naive
    outcomes = sending.Outcomes(sent=[(did, sent_at)], finished=[(1, sent_at, SendOutcome.SENT)])

    with pytest.raises(ValueError, match="naive datetime"):
        await db.run(
            lambda conn: sending.record(conn, "me", {campaign_id: outcomes}, NOW, ALL_USER_1)
        )

    status = await db.run(lambda conn: conn.scalar(select(d.status).where(d.id == did)))
    assert status == DeliveryStatus.SENDING
