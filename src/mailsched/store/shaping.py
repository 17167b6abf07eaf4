"""The shaping groups' rows: their locks, their numbered sends, and what replies did to them.

A claim that sends into a group locks the group's row (after its campaigns' rows,
and in name order, so claims wait for each other and never deadlock), reads when
the group's earlier sends ended, and numbers its new ones; this is what makes a
group's limits hold across workers, as a campaign's row does for its rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.shaping import GroupState
from mailsched.store.bulk import UNCACHED, KeyedUpdate
from mailsched.store.tables import send_slots, shaping_groups, shaping_slots

g = shaping_groups.c
gs = shaping_slots.c
s = send_slots.c


@dataclass(frozen=True, slots=True)
class GroupRow:
    """A group's row: how many sends it has numbered, and its state."""

    name: str
    seq: int
    state: GroupState


async def ensure(conn: AsyncConnection, names: Sequence[str]) -> None:
    """Make the rows of groups that have none (a worker starting with a new file)."""
    have = set((await conn.execute(select(g.name).where(g.name.in_(names)))).scalars())
    values = [{"name": name, "seq": 0} for name in names if name not in have]
    if not values:
        return
    if conn.dialect.name == "mysql":
        statement = mysql.insert(shaping_groups).values(values)
        # Workers starting together: the first row wins, the others change nothing.
        await conn.execute(statement.on_duplicate_key_update(name=statement.inserted.name))
    else:
        await conn.execute(sqlite.insert(shaping_groups).values(values).on_conflict_do_nothing())


async def lock(conn: AsyncConnection, names: Sequence[str]) -> dict[str, GroupRow]:
    """The rows of ``names``, locked in name order; a group without a row yet gets one."""
    wanted = sorted(set(names))
    found = await _read(conn, wanted, lock=True)
    if len(found) < len(wanted):
        await ensure(conn, wanted)
        found = await _read(conn, wanted, lock=True)
    return found


async def states(conn: AsyncConnection) -> dict[str, GroupRow]:
    """Every group's row, unlocked (for the dashboard and the API)."""
    return await _read(conn, None, lock=False)


async def _read(
    conn: AsyncConnection, names: Sequence[str] | None, *, lock: bool
) -> dict[str, GroupRow]:
    query = select(g.name, g.seq, g.factor, g.slowed_until, g.suspended_until, g.reason)
    if names is not None:
        query = query.where(g.name.in_(names))
    query = query.order_by(g.name)
    if lock:
        query = query.with_for_update()
    return {
        r.name: GroupRow(
            r.name, r.seq, GroupState(r.factor, r.slowed_until, r.suspended_until, r.reason)
        )
        for r in await conn.execute(query)
    }


async def finish_times(
    conn: AsyncConnection, wanted: Mapping[str, Sequence[tuple[int, int]]], now: datetime
) -> dict[str, dict[int, datetime]]:
    """When the groups' sends numbered in the ranges ``(first, last)`` ended, by group and
    number; one still in flight counts as ending ``now``. One query."""
    ranges = [
        and_(gs.grp == name, gs.seq >= first, gs.seq <= last)
        for name, pairs in wanted.items()
        for first, last in pairs
        if 1 <= first <= last
    ]
    if not ranges:
        return {}
    rows = await conn.execute(
        select(gs.grp, gs.seq, s.finished_at)
        .join(send_slots, and_(s.campaign_id == gs.campaign_id, s.seq == gs.slot_seq))
        .where(or_(*ranges)),
        execution_options=UNCACHED,
    )
    times: dict[str, dict[int, datetime]] = {}
    for r in rows:
        times.setdefault(r.grp, {})[r.seq] = r.finished_at or now
    return times


async def take(
    conn: AsyncConnection,
    sends: Mapping[str, Sequence[tuple[int, int]]],
    seqs: Mapping[str, int],
    now: datetime,
) -> None:
    """Number the groups' new sends ``(campaign_id, slot_seq)`` after ``seqs[group]``."""
    await conn.execute(
        insert(shaping_slots),
        [
            {
                "grp": name,
                "seq": seqs[name] + i,
                "campaign_id": cid,
                "slot_seq": slot,
                "started_at": now,
            }
            for name, found in sends.items()
            for i, (cid, slot) in enumerate(found, 1)
        ],
    )
    await KeyedUpdate(conn, "shaping_groups", "name").update(
        {name: (seqs[name] + len(found),) for name, found in sends.items()}, ("seq",)
    )


async def react(conn: AsyncConnection, changes: Mapping[str, GroupState], now: datetime) -> None:
    """Slow or suspend groups as replies asked; a later end than the one in force wins,
    and, while the group is slowed already, the smaller factor."""
    for name in sorted(changes):
        change = changes[name]
        rows = await lock(conn, [name])
        now_state = rows[name].state
        values: dict[str, object] = {"reason": (change.reason or "")[:200] or None}
        if change.suspended_until is not None:
            values["suspended_until"] = _later(now_state.suspended_until, change.suspended_until)
        if change.slowed_until is not None and change.factor is not None:
            values["slowed_until"] = _later(now_state.slowed_until, change.slowed_until)
            factor = change.factor
            if now_state.slowed(now) and now_state.factor is not None:
                factor = min(factor, now_state.factor)
            values["factor"] = factor
        await conn.execute(update(shaping_groups).where(g.name == name).values(values))


def _later(current: datetime | None, wanted: datetime) -> datetime:
    return wanted if current is None or wanted > current else current


async def prune(conn: AsyncConnection, before: datetime, limit: int) -> int:
    """Delete numbered sends started before ``before``, at most ``limit``; return how many."""
    oldest = (
        select(gs.grp, gs.seq).where(gs.started_at < before).order_by(gs.started_at).limit(limit)
    )
    keys = [(r.grp, r.seq) for r in await conn.execute(oldest)]
    if not keys:
        return 0
    result = await conn.execute(
        delete(shaping_slots).where(or_(*(and_(gs.grp == n, gs.seq == q) for n, q in keys)))
    )
    return result.rowcount
