"""The webhook messages: one row per (endpoint, event) to deliver, used as a job table.

A row's life::

    fan-out ──► due_at = now ──claim──► due_at = lease end, attempts + 1
                    ▲                        │
                    └──── retry: due_at ◄────┤ (the request failed)
                                             └──► due_at NULL, finished_at = now
                                                  (delivered, or given up)

A claim moves ``due_at`` one lease ahead, so the message of a sender that died
mid-request is claimed again when the lease ends, and nothing else marks it taken.
The sender's later writes are guarded by that lease end: if its lease ran out and
another sender claimed the row, the first one's outcome no longer moves it.

Finished rows stay a day (:func:`prune_finished`) so that an event fanned out twice,
as a Kafka redelivery does, meets its row and adds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.events import Event
from mailsched.store.tables import events, stored_time, webhook_endpoints, webhook_messages

wm = webhook_messages.c
we = webhook_endpoints.c
ev = events.c

#: Rows per multi-row INSERT and per ``IN (...)``: within SQLite's 32,766 parameters.
_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Target:
    """What a sender needs to know of an endpoint."""

    id: int
    url: str
    secret: str
    batch: bool
    #: False once the endpoint is disabled or deleted: its messages are dropped.
    live: bool


@dataclass(frozen=True, slots=True)
class Claim:
    """Messages of one endpoint taken for one request, until ``lease_until``."""

    endpoint_id: int
    event_ids: tuple[int, ...]
    #: This attempt's number (1 for the first).
    attempts: int
    lease_until: datetime
    #: A batch's key: the same members, under the same webhook-id, at every attempt.
    batch_key: int | None = None


async def add(conn: AsyncConnection, pairs: Sequence[tuple[int, int]], due_at: datetime) -> None:
    """Add ``(endpoint_id, event_id)`` messages due at ``due_at``; a pair that exists
    already (pending or finished) is left as it is.

    One driver-level executemany of a fixed statement (a multi-row INSERT on MySQL):
    an ``insert().values([...])`` of a thousand rows is a new statement to compile
    every time, 78 ms against 11 ms measured, inside SQLite's one writer.
    """
    if not pairs:
        return
    at = stored_time(conn.dialect)(due_at)
    if conn.dialect.name == "mysql":
        sql = (
            "INSERT INTO webhook_messages (endpoint_id, event_id, due_at, attempts) "
            "VALUES (%s, %s, %s, 0) ON DUPLICATE KEY UPDATE attempts = attempts"
        )
    else:
        sql = (
            "INSERT INTO webhook_messages (endpoint_id, event_id, due_at, attempts) "
            "VALUES (?, ?, ?, 0) ON CONFLICT DO NOTHING"
        )
    await conn.exec_driver_sql(sql, [(e, i, at) for e, i in pairs])


async def due_endpoints(
    conn: AsyncConnection, now: datetime, busy: Collection[int], limit: int
) -> list[int]:
    """Endpoints with a message due, the longest-waiting first, leaving out ``busy``.

    On MariaDB, ``MIN(due_at) … GROUP BY endpoint_id`` over the (endpoint_id,
    due_at) index is a loose index scan: about one index probe per endpoint.
    SQLite has no loose scan and reads the whole index instead (26 ms with 100,000
    messages waiting, measured, inside its one writer, after every request): there
    each endpoint's first due time is looked up on its own, one probe each.
    """
    if conn.dialect.name == "sqlite":
        first = (
            select(func.min(wm.due_at))
            .where(wm.endpoint_id == we.id, wm.due_at.is_not(None))
            .scalar_subquery()
            .label("first")
        )
        inner = select(we.id.label("endpoint_id"), first).subquery()
        query = (
            select(inner.c.endpoint_id)
            .where(inner.c.first <= now)
            .order_by(inner.c.first)
            .limit(limit)
        )
        if busy:
            query = query.where(inner.c.endpoint_id.not_in(sorted(busy)))
        return [row.endpoint_id for row in await conn.execute(query)]
    first_due = func.min(wm.due_at).label("first")
    grouped = (
        select(wm.endpoint_id, first_due)
        .where(wm.due_at <= now)
        .group_by(wm.endpoint_id)
        .order_by(first_due)
        .limit(limit)
    )
    if busy:
        grouped = grouped.where(wm.endpoint_id.not_in(sorted(busy)))
    return [row.endpoint_id for row in await conn.execute(grouped)]


async def targets(conn: AsyncConnection, ids: Collection[int]) -> dict[int, Target]:
    """The endpoints ``ids``, by id; an id with no endpoint is left out."""
    if not ids:
        return {}
    query = select(we.id, we.url, we.secret, we.batch, we.disabled_at, we.deleted_at).where(
        we.id.in_(sorted(ids))
    )
    return {
        r.id: Target(
            r.id, r.url, r.secret, bool(r.batch), r.disabled_at is None and r.deleted_at is None
        )
        for r in await conn.execute(query)
    }


async def claim_single(
    conn: AsyncConnection, endpoint_id: int, now: datetime, limit: int, until: datetime
) -> list[Claim]:
    """Take up to ``limit`` due messages of the endpoint, one claim each, until ``until``."""
    query = (
        select(wm.event_id, wm.attempts)
        .where(wm.endpoint_id == endpoint_id, wm.due_at <= now)
        .order_by(wm.due_at, wm.event_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = (await conn.execute(query)).all()
    if not rows:
        return []
    await _lease(conn, endpoint_id, [r.event_id for r in rows], until, None)
    return [Claim(endpoint_id, (r.event_id,), r.attempts + 1, until) for r in rows]


async def claim_batch(
    conn: AsyncConnection,
    endpoint_id: int,
    now: datetime,
    limit: int,
    until: datetime,
    new_key: int,
) -> Claim | None:
    """Take one batch of the endpoint's due messages until ``until``: the batch the
    oldest due message already belongs to, or else up to ``limit`` messages in none,
    which become batch ``new_key``."""
    query = (
        select(wm.event_id, wm.attempts, wm.batch_key, wm.due_at)
        .where(wm.endpoint_id == endpoint_id, wm.due_at <= now)
        .order_by(wm.due_at, wm.event_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = (await conn.execute(query)).all()
    if not rows:
        return None
    head = rows[0]
    if head.batch_key is None:
        key = new_key
        members = [(r.event_id, r.attempts) for r in rows if r.batch_key is None]
    else:
        # A retry: every member moved together, so all share the head's due_at.
        key = head.batch_key
        same = select(wm.event_id, wm.attempts).where(
            wm.endpoint_id == endpoint_id, wm.due_at == head.due_at, wm.batch_key == key
        )
        members = [(r.event_id, r.attempts) for r in await conn.execute(same.with_for_update())]
    ids = sorted(event_id for event_id, _ in members)
    await _lease(conn, endpoint_id, ids, until, key)
    attempts = max(a for _, a in members) + 1
    return Claim(endpoint_id, tuple(ids), attempts, until, key)


async def _lease(
    conn: AsyncConnection,
    endpoint_id: int,
    event_ids: Sequence[int],
    until: datetime,
    batch_key: int | None,
) -> None:
    values: dict[str, object] = {"due_at": until, "attempts": wm.attempts + 1}
    if batch_key is not None:
        values["batch_key"] = batch_key
    for start in range(0, len(event_ids), _CHUNK):
        chunk = event_ids[start : start + _CHUNK]
        await conn.execute(
            update(webhook_messages)
            .where(wm.endpoint_id == endpoint_id, wm.event_id.in_(chunk))
            .values(values)
        )


async def finish(conn: AsyncConnection, claim: Claim, now: datetime) -> None:
    """The claim's messages are done with (delivered, or given up)."""
    await _settle(conn, claim, {"due_at": None, "finished_at": now})


