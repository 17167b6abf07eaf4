"""A batch's claim: which of the deliveries a worker holds messages for may start now.

Runs in one transaction under the row locks of the batch's campaigns, taken in id
order (so two workers' overlapping batches wait for each other, never deadlock),
with the same handful of statements however many campaigns the batch holds: a
batch of a thousand small campaigns is one claim, not a thousand. For each
campaign it sets aside, as SUPPRESSED, deliveries whose address the user
suppressed after they were planned, reads when the campaign's earlier sends
really ended (the server's reply, or "now" for one still in flight), asks the
pure core for a permit, takes send slots for the admitted deliveries, and when
the campaign has fallen behind its plan, plans the rest of it again from now
rather than letting it burst. Under a sending calendar, a delivery may start
only while its recipient's window is open: one that comes due after its window
closed counts as behind its plan, and the campaign is planned again into the
next openings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.limits import permit
from mailsched.domain.model import Campaign, CampaignStatus
from mailsched.store import sending, suppressions
from mailsched.store.campaigns import complete_if_done, get_campaigns
from mailsched.store.sending import Claimable
from mailsched.store.transitions import CampaignChange


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What the worker asks: these deliveries (by campaign), at this moment."""

    deliveries: Mapping[int, Sequence[int]]
    now: datetime
    owner: str
    lease: timedelta
    hold: timedelta
    window: timedelta


@dataclass(slots=True)
class Claim:
    """The answer for one campaign: what to send now, what to wait for, what went back."""

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


async def claim(conn: AsyncConnection, req: ClaimRequest) -> dict[int, Claim]:
    """Decide and record, under the campaigns' locks, which deliveries start sending now;
    one :class:`Claim` per campaign asked about."""
    stored = await get_campaigns(conn, list(req.deliveries), lock=True)
    results = {cid: Claim(campaign=stored.get(cid), claimed_at=req.now) for cid in req.deliveries}
    live = {cid: c for cid, c in stored.items() if c.status.sends}
    for cid, campaign in stored.items():
        if cid not in live:
            # Paused or cancelled since these were queued (or a retry came due after):
            # they follow their campaign instead of going out.
            await sending.hold_back(conn, req.deliveries[cid], campaign.status, req.now)
    ids = [i for cid in live for i in req.deliveries[cid]]
    queued = await sending.queued(conn, ids) if ids else {}
    rows = {cid: queued[cid] for cid in live if cid in queued}
    rows = await _drop_suppressed(conn, live, rows, req.now, results)
    histories = await _histories(conn, live, rows, req.now)
    late: dict[int, tuple[list[Claimable], datetime]] = {}
    for cid, campaign in live.items():
        if rows.get(cid):
            later = _decide(req, campaign, rows[cid], histories[cid], results[cid])
            if later is not None:
                late[cid] = later
    taken = {r.campaign.id: r for r in results.values() if r.admitted and r.campaign}
    if taken:
        starting = [
            CampaignChange(cid, live[cid].user_id, live[cid].status)
            for cid in taken
            if live[cid].status == CampaignStatus.SCHEDULED
        ]
        await sending.take_slots(
            conn,
            {cid: (r.first_seq, [row.id for row in r.admitted]) for cid, r in taken.items()},
            req.now,
            req.owner,
            req.now + req.lease,
            starting,
        )
    # After the slots are taken: a re-plan counts the sends just admitted as in flight.
    for cid, (rest, next_at) in late.items():
        if next_at > rest[0].scheduled_at + req.hold:
            results[cid].replanned = await sending.replan(conn, live[cid], req.window, req.now)
        else:
            # Queued ahead of its time (an old message): the dispatcher brings it back.
            await sending.reschedule(conn, [(r.id, r.scheduled_at) for r in rest])
    return results


def _decide(
    req: ClaimRequest,
    campaign: Campaign,
    rows: list[Claimable],
    history: tuple[datetime | None, list[datetime | None]],
    result: Claim,
) -> tuple[list[Claimable], datetime] | None:
    """Admit what the rules allow now, and hold what may start within the hold; return
    the rest and when the first of it may start, if that is later (the campaign fell
    behind, or a message came early)."""
    last, refs = history
    floors = {r.id: _floor(campaign, r, req.now) for r in rows}
    # Those whose window is open now go first, whatever their planned order.
    rows.sort(key=lambda r: (floors[r.id], r.scheduled_at, r.id))
    rules = campaign.rules(req.window)
    answer = permit(req.now, [floors[r.id] for r in rows], rules, last, refs)
    admitted, rest = rows[: answer.admitted], rows[answer.admitted :]
    if admitted:
        result.admitted = admitted
        result.first_seq = campaign.slot_seq + 1
        result.lease_until = req.now + req.lease
    if not rest or answer.next_at is None:
        return None
    if answer.next_at - req.now <= req.hold:
        result.waiting = [r.id for r in rest]
        result.wait_until = answer.next_at
        return None
    return rest, answer.next_at


def _floor(campaign: Campaign, row: Claimable, now: datetime) -> datetime:
    """The earliest a delivery may start: its planned time, and, under a calendar, the
    next opening of its recipient's window from then (a delivery that comes due after
    its window closed waits for the next one, and so is planned again)."""
    floor = max(now, row.scheduled_at)
    opening = campaign.opening(row.timezone)
    return floor if opening is None else opening.next_open(floor)


async def _drop_suppressed(
    conn: AsyncConnection,
    live: Mapping[int, Campaign],
    rows: dict[int, list[Claimable]],
    now: datetime,
    results: Mapping[int, Claim],
) -> dict[int, list[Claimable]]:
    """``rows`` less those whose address their campaign's user has suppressed since they
    were planned; those become SUPPRESSED and take no send slot. One indexed query per
    user (a batch is usually one user's)."""
    addresses: dict[int, list[str]] = {}
    for cid, found in rows.items():
        addresses.setdefault(live[cid].user_id, []).extend(r.recipient for r in found)
    blocked = {
        user: await suppressions.suppressed(conn, user, wanted, now)
        for user, wanted in addresses.items()
    }
    kept: dict[int, list[Claimable]] = {}
    for cid, found in rows.items():
        stop = blocked[live[cid].user_id]
        kept[cid] = [r for r in found if r.recipient not in stop]
        if len(kept[cid]) < len(found):
            results[cid].suppressed = await suppressions.mark_suppressed(
                conn, [r.id for r in found if r.recipient in stop], now
            )
            await complete_if_done(conn, cid, now)
    return kept


async def _histories(
    conn: AsyncConnection,
    live: Mapping[int, Campaign],
    rows: Mapping[int, list[Claimable]],
    now: datetime,
) -> dict[int, tuple[datetime | None, list[datetime | None]]]:
    """Per campaign: when its latest send finished, and the window references for its
    next sends (the send ``limit`` places before each). One query for the batch."""
    wanted: dict[int, list[tuple[int, int]]] = {}
    for cid, found in rows.items():
        n, limit = live[cid].slot_seq, live[cid].hourly_limit
        wanted[cid] = [(max(1, n + 1 - limit), n + len(found) - limit), (n, n)]
    times = await sending.slot_times(conn, wanted, now)
    histories = {}
    for cid, found in rows.items():
        n, limit = live[cid].slot_seq, live[cid].hourly_limit
        got = times.get(cid, {})
        refs = [got.get(n + 1 + j - limit) for j in range(min(len(found), limit))]
        histories[cid] = (got.get(n), refs)
    return histories
