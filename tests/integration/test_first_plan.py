"""Each delivery keeps its first plan when a re-plan moves it, on each database: the
claim of a campaign that fell behind plans its rest again from now, a retry waits,
and lateness is still measured from when they were first planned. An operator's
resume plans anew.

Driven as the worker and the dispatcher call the store (see test_shaping_claims).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.consumer.claim import claim
from mailsched.domain.model import CampaignStatus, DeliveryStatus, SendOutcome
from mailsched.domain.shaping import Shaping
from mailsched.producer.campaigns import Campaigns
from mailsched.store import sending
from mailsched.store.campaigns import list_deliveries
from mailsched.store.db import Database
from mailsched.store.tables import deliveries
from tests.integration.test_shaping_claims import T0, USER, Driver

d = deliveries.c
SECOND = timedelta(seconds=1)


async def _plans(db: Database, campaign_id: int) -> dict[str, tuple[object, object, str]]:
    """Each recipient's (first plan, current plan, status)."""

    async def work(conn: AsyncConnection) -> dict[str, tuple[object, object, str]]:
        rows = await conn.execute(
            select(d.recipient, d.planned_at, d.scheduled_at, d.status).where(
                d.campaign_id == campaign_id
            )
        )
        return {r.recipient: (r.planned_at, r.scheduled_at, r.status) for r in rows}

    return await db.run(work)


async def test_a_replan_keeps_the_first_plan_and_the_listing_shows_it(db: Database) -> None:
    driver = Driver(db, Shaping())
    # Ten sends 5 s apart, from T0 (longer than the worker's hold: it plans them again
    # rather than wait).
    ident = await driver.campaign([f"u{i}@example.org" for i in range(10)], T0, delay=5)
    first = {r: at for r, (_, at, _) in (await _plans(db, ident)).items()}
    assert all(planned is None for planned, _, _ in (await _plans(db, ident)).values())

    # The worker comes back 60 s late: one goes now, the rest is planned again from now.
    late = T0 + 60 * SECOND
    await driver.dispatch(late)
    claims = await driver.claim([ident], late)
    assert len(claims[ident].admitted) == 1 and claims[ident].replanned == 9

    plans = await _plans(db, ident)
    moved = {r: p for r, p in plans.items() if p[2] == DeliveryStatus.SCHEDULED}
    assert len(moved) == 9
    for recipient, (planned, scheduled, _) in moved.items():
        # The first plan is kept, the new one is later than it.
        assert planned == first[recipient]
        assert scheduled > first[recipient]  # type: ignore[operator]

    # Planned again a second time: still the first plan.
    later = late + 60 * SECOND
    await driver.dispatch(later)
    await driver.claim([ident], later)
    again = await _plans(db, ident)
    for recipient, (planned, _, status) in again.items():
        if status == DeliveryStatus.SCHEDULED:
            assert planned == first[recipient]

    async def page(conn: AsyncConnection) -> dict[str, object]:
        rows = await list_deliveries(conn, ident, None, 0, 100)
        return {r.recipient: r.planned_at for r in rows}

    assert await db.run(page) == first


async def test_a_resume_plans_anew(db: Database) -> None:
    driver = Driver(db, Shaping())
    ident = await driver.campaign([f"u{i}@example.org" for i in range(5)], T0, delay=5)
    late = T0 + 60 * SECOND
    await driver.dispatch(late)
    await driver.claim([ident], late)
    assert any(p is not None for p, _, _ in (await _plans(db, ident)).values())

    campaigns = Campaigns(db, timedelta(hours=1), lambda: late + SECOND)
    await campaigns.pause(USER, ident)
    resumed = await campaigns.resume(USER, ident)
    assert resumed.status == CampaignStatus.RUNNING

    for planned, scheduled, status in (await _plans(db, ident)).values():
        if status == DeliveryStatus.SCHEDULED:
            # The operator's resume is the new plan: nothing to be late against before it.
            assert planned is None
            assert scheduled >= late + SECOND  # type: ignore[operator]


async def test_a_retry_keeps_the_first_plan(db: Database) -> None:
    driver = Driver(db, Shaping())
    ident = await driver.campaign(["u0@example.org"], T0)
    await driver.dispatch(T0)
    ask = driver.request(await driver.queued([ident]), T0, "worker-1")
    claims = await db.run(lambda conn: claim(conn, ask))
    [row] = claims[ident].admitted
    retry_at = T0 + 30 * SECOND
    outcome = sending.Outcomes(
        retry=[sending.Retry(row.id, retry_at, "451 try later", 1)],
        finished=[(claims[ident].first_seq, T0 + SECOND, SendOutcome.RETRY)],
    )

    async def record(conn: AsyncConnection) -> int:
        return await sending.record(conn, "worker-1", {ident: outcome}, T0 + SECOND, {ident: USER})

    await db.run(record)
    [(planned, scheduled, status)] = (await _plans(db, ident)).values()
    # The retry waits; the first plan stays what it was (MySQL reads scheduled_at as
    # the assignments before it in the statement left it: the first plan goes first).
    assert (planned, scheduled, status) == (T0, retry_at, DeliveryStatus.SCHEDULED)
