"""A delivery that may start within ``ahead`` of the claim is admitted then, with the
moment it starts, on each database; only when every earlier send of its campaign has
been answered, so the moment is exact.

Without it, a held delivery was asked about again at its moment and sent a claim's
round trip later, and under the ``smooth`` shape (campaigns with a delay of 1 s)
each campaign fell further behind its plan with every send.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.consumer.claim import Claim, ClaimRequest, claim
from mailsched.domain.shaping import Shaping
from mailsched.store.db import Database
from tests.integration.test_shaping_claims import SEND_TIME, T0, Driver

AHEAD = timedelta(milliseconds=250)
SECOND = timedelta(seconds=1)


async def _claim(db: Database, driver: Driver, cid: int, now_offset: timedelta) -> Claim:
    """Claim what is queued of the campaign at ``T0 + now_offset``, with ``AHEAD``;
    nothing is answered."""
    ids = {c: found for c, found in (await driver.queued([cid])).items() if found}
    ask: ClaimRequest = replace(driver.request(ids, T0 + now_offset, "worker-1"), ahead=AHEAD)

    async def work(conn: AsyncConnection) -> dict[int, Claim]:
        return await claim(conn, ask)

    return (await db.run(work))[cid]


async def test_a_send_due_within_the_horizon_is_admitted_with_its_moment(db: Database) -> None:
    driver = Driver(db, Shaping())
    cid = await driver.campaign(["a@example.org", "b@example.org"], T0, delay=1)
    await driver.dispatch(T0)
    await driver.claim([cid], T0)  # the first, answered at T0 + SEND_TIME
    opens = T0 + SEND_TIME + SECOND
    early = await _claim(db, driver, cid, opens - T0 - AHEAD - timedelta(milliseconds=1))
    assert not early.admitted, "beyond the horizon: held"
    assert early.wait_until == opens
    result = await _claim(db, driver, cid, opens - T0 - AHEAD)
    assert [r.recipient for r in result.admitted] == ["b@example.org"]
    assert result.starts == [opens]
    assert result.first_seq == 2


async def test_nothing_is_admitted_ahead_while_a_send_is_in_flight(db: Database) -> None:
    """The gap is measured from an answer nobody has yet: the claim waits for it."""
    driver = Driver(db, Shaping())
    cid = await driver.campaign(["a@example.org", "b@example.org"], T0, delay=1)
    await driver.dispatch(T0)
    first = await _claim(db, driver, cid, timedelta(0))
    assert len(first.admitted) == 1 and not first.starts  # sent now, never answered
    later = T0 + SECOND - timedelta(milliseconds=100)
    result = await _claim(db, driver, cid, later - T0)
    assert not result.admitted
    # In flight, the first counts as ending now: the gap opens a second after.
    assert result.wait_until == later + SECOND


async def test_a_send_admitted_ahead_holds_back_the_next(db: Database) -> None:
    """Admitted ahead, a send is in flight from its claim: another worker's claim in the
    meantime cannot send the next one through the gap."""
    driver = Driver(db, Shaping())
    recipients = ["a@example.org", "b@example.org", "c@example.org"]
    cid = await driver.campaign(recipients, T0, delay=1)
    await driver.dispatch(T0)
    await driver.claim([cid], T0)
    opens = T0 + SEND_TIME + SECOND
    ahead = await _claim(db, driver, cid, opens - T0 - AHEAD)
    assert ahead.starts == [opens]
    other = await _claim(db, driver, cid, opens - T0 + timedelta(milliseconds=10))
    assert not other.admitted