async def retry(conn: AsyncConnection, claim: Claim, at: datetime) -> None:
    """Try the claim's messages again at ``at``."""
    await _settle(conn, claim, {"due_at": at})


async def _settle(conn: AsyncConnection, claim: Claim, values: dict[str, object]) -> None:
    # Guarded by the lease: a row another sender claimed since is its own now.
    await conn.execute(
        update(webhook_messages)
        .where(
            wm.endpoint_id == claim.endpoint_id,
            wm.event_id.in_(claim.event_ids),
            wm.due_at == claim.lease_until,
        )
        .values(values)
    )


async def drop_pending(conn: AsyncConnection, endpoint_id: int, limit: int) -> int:
    """Delete up to ``limit`` of a disabled or deleted endpoint's waiting messages;
    return how many. Nothing is fanned out to it any more, so nothing is kept."""
    query = (
        select(wm.event_id)
        .where(wm.endpoint_id == endpoint_id, wm.due_at.is_not(None))
        .limit(limit)
    )
    ids = [r.event_id for r in await conn.execute(query)]
    for start in range(0, len(ids), _CHUNK):
        await conn.execute(
            delete(webhook_messages).where(
                wm.endpoint_id == endpoint_id, wm.event_id.in_(ids[start : start + _CHUNK])
            )
        )
    return len(ids)


async def events_by_id(conn: AsyncConnection, ids: Collection[int]) -> dict[int, Event]:
    """The events ``ids``, by id; a pruned one is left out."""
    ordered = sorted(ids)
    found: dict[int, Event] = {}
    for start in range(0, len(ordered), _CHUNK):
        query = select(events).where(ev.id.in_(ordered[start : start + _CHUNK]))
        for r in await conn.execute(query):
            found[r.id] = Event(
                r.id, r.user_id, r.type, r.occurred_at, r.campaign_id, json.loads(r.data)
            )
    return found


async def backlog(conn: AsyncConnection) -> dict[int, tuple[int, int]]:
    """Per endpoint with messages waiting: how many, and the first event's id."""
    query = (
        select(wm.endpoint_id, func.count(), func.min(wm.event_id))
        .where(wm.due_at.is_not(None))
        .group_by(wm.endpoint_id)
    )
    return {int(e): (int(count), int(first)) for e, count, first in await conn.execute(query)}


async def occurred_at(conn: AsyncConnection, event_id: int) -> datetime | None:
    """When the event happened, if it is still stored."""
    query = select(ev.occurred_at).where(ev.id == event_id)
    return (await conn.execute(query)).scalar_one_or_none()


async def prune_finished(conn: AsyncConnection, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` messages finished before ``before``, oldest first;
    return how many (call again until it returns less than ``limit``)."""
    query = (
        select(wm.endpoint_id, wm.event_id)
        .where(wm.finished_at < before)
        .order_by(wm.finished_at)
        .limit(limit)
    )
    rows = (await conn.execute(query)).all()
    by_endpoint: dict[int, list[int]] = {}
    for endpoint_id, event_id in rows:
        by_endpoint.setdefault(endpoint_id, []).append(event_id)
    for endpoint_id, ids in by_endpoint.items():
        for start in range(0, len(ids), _CHUNK):
            await conn.execute(
                delete(webhook_messages).where(
                    wm.endpoint_id == endpoint_id,
                    wm.event_id.in_(ids[start : start + _CHUNK]),
                    wm.finished_at < before,
                )
            )
    return len(rows)
