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

Under shaping (:mod:`mailsched.domain.shaping`), a delivery also needs room in each
of its groups: their rows are locked after the campaigns' (in name order), and the
room left is measured on the group's real send times, like the campaign's rules.
A delivery whose group is full waits for it, alone: the campaign's other
destinations keep their pace, its place going to the next delivery that may start.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.limits import permit, permit_ahead
from mailsched.domain.model import Campaign, CampaignStatus
from mailsched.domain.shaping import Group, GroupState, Shaping, room
from mailsched.store import sending, suppressions
from mailsched.store import shaping as groups_store
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
    shaping: Shaping = field(default_factory=Shaping)
    #: The room a re-plan leaves for each send's answer (the rules are measured from it).
    margin: timedelta = timedelta(0)
    #: A delivery that may start within this of ``now`` is admitted now, to be sent
    #: at its time (see :func:`~mailsched.domain.limits.permit_ahead`).
    ahead: timedelta = timedelta(0)


@dataclass(slots=True)
class Claim:
    """The answer for one campaign: what to send now, what to wait for, what went back."""

    campaign: Campaign | None = None
    #: The moment the admitted deliveries' slots start.
    claimed_at: datetime | None = None
    admitted: list[Claimable] = field(default_factory=list)
    #: The send slot of ``admitted[i]`` is number ``first_seq + i``.
    first_seq: int = 0
    #: When ``admitted[i]`` starts, when admitted ahead of its time; empty: now.
    starts: list[datetime] = field(default_factory=list)
    lease_until: datetime | None = None
    #: Deliveries to ask about again at ``wait_until`` (due within the hold).
    waiting: list[int] = field(default_factory=list)
    wait_until: datetime | None = None
    #: How many deliveries of the campaign were planned again (it fell behind).
    replanned: int = 0
    #: How many went to SUPPRESSED: their address was suppressed after they were planned.
    suppressed: int = 0
    #: How many deliveries each shaping group held back (full, or suspended).
    held: Counter[str] = field(default_factory=Counter)


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
    rooms = await _rooms(conn, req, rows)
    late: dict[int, tuple[list[Claimable], datetime]] = {}
    for cid, campaign in live.items():
        if rows.get(cid):
            later = _decide(req, campaign, rows[cid], histories[cid], results[cid], rooms)
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
        await rooms.take(conn, taken, req.now)
    # After the slots are taken: a re-plan counts the sends just admitted as in flight.
    for cid, (rest, next_at) in late.items():
        if next_at > rest[0].scheduled_at + req.hold:
            results[cid].replanned = await sending.replan(
                conn, live[cid], req.window, req.now, margin=req.margin
            )
        else:
            # Queued ahead of its time (an old message): the dispatcher brings it back.
            await sending.reschedule(conn, [(r.id, r.scheduled_at) for r in rest])
    # Last: a re-plan above plans every pending delivery of its campaign again, those
    # a full group held back too; they wait for their group instead.
    await rooms.put_off(conn, req, results)
    return results


