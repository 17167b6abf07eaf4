"""One campaign's claim: which of the deliveries a worker holds messages for may start now.

Runs in one transaction under the campaign's row lock. It sets aside, as
SUPPRESSED, deliveries whose address the user suppressed after they were
planned. It reads when the campaign's earlier sends really ended (the server's
reply, or "now" for one still in flight), asks the pure core for a permit, takes
send slots for the admitted deliveries, and when the campaign has fallen behind
its plan, plans the rest of it again from now rather than letting it burst.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.limits import permit
from mailsched.domain.model import Campaign
from mailsched.domain.plan import Rules
from mailsched.store import sending, suppressions
from mailsched.store.campaigns import complete_if_done, get_campaign
from mailsched.store.sending import Claimable


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What the worker asks: these deliveries of this campaign, at this moment."""

    campaign_id: int
    delivery_ids: list[int]
    now: datetime
    owner: str
    lease: timedelta
    hold: timedelta
    window: timedelta


@dataclass(slots=True)
class Claim:
    """The answer: what to send now, what to wait for, what went back to the database."""

    campaign: Campaign | None = None
    #: The moment the admitted deliveries' slots start.
    claimed_at: datetime | None = None
    admitted: list[Claimable] = field(default_factory=list)
    #: The send slot of ``admitted[i]`` is number ``first_seq + i``.
    first_seq: int = 0
    lease_until: datetime | None = None
    #: Deliveries to ask about again at ``wait_until`` (due within the hold).
    waiting: list[int] = field(default_factory=list)
    wait_until: datetime | None = None
    #: How many deliveries of the campaign were planned again (it fell behind).
    replanned: int = 0
    #: How many went to SUPPRESSED: their address was suppressed after they were planned.
    suppressed: int = 0


async def claim(conn: AsyncConnection, req: ClaimRequest) -> Claim:
    """Decide and record, under the campaign lock, which deliveries start sending now."""
    campaign = await get_campaign(conn, req.campaign_id, lock=True)
    if campaign is None:
        return Claim()
    result = Claim(campaign=campaign, claimed_at=req.now)
    if not campaign.status.sends:
        # Paused or cancelled since these were queued (or a retry came due after):
        # they follow their campaign instead of going out.
        await sending.hold_back(conn, req.delivery_ids, campaign.status)
        return result
    rows = await sending.queued(conn, req.campaign_id, req.delivery_ids)
    rows = await _drop_suppressed(conn, campaign, rows, req.now, result)
    if not rows:
        return result
    rules = campaign.rules(req.window)
    last, refs = await _history(conn, campaign, rules, len(rows), req.now)
    answer = permit(req.now, [r.scheduled_at for r in rows], rules, last, refs)

    admitted, rest = rows[: answer.admitted], rows[answer.admitted :]
    if admitted:
        result.admitted = admitted
        result.first_seq = campaign.slot_seq + 1
        result.lease_until = req.now + req.lease
        await sending.take_slots(
            conn,
            campaign.id,
            result.first_seq,
            [r.id for r in admitted],
            req.now,
            req.owner,
            result.lease_until,
        )
    if not rest or answer.next_at is None:
        return result
    if answer.next_at - req.now <= req.hold:
        result.waiting = [r.id for r in rest]
        result.wait_until = answer.next_at
    elif answer.next_at > rest[0].scheduled_at + req.hold:
        result.replanned = await sending.replan(conn, campaign.id, rules, req.now)
    else:
        # Queued ahead of its time (an old message): the dispatcher brings it back.
        await sending.reschedule(conn, [(r.id, r.scheduled_at) for r in rest])
    return result


async def _drop_suppressed(
    conn: AsyncConnection, campaign: Campaign, rows: list[Claimable], now: datetime, result: Claim
) -> list[Claimable]:
    """``rows`` less those whose address the campaign's user has suppressed since they were
    planned; those become SUPPRESSED and take no send slot. One indexed query per claim."""
    if not rows:
        return rows
    blocked = await suppressions.suppressed(conn, campaign.user_id, [r.recipient for r in rows])
    if not blocked:
        return rows
    result.suppressed = await suppressions.mark_suppressed(
        conn, [r.id for r in rows if r.recipient in blocked]
    )
    await complete_if_done(conn, campaign.id, now)
    return [r for r in rows if r.recipient not in blocked]


async def _history(
    conn: AsyncConnection, campaign: Campaign, rules: Rules, count: int, now: datetime
) -> tuple[datetime | None, list[datetime | None]]:
    """When the latest send finished, and the window references for the next ``count`` sends."""
    n, limit = campaign.slot_seq, rules.limit
    first_ref = max(1, n + 1 - limit)
    times = await sending.slot_times(conn, campaign.id, first_ref, n + count - limit, now)
    if n >= 1 and n not in times:
        times.update(await sending.slot_times(conn, campaign.id, n, n, now))
    refs = [times.get(n + 1 + j - limit) for j in range(min(count, limit))]
    return times.get(n), refs
