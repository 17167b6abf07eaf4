"""The events table: appended to by :mod:`mailsched.store.transitions`, read by the feed
and the relay, pruned after the retention period.

Event ids come from one counter row, ``sequences.events``, taken as the last step
of the transaction that writes the events. Its row lock is held until that
transaction commits, so a transaction that takes ids after another commits after
it: ids become visible in increasing order, never with a gap that fills in later.
A reader that resumes after the last id it saw therefore misses nothing, which an
autoincrement column (numbered at insert, visible at commit) cannot promise.
On MySQL the counter, the events and the commit go in one query (:func:`flush`),
so that lock is held for no round trip of the client's.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.events import Event, EventType, NewEvent
from mailsched.store.tables import events, relay_cursors, sequences, stored_time

e = events.c

_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

#: Where a transaction's events wait for :func:`flush`, on its connection.
_STAGED = "mailsched.staged_events"


@dataclass(frozen=True, slots=True)
class DeliveryEvents:
    """One ``type`` event for each of ``delivery_ids`` (all of one campaign), whose data
    is read from their rows when written: a campaign-wide move of 100,000 deliveries
    is one ``INSERT … SELECT`` per chunk, not 100,000 rows built in Python.

    Each event's data is ``campaignId``, ``deliveryId``, ``recipient``, ``attempt``,
    then ``fields`` (constants): the shape :class:`NewEvent` gives a delivery's event.
    """

    type: EventType
    user_id: int
    delivery_ids: Sequence[int]
    occurred_at: datetime
    fields: Mapping[str, str | int]


def stage(conn: AsyncConnection, new: Iterable[NewEvent | DeliveryEvents]) -> None:
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


async def flush(conn: AsyncConnection) -> Counter[str]:
    """Write the staged events, in the order they were staged, as the transaction's last
    step; return how many of each type.

    On MySQL this also commits: taking the ids, writing the events and ``COMMIT`` go
    to the server as one multi-statement query (:func:`_write_and_commit`), so the
    counter's lock is held for no round trip of the client's. The caller's own
    ``COMMIT`` after it finds nothing left to commit.
    """
    staged: list[NewEvent | DeliveryEvents] = conn.info.pop(_STAGED, [])
    written: Counter[str] = Counter()
    for item in staged:
        if isinstance(item, NewEvent):
            written[item.type.value] += 1
        else:
            written[item.type.value] += len(item.delivery_ids)
    if not staged:
        return written
    if conn.dialect.name == "mysql":
        await _write_and_commit(conn, staged)
        return written
    run: list[NewEvent] = []
    for next_item in [*staged, None]:
        if isinstance(next_item, NewEvent):
            run.append(next_item)
            continue
        if run:
            await append(conn, run)
            run = []
        if next_item is not None:
            await _append_selected(conn, next_item)
    return written


#: Roughly the most parameters one query of :func:`_write_and_commit` carries: far
#: below MySQL's packet limit, whatever the events hold.
_TRIP_PARAMETERS = 60_000


async def _write_and_commit(
    conn: AsyncConnection, staged: Sequence[NewEvent | DeliveryEvents]
) -> None:
    """Take the ids, write ``staged`` and commit, in one query on MySQL (more only for a
    flush of tens of thousands of events).

    The counter's row lock is held from its ``UPDATE`` to the ``COMMIT``, and every
    other transaction that writes events waits for it. Sent one statement at a time,
    the lock was also held while the client read each reply and its event loop came
    back to this task: milliseconds on a busy worker, paid by every other writer in
    turn. In one query the server runs them without a pause.

    Sent through the driver's own cursor: the statements after the first are read
    (and their errors raised) before this returns, where SQLAlchemy's cursor would
    leave them to be found, and logged, while closing. A failure is raised as the
    ``DBAPIError`` SQLAlchemy raises, so that retries and
    :func:`~mailsched.store.db.translate_errors` see it as they see any other.
    """
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    dbapi: Any = conn.dialect.loaded_dbapi
    for statements, values in _one_trip(staged, stored_time(conn.dialect)):
        sql = ";\n".join(statements)
        try:
            cursor = driver.cursor()
            try:
                await cursor.execute(sql, tuple(values))
                while await cursor.nextset():
                    pass
            finally:
                await cursor.close()
        except dbapi.Error as error:
            raise DBAPIError.instance(sql, values, error, dbapi.Error) from error


#: Roughly the most parameters one query of :func:`_write_and_commit` carries: far
#: below MySQL's packet limit, whatever the events hold.
_TRIP_PARAMETERS = 60_000
_VALUES = "(LAST_INSERT_ID() - %s, %s, %s, %s, %s, %s)"
#: Events per multi-row ``INSERT`` (of six parameters each).
_ROWS_PER_INSERT = 2_000


def _one_trip(
    staged: Sequence[NewEvent | DeliveryEvents], stored: Callable[[datetime], object]
) -> list[tuple[list[str], list[object]]]:
    """The queries of :func:`_write_and_commit` (MySQL's ``%s`` parameters): each its
    statements and their parameters; the counter's ``UPDATE`` first, ``COMMIT`` last.

    The ids come from ``LAST_INSERT_ID()``, which the counter's ``UPDATE`` sets and
    no statement after it changes (``events.id`` is not auto-incremented): an event's
    id is the counter's new value less the number of events staged after it.
    """
    total = sum(1 if isinstance(item, NewEvent) else len(item.delivery_ids) for item in staged)
    take = "UPDATE sequences SET value = LAST_INSERT_ID(value + %s) WHERE name = 'events'"
    queries: list[tuple[list[str], list[object]]] = [([take], [total])]

    def add(sql: str, params: Sequence[object]) -> None:
        if len(queries[-1][1]) + len(params) > _TRIP_PARAMETERS:
            queries.append(([], []))
        queries[-1][0].append(sql)
        queries[-1][1].extend(params)

    after = total
    times: dict[datetime, object] = {}
    run: list[object] = []
    for item in [*staged, None]:
        if isinstance(item, NewEvent):
            at = times.get(item.occurred_at)
            if at is None:
                at = times[item.occurred_at] = stored(item.occurred_at)
            after -= 1
            run += (after, item.user_id, item.type.value, at, item.campaign_id, _JSON(item.data()))
            if len(run) < _ROWS_PER_INSERT * 6:
                continue
        if run:
            rows = ", ".join([_VALUES] * (len(run) // 6))
            add(f"INSERT INTO events ({_COLUMNS}) VALUES {rows}", run)
            run = []
        if isinstance(item, DeliveryEvents):
            at = stored(item.occurred_at)
            for sql, params in _selected_statements(item, "%s", at, _BEFORE, after):
                add(sql, params)
            after -= len(item.delivery_ids)
    queries[-1][0].append("COMMIT")
    return queries


_COLUMNS = "id, user_id, type, occurred_at, campaign_id, data"
#: The id just before a run of events, given how many events are staged from it on.
_BEFORE = "LAST_INSERT_ID() - %s"


async def append(conn: AsyncConnection, new: Sequence[NewEvent]) -> int:
    """Write ``new`` with the next ids, in order; return the last id (0 if none).

    Call last in the transaction: the counter's row lock is held until it commits,
    and every other transaction that writes events waits for it. One driver-level
    executemany (a multi-row INSERT on MySQL): SQLAlchemy's per-row parameter
    processing would run while every other writer waits for the counter.
    """
    if not new:
        return 0
    last = await _take_ids(conn, len(new))
    first = last - len(new) + 1
    stored = stored_time(conn.dialect)
    times: dict[datetime, object] = {}
    rows = []
    for i, ev in enumerate(new):
        at = times.get(ev.occurred_at)
        if at is None:
            at = times[ev.occurred_at] = stored(ev.occurred_at)
        data = _JSON(ev.data())
        rows.append((first + i, ev.user_id, ev.type.value, at, ev.campaign_id, data))
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    await conn.exec_driver_sql(
        f"INSERT INTO events ({_COLUMNS}) VALUES ({', '.join([mark] * 6)})",
        rows,
    )
    return last


#: Deliveries per ``INSERT … SELECT``: MySQL takes at most 65,535 parameters.
_CHUNK = 10_000
_FIELD = re.compile(r"[A-Za-z]+")


async def _append_selected(conn: AsyncConnection, bulk: DeliveryEvents) -> None:
    """Write ``bulk``'s events straight from the deliveries' rows, in delivery id order."""
    if not bulk.delivery_ids:
        return
    last = await _take_ids(conn, len(bulk.delivery_ids))
    first = last - len(bulk.delivery_ids) + 1
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    at = stored_time(conn.dialect)(bulk.occurred_at)
    for sql, params in _selected_statements(bulk, mark, at, mark, first - 1):
        await conn.exec_driver_sql(sql, params)


def _selected_statements(
    bulk: DeliveryEvents,
    mark: str,
    at: object,
    before: str,
    before_value: int,
) -> Iterator[tuple[str, tuple[object, ...]]]:
    """The ``INSERT … SELECT`` statements that write ``bulk``'s events, a chunk each;
    ``before`` is the SQL of the id just before the first event, with one parameter,
    ``before_value``."""
    ids = sorted(bulk.delivery_ids)
    pairs = ["'campaignId', campaign_id", "'deliveryId', id", "'recipient', recipient"]
    pairs.append("'attempt', attempts")
    constants: list[object] = []
    for name, value in bulk.fields.items():
        assert _FIELD.fullmatch(name), name  # a name from our code, written into the SQL
        pairs.append(f"'{name}', {mark}")
        constants.append(value)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        sql = (
            f"INSERT INTO events ({_COLUMNS}) "
            f"SELECT {before} + {start:d} + ROW_NUMBER() OVER (ORDER BY id), "
            f"{mark}, {mark}, {mark}, "
            f"campaign_id, JSON_OBJECT({', '.join(pairs)}) "
            f"FROM deliveries WHERE id IN ({', '.join([mark] * len(chunk))})"
        )
        yield sql, (before_value, bulk.user_id, bulk.type.value, at, *constants, *chunk)


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


#: Event ids one feed page looks through at most: a filter that matches nothing
#: (a type never written) costs a bounded scan per poll, not all of history.
SCAN = 100_000


async def page(
    conn: AsyncConnection,
    user_id: int,
    after: int,
    limit: int,
    types: Sequence[str] = (),
    campaign_id: int | None = None,
    scan: int = SCAN,
) -> tuple[list[Event], int]:
    """The user's events after id ``after``, oldest first, at most ``limit``; and the last
    id looked through, after which the next page starts.

    It looks at most ``scan`` ids ahead, and never past the last id committed: ids
    become visible in order, so no event can appear later below the returned cursor.
    """
    ceiling = min(after + scan, await last_id(conn))
    if ceiling <= after:
        return [], after
    query = (
        select(events)
        .where(e.user_id == user_id, e.id > after, e.id <= ceiling)
        .order_by(e.id)
        .limit(limit)
    )
    if types:
        query = query.where(e.type.in_(list(types)))
    if campaign_id is not None:
        query = query.where(e.campaign_id == campaign_id)
    found = [_event(row) for row in await conn.execute(query)]
    return found, found[-1].id if len(found) == limit else ceiling


async def latest(
    conn: AsyncConnection, user_id: int, campaign_id: int, limit: int, scan: int = SCAN
) -> tuple[list[Event], int]:
    """The campaign's last ``limit`` events among the user's last ``scan`` ids, newest
    first; and the last id committed, after which :func:`page` finds what follows."""
    ceiling = await last_id(conn)
    query = (
        select(events)
        .where(
            e.user_id == user_id,
            e.campaign_id == campaign_id,
            e.id > ceiling - scan,
            e.id <= ceiling,
        )
        .order_by(e.id.desc())
        .limit(limit)
    )
    return [_event(row) for row in await conn.execute(query)], ceiling


async def after(conn: AsyncConnection, position: int, limit: int) -> list[Event]:
    """Every user's events after id ``position``, oldest first: what a relay reads."""
    query = select(events).where(e.id > position).order_by(e.id).limit(limit)
    return [_event(row) for row in await conn.execute(query)]


async def last_id(conn: AsyncConnection) -> int:
    """The last event id given out and committed (a transaction holding the counter has
    not committed its own yet: the read sees the value before it)."""
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
