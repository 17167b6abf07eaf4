"""The events table: appended to by :mod:`mailsched.store.transitions`, read by the feed
and the relay, pruned after the retention period.

Event ids come from one counter row, ``sequences.events``, taken as the last step
of the transaction that writes the events. Its row lock is held until that
transaction commits, so a transaction that takes ids after another commits after
it: ids become visible in increasing order, never with a gap that fills in later.
A reader that resumes after the last id it saw therefore misses nothing, which an
autoincrement column (numbered at insert, visible at commit) cannot promise.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.events import Event, NewEvent
from mailsched.store.tables import events, relay_cursors, sequences

e = events.c

#: Where a transaction's events wait for :func:`flush`, on its connection.
_STAGED = "mailsched.staged_events"


def stage(conn: AsyncConnection, new: Iterable[NewEvent]) -> None:
    """Add events to those the transaction writes just before it commits.

    Staged, not written at once: the counter that numbers events must be the last
    lock a transaction takes, or two transactions that each hold one of a
    campaign's lock and the counter's would wait for each other.
    :meth:`Database.run <mailsched.store.db.Database.run>` flushes them.
    """
    conn.info.setdefault(_STAGED, []).extend(new)


def discard(conn: AsyncConnection) -> None:
    """Forget what an earlier, rolled-back unit of work on this connection staged."""
    conn.info.pop(_STAGED, None)


async def flush(conn: AsyncConnection) -> list[NewEvent]:
    """Write the staged events; return them."""
    staged: list[NewEvent] = conn.info.pop(_STAGED, [])
    await append(conn, staged)
    return staged


async def append(conn: AsyncConnection, new: Sequence[NewEvent]) -> int:
    """Write ``new`` with the next ids, in order; return the last id (0 if none).

    Call last in the transaction: the counter's row lock is held until it commits,
    and every other transaction that writes events waits for it.
    """
    if not new:
        return 0
    last = await _take_ids(conn, len(new))
    first = last - len(new) + 1
    await conn.execute(
        insert(events),
        [
            {
                "id": first + i,
                "user_id": ev.user_id,
                "type": ev.type.value,
                "occurred_at": ev.occurred_at,
                "campaign_id": ev.campaign_id,
                "data": json.dumps(ev.data(), separators=(",", ":"), ensure_ascii=False),
            }
            for i, ev in enumerate(new)
        ],
    )
    return last


async def _take_ids(conn: AsyncConnection, count: int) -> int:
    """Advance the counter by ``count``; return its new value. One statement either way."""
    if conn.dialect.name == "mysql":
        # LAST_INSERT_ID(expr) hands the new value back in the reply to the UPDATE.
        result = await conn.exec_driver_sql(
            "UPDATE sequences SET value = LAST_INSERT_ID(value + %s) WHERE name = 'events'",
            (count,),
        )
        return int(result.lastrowid)
    result = await conn.exec_driver_sql(
        "UPDATE sequences SET value = value + ? WHERE name = 'events' RETURNING value", (count,)
    )
    return int(result.scalar_one())


async def page(
    conn: AsyncConnection,
    user_id: int,
    after: int,
    limit: int,
    types: Sequence[str] = (),
    campaign_id: int | None = None,
) -> list[Event]:
    """The user's events after id ``after``, oldest first, at most ``limit``."""
    query = select(events).where(e.user_id == user_id, e.id > after).order_by(e.id).limit(limit)
    if types:
        query = query.where(e.type.in_(list(types)))
    if campaign_id is not None:
        query = query.where(e.campaign_id == campaign_id)
    return [_event(row) for row in await conn.execute(query)]


async def after(conn: AsyncConnection, position: int, limit: int) -> list[Event]:
    """Every user's events after id ``position``, oldest first: what a relay reads."""
    query = select(events).where(e.id > position).order_by(e.id).limit(limit)
    return [_event(row) for row in await conn.execute(query)]


async def last_id(conn: AsyncConnection) -> int:
    """The last event id given out."""
    query = select(sequences.c.value).where(sequences.c.name == "events")
    return int((await conn.execute(query)).scalar_one())


async def oldest_after(conn: AsyncConnection, position: int) -> datetime | None:
    """When the first event after ``position`` happened (the relay's lag), if any."""
    query = select(e.occurred_at).where(e.id > position).order_by(e.id).limit(1)
    return (await conn.execute(query)).scalar_one_or_none()


async def cursor(conn: AsyncConnection, name: str, *, lock: bool = False) -> int:
    """Where the relay called ``name`` stands (0 before its first run); ``lock`` holds
    its row until the transaction ends, so two relays take turns."""
    rc = relay_cursors.c
    query = select(rc.position).where(rc.name == name)
    if lock:
        query = query.with_for_update()
    found = (await conn.execute(query)).scalar_one_or_none()
    if found is not None:
        return int(found)
    # A relay the migrations did not seed a row for: two may race to make it, and
    # the loser's duplicate key fails its pass, which its relay tries again.
    await conn.execute(insert(relay_cursors).values(name=name, position=0))
    return 0


async def advance(conn: AsyncConnection, name: str, position: int) -> None:
    """Move the relay ``name`` to ``position``."""
    rc = relay_cursors.c
    await conn.execute(
        relay_cursors.update()
        .where(rc.name == name, rc.position < position)
        .values(position=position)
    )


async def prune(conn: AsyncConnection, before: datetime, limit: int, through: int) -> int:
    """Delete up to ``limit`` of the oldest events that happened before ``before``, none
    after id ``through`` (what the relay has not yet published); return how many.

    A short statement over a primary-key range, so it holds no long lock: call it
    again until it returns less than ``limit``.
    """
    rows = (
        await conn.execute(
            select(e.id, e.occurred_at).where(e.id <= through).order_by(e.id).limit(limit)
        )
    ).all()
    old = [r.id for r in rows if r.occurred_at < before]
    if not old:
        return 0
    result = await conn.execute(delete(events).where(e.id <= max(old), e.occurred_at < before))
    return result.rowcount


def _event(r: Row[Any]) -> Event:
    return Event(r.id, r.user_id, r.type, r.occurred_at, r.campaign_id, json.loads(r.data))