def _decide(
    req: ClaimRequest,
    campaign: Campaign,
    rows: list[Claimable],
    history: _History,
    result: Claim,
    rooms: _Rooms,
) -> tuple[list[Claimable], datetime] | None:
    """Admit what the rules allow now, and hold what may start within the hold; return
    the rest and when the first of it may start, if that is later (the campaign fell
    behind, or a message came early). A delivery whose shaping group is full gives
    its place to the next one that may start now."""
    last, refs, settled = history
    floors = {r.id: _floor(campaign, r, req.now) for r in rows}
    # Those whose window is open now go first, whatever their planned order.
    rows.sort(key=lambda r: (floors[r.id], r.scheduled_at, r.id))
    rules = campaign.rules(req.window)
    answer = permit(req.now, [floors[r.id] for r in rows], rules, last, refs)
    if not answer.admitted and settled and not any(rooms.member.get(r.id) for r in rows):
        # Nothing may start now, and no send of the campaign is in flight: what may
        # start within the horizon goes at its time, not a claim's round trip after.
        starts = permit_ahead(req.now, req.ahead, [floors[r.id] for r in rows], rules, last, refs)
        if starts:
            _admit(req, campaign, rows[: len(starts)], result)
            result.starts = starts
            later = rows[len(starts) :]
            return _wait(req, later, floors[later[0].id], result) if later else None
    admitted: list[Claimable] = []
    rest: list[Claimable] = []
    for i, row in enumerate(rows):
        if len(admitted) == answer.admitted:
            rest.extend(rows[i:])
            break
        if floors[row.id] > req.now:
            # Admitted fewer than the rules allow: some gave their place up.
            rest.extend(rows[i:])
            break
        if rooms.admit(row):
            admitted.append(row)
        else:
            result.held[rooms.full_group(row)] += 1
            rooms.hold(campaign.id, row)
    if admitted:
        _admit(req, campaign, admitted, result)
    next_at = answer.next_at
    if rest and len(admitted) < answer.admitted:
        next_at = max(floors[rest[0].id], next_at or floors[rest[0].id])
    if not rest or next_at is None:
        return None
    return _wait(req, rest, next_at, result)


def _wait(
    req: ClaimRequest, rest: list[Claimable], next_at: datetime, result: Claim
) -> tuple[list[Claimable], datetime] | None:
    """Hold ``rest`` in the worker when ``next_at`` comes within the hold; else return it."""
    if next_at - req.now <= req.hold:
        result.waiting = [r.id for r in rest]
        result.wait_until = next_at
        return None
    return rest, next_at


def _admit(req: ClaimRequest, campaign: Campaign, rows: list[Claimable], result: Claim) -> None:
    result.admitted = rows
    result.first_seq = campaign.slot_seq + 1
    result.lease_until = req.now + req.lease


class _Rooms:
    """The room each shaping group of a claim has left, and what it held back."""

    def __init__(self, member: Mapping[int, tuple[Group, ...]]) -> None:
        self.member = member
        self.left: dict[str, int] = {}
        self.next_at: dict[str, datetime | None] = {}
        self.spacing: dict[str, timedelta] = {}
        self.seq: dict[str, int] = {}
        self.held: dict[int, list[Claimable]] = {}
        #: Each group and its state: the pace of a later day may differ (warm-up).
        self.shaped: dict[str, tuple[Group, GroupState]] = {}

    def admit(self, row: Claimable) -> bool:
        """Take room for ``row`` in each of its groups, if all have some."""
        groups = self.member.get(row.id, ())
        if any(self.left[g.name] <= 0 for g in groups):
            return False
        for group in groups:
            self.left[group.name] -= 1
        return True

    def full_group(self, row: Claimable) -> str:
        return next(g.name for g in self.member[row.id] if self.left[g.name] <= 0)

    def hold(self, campaign_id: int, row: Claimable) -> None:
        self.held.setdefault(campaign_id, []).append(row)

    async def put_off(
        self, conn: AsyncConnection, req: ClaimRequest, results: Mapping[int, Claim]
    ) -> None:
        """Those held back wait for their groups: in this worker when the room comes
        within the hold, else planned again for then, spread at the group's pace."""
        later: list[tuple[int, datetime]] = []
        cursor: dict[str, datetime] = {}
        for cid, held in self.held.items():
            result = results[cid]
            for row in held:
                full = [g.name for g in self.member[row.id] if self.left[g.name] <= 0]
                at = req.now
                for name in full:
                    opens = cursor.get(name) or self.next_at[name] or req.now + self.spacing[name]
                    at = max(at, opens)
                    # At the pace of the day it lands on: a warm-up's cap grows daily.
                    cursor[name] = opens + self._spacing_at(name, opens)
                if at - req.now <= req.hold:
                    result.waiting.append(row.id)
                    result.wait_until = min(result.wait_until or at, at)
                else:
                    later.append((row.id, at))
        if later:
            await sending.reschedule(conn, later)

    def _spacing_at(self, name: str, at: datetime) -> timedelta:
        group, state = self.shaped[name]
        limits = group.limits_at(at, state)
        return max((lim.window / lim.count for lim in limits), default=timedelta(0))

    async def take(self, conn: AsyncConnection, taken: Mapping[int, Claim], now: datetime) -> None:
        """Number the admitted sends in their groups."""
        sends: dict[str, list[tuple[int, int]]] = {}
        for cid, result in taken.items():
            for i, row in enumerate(result.admitted):
                for group in self.member.get(row.id, ()):
                    sends.setdefault(group.name, []).append((cid, result.first_seq + i))
        if sends:
            await groups_store.take(conn, sends, self.seq, now)


