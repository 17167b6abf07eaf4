"""A campaign's plan leaves room for each send's answer, on each database: a worker that
claims each delivery at its planned time, with sends answered within
``MAILSCHED_PLAN_MARGIN_SECONDS``, is never told to wait, whichever rule paces the
campaign. Without the margin, each gap or window opens one send's latency after the
plan, and the claim holds the send back.

Created through :class:`Campaigns` as the API does, claimed as the worker does (see
test_shaping_claims), each send answered :data:`SEND_TIME` after its claim.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.shaping import Shaping
from mailsched.producer.campaigns import Campaigns
from mailsched.producer.schemas import CampaignRequest
from mailsched.store.db import Database
from mailsched.store.tables import deliveries
from tests.integration.test_shaping_claims import SEND_TIME, T0, USER, Driver

d = deliveries.c
MARGIN = SEND_TIME + timedelta(milliseconds=50)


async def created(db: Database, count: int, delay: int, limit: int, margin: timedelta) -> int:
    campaigns = Campaigns(db, timedelta(hours=1), lambda: T0 - timedelta(minutes=1), margin=margin)
    request = CampaignRequest.model_validate(
        {
            "userId": USER,
            "subject": "s",
            "body": "b",
            "startTime": T0.isoformat(),
            "delaySeconds": delay,
            "hourlyLimit": limit,
            "recipients": [f"u{i}@example.org" for i in range(count)],
        }
    )
    body = json.loads((await campaigns.create(request)).body)
    return int(body["campaignId"])


async def plan_of(db: Database, campaign_id: int) -> list[datetime]:
    async def work(conn: AsyncConnection) -> list[datetime]:
        rows = await conn.execute(
            select(d.scheduled_at).where(d.campaign_id == campaign_id).order_by(d.id)
        )
        return sorted({r.scheduled_at for r in rows})

    return await db.run(work)


@pytest.mark.parametrize(
    ("count", "delay", "limit", "per_time"),
    [(6, 2, 1000, 1), (8, 0, 2, 2)],
    ids=["delay", "hourly-limit"],
)
async def test_each_send_is_claimed_on_its_plan(
    db: Database, count: int, delay: int, limit: int, per_time: int
) -> None:
    ident = await created(db, count, delay, limit, MARGIN)
    driver = Driver(db, Shaping())
    times = await plan_of(db, ident)
    assert len(times) == count // per_time
    gap = timedelta(seconds=delay) if delay else timedelta(hours=1)
    assert [b - a for a, b in itertools.pairwise(times)] == [gap + MARGIN] * (len(times) - 1)
    for at in times:
        await driver.dispatch(at)
        claims = await driver.claim([ident], at)
        # Admitted at once: the rules, measured from the answers, opened on plan.
        assert len(claims[ident].admitted) == per_time, at
        assert not claims[ident].waiting and not claims[ident].replanned
    assert len(driver.sent) == count


async def test_without_the_margin_the_claim_holds_sends_back(db: Database) -> None:
    """The lag the margin removes: the second send is due before the first's answer
    plus the delay, so the claim makes it wait."""
    ident = await created(db, 3, 2, 1000, timedelta(0))
    driver = Driver(db, Shaping())
    first, second, _ = await plan_of(db, ident)
    await driver.dispatch(first)
    await driver.claim([ident], first)
    await driver.dispatch(second)
    claims = await driver.claim([ident], second)
    assert not claims[ident].admitted
    assert claims[ident].wait_until == first + SEND_TIME + timedelta(seconds=2)