async def _rooms(
    conn: AsyncConnection, req: ClaimRequest, rows: Mapping[int, list[Claimable]]
) -> _Rooms:
    """Lock the shaping groups the rows send into and measure the room each has now."""
    member: dict[int, tuple[Group, ...]] = {}
    if req.shaping:
        member = {
            r.id: found
            for batch in rows.values()
            for r in batch
            if (found := req.shaping.groups_for(r.recipient))
        }
    rooms = _Rooms(member)
    wanted = Counter(group.name for groups in member.values() for group in groups)
    if not wanted:
        return rooms
    locked = await groups_store.lock(conn, list(wanted))
    groups = {g.name: g for found in member.values() for g in found}
    limits = {}
    ranges = {}
    for name, count in wanted.items():
        limits[name] = groups[name].limits_at(req.now, locked[name].state)
        n = locked[name].seq
        ranges[name] = [
            (max(1, n + 1 - lim.count), n + min(count, lim.count) - lim.count)
            for lim in limits[name]
        ]
    times = await groups_store.finish_times(conn, ranges, req.now)
    for name, count in wanted.items():
        n, got = locked[name].seq, times.get(name, {})
        refs = [
            [got.get(n + 1 + j - lim.count) for j in range(min(count, lim.count))]
            for lim in limits[name]
        ]
        answer = room(req.now, count, limits[name], refs, locked[name].state)
        rooms.left[name] = answer.admits
        rooms.next_at[name] = answer.next_at
        rooms.spacing[name] = answer.spacing
        rooms.seq[name] = n
        rooms.shaped[name] = (groups[name], locked[name].state)
    return rooms


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


#: A campaign's last answer, its window references, and whether none is in flight.
_History = tuple[datetime | None, list[datetime | None], bool]


async def _histories(
    conn: AsyncConnection,
    live: Mapping[int, Campaign],
    rows: Mapping[int, list[Claimable]],
    now: datetime,
) -> dict[int, _History]:
    """Per campaign: when its latest send finished, the window references for its next
    sends (the send ``limit`` places before each), and whether all of them had been
    answered: a send in flight counts as ending ``now``, a lower bound, so a rule
    measured from it can never admit a send too early. One query for the batch."""
    wanted: dict[int, list[tuple[int, int]]] = {}
    for cid, found in rows.items():
        n, limit = live[cid].slot_seq, live[cid].hourly_limit
        wanted[cid] = [(max(1, n + 1 - limit), n + len(found) - limit), (n, n)]
    times = await sending.slot_times(conn, wanted)
    histories = {}
    for cid, found in rows.items():
        n, limit = live[cid].slot_seq, live[cid].hourly_limit
        got = times.get(cid, {})
        wanted_seqs = [n + 1 + j - limit for j in range(min(len(found), limit))]
        # A send that exists but has no answer yet is in flight.
        settled = all(got[seq] is not None for seq in (n, *wanted_seqs) if seq in got)
        answered = {seq: at or now for seq, at in got.items()}
        refs = [answered.get(seq) for seq in wanted_seqs]
        histories[cid] = (answered.get(n), refs, settled)
    return histories
