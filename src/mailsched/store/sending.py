"""The worker's queries: the campaign's send history, claims, re-plans and outcomes.

All of them run under the campaign's row lock (taken with
:func:`mailsched.store.campaigns.get_campaign`), which is what makes the
rate rules hold across workers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.model import CampaignStatus, DeliveryStatus, SendOutcome
from mailsched.domain.plan import Rules, plan
from mailsched.store.tables import campaigns, deliveries, send_slots, stored_time

log = logging.getLogger(__name__)

d = deliveries.c
s = send_slots.c


@dataclass(frozen=True, slots=True)
class Claimable:
    """A QUEUED delivery a worker holds a message for."""

    id: int
    recipient: str
    scheduled_at: datetime
    attempts: int
    #: Personalization: the recipient's name and template variables.
    name: str | None = None
    vars: Mapping[str, Any] | None = None


async def queued(conn: AsyncConnection, ids: Sequence[int]) -> dict[int, list[Claimable]]:
    """Those of ``ids`` that are still QUEUED, locked, by campaign, in planned order.

    The rows are looked up and locked by primary key alone, and filtered here: given
    the campaign and status too, MariaDB reads them through
    ``ix_deliveries_campaign_status`` and waits on every QUEUED row of the campaign
    that another worker's claim, or the dispatcher, holds at the moment.
    """
    rows = await conn.execute(
        select(d.id, d.campaign_id, d.status, d.recipient, d.scheduled_at, d.attempts)
        .add_columns(d.name, d.vars)
        .where(d.id.in_(ids))
        .with_for_update()
    )
    found: dict[int, list[Claimable]] = {}
    for r in rows:
        if r.status == DeliveryStatus.QUEUED:
            found.setdefault(r.campaign_id, []).append(
                Claimable(
                    r.id, r.recipient, r.scheduled_at, r.attempts, r.name, _variables(r.id, r.vars)
                )
            )
    for claimable in found.values():
        claimable.sort(key=lambda c: (c.scheduled_at, c.id))
    return found


def _variables(delivery_id: int, text: str | None) -> dict[str, Any] | None:
    """The stored JSON object, or ``None``. A row that does not hold one (written by
    hand, or by a bug) is logged; its templates then fail on the missing names, which
    fails that delivery instead of the worker."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.error("delivery %d: its vars are not a JSON object; ignored", delivery_id)
        return None
    return value


async def slot_times(
    conn: AsyncConnection, wanted: Mapping[int, Sequence[tuple[int, int]]], now: datetime
) -> dict[int, dict[int, datetime]]:
    """When sends finished: for each campaign, those numbered in its ranges
    ``(first_seq, last_seq)``, in one query.

    A send still in flight counts as finishing ``now``: a lower bound, so a rule
    measured from it can never admit a send too early.
    """
    ranges = [
        and_(s.campaign_id == cid, s.seq >= first, s.seq <= last)
        for cid, pairs in wanted.items()
        for first, last in pairs
        if 1 <= first <= last
    ]
    if not ranges:
        return {}
    rows = await conn.execute(
        select(s.campaign_id, s.seq, s.finished_at).where(or_(*ranges)),
        execution_options=_UNCACHED,
    )
    times: dict[int, dict[int, datetime]] = {}
    for r in rows:
        times.setdefault(r.campaign_id, {})[r.seq] = r.finished_at or now
    return times


async def take_slots(
    conn: AsyncConnection,
    taken: Mapping[int, tuple[int, Sequence[int]]],
    now: datetime,
    owner: str,
    lease_until: datetime,
) -> None:
    """Record that deliveries start sending now, leased to ``owner``: for each campaign,
    ``(first_seq, delivery_ids)``, numbered from ``first_seq``."""
    await conn.execute(
        insert(send_slots),
        [
            {
                "campaign_id": cid,
                "seq": first + i,
                "delivery_id": did,
                "started_at": now,
                "worker": owner,
            }
            for cid, (first, ids) in taken.items()
            for i, did in enumerate(ids)
        ],
    )
    # A campaign's first send makes it RUNNING.
    started = (CampaignStatus.SCHEDULED.value, CampaignStatus.RUNNING.value)
    await Rows(conn, "campaigns", "id").update(
        {cid: (first + len(ids) - 1,) for cid, (first, ids) in taken.items()},
        ("slot_seq",),
        raw=("status = CASE status WHEN {} THEN {} ELSE status END", started),
    )
    await conn.execute(
        update(deliveries)
        .where(d.id.in_([did for _, ids in taken.values() for did in ids]))
        .values(
            status=DeliveryStatus.SENDING,
            attempts=d.attempts + 1,
            lease_owner=owner,
            lease_until=lease_until,
        )
    )


async def pending_tail(conn: AsyncConnection, campaign_id: int) -> list[tuple[int, datetime]]:
    """The campaign's deliveries not yet claimed (SCHEDULED or QUEUED), in planned order."""
    rows = await conn.execute(
        select(d.id, d.scheduled_at)
        .where(
            d.campaign_id == campaign_id,
            d.status.in_([DeliveryStatus.SCHEDULED, DeliveryStatus.QUEUED]),
        )
        .order_by(d.scheduled_at, d.id)
        .with_for_update()
    )
    return [(r.id, r.scheduled_at) for r in rows]


async def recent_finishes(
    conn: AsyncConnection, campaign_id: int, limit: int, since: datetime, in_flight: datetime
) -> list[datetime]:
    """When the campaign's last ``limit`` sends ended, oldest first, leaving out those that
    ended before ``since``; a send still in flight counts as ending at ``in_flight``."""
    rows = await conn.execute(
        select(s.finished_at)
        .where(s.campaign_id == campaign_id, or_(s.finished_at.is_(None), s.finished_at > since))
        .order_by(s.seq.desc())
        .limit(limit)
    )
    return [r.finished_at or in_flight for r in rows][::-1]


async def hold_back(
    conn: AsyncConnection, ids: Sequence[int], campaign_status: CampaignStatus
) -> None:
    """Move unclaimed deliveries to PAUSED, or CANCELLED, with their stopped campaign."""
    target = (
        DeliveryStatus.PAUSED
        if campaign_status == CampaignStatus.PAUSED
        else DeliveryStatus.CANCELLED
    )
    await conn.execute(
        update(deliveries)
        .where(
            d.id.in_(ids),
            d.status.in_([DeliveryStatus.SCHEDULED, DeliveryStatus.QUEUED]),
        )
        .values(status=target)
    )


async def release_queued(conn: AsyncConnection, ids: Sequence[int]) -> None:
    """Hand QUEUED deliveries back to the dispatcher unchanged (a worker is stopping)."""
    await conn.execute(
        update(deliveries)
        .where(d.id.in_(ids), d.status == DeliveryStatus.QUEUED)
        .values(status=DeliveryStatus.SCHEDULED)
    )


async def reschedule(conn: AsyncConnection, planned: Sequence[tuple[int, datetime]]) -> None:
    """Move unclaimed deliveries to new planned times; they go back to SCHEDULED."""
    if not planned:
        return
    await conn.execute(
        update(deliveries)
        .where(
            d.id == bindparam("b_id"),
            # Not IN (...): an expanding parameter cannot go through executemany.
            or_(d.status == DeliveryStatus.SCHEDULED, d.status == DeliveryStatus.QUEUED),
        )
        .values(status=DeliveryStatus.SCHEDULED, scheduled_at=bindparam("b_at")),
        [{"b_id": did, "b_at": at} for did, at in planned],
    )


@dataclass(frozen=True, slots=True)
class Retry:
    """A delivery to try again at ``at``, with ``attempts`` counted so far (a server's
    slow-down does not count as one)."""

    id: int
    at: datetime
    error: str
    attempts: int


@dataclass(frozen=True, slots=True)
class Outcomes:
    """What happened to a batch of sends."""

    sent: Sequence[tuple[int, datetime]] = ()
    retry: Sequence[Retry] = ()
    failed: Sequence[tuple[int, str]] = ()
    #: Not sent at all (the lease ran out first): back to SCHEDULED, due at once.
    released: Sequence[int] = ()
    #: How each send slot of the batch ended: ``(seq, finished_at, outcome)``.
    finished: Sequence[tuple[int, datetime, SendOutcome]] = ()


async def record(
    conn: AsyncConnection, owner: str, batch: Mapping[int, Outcomes], now: datetime
) -> int:
    """Write the outcomes of sends leased to ``owner``, by campaign id, in a handful of
    statements however many campaigns there are; return how many rows it no longer held.

    A row whose lease was taken over (``lease_owner`` changed, or the row left
    SENDING) is not touched: the newer owner decides it.
    """
    every = list(batch.values())
    held = Rows(
        conn,
        "deliveries",
        "id",
        "status = {} AND lease_owner = {}",
        (DeliveryStatus.SENDING.value, owner),
    )
    # Per new status: each row's values of ``columns``.
    changes: list[tuple[DeliveryStatus, tuple[str, ...], dict[int, tuple[object, ...]]]] = [
        (
            DeliveryStatus.SENT,
            ("sent_at", "last_error"),
            {i: (at, None) for o in every for i, at in o.sent},
        ),
        (
            DeliveryStatus.SCHEDULED,
            ("scheduled_at", "last_error", "attempts"),
            {r.id: (r.at, r.error[:500], r.attempts) for o in every for r in o.retry},
        ),
        (
            DeliveryStatus.FAILED,
            ("last_error",),
            {i: (err[:500],) for o in every for i, err in o.failed},
        ),
        (
            DeliveryStatus.SCHEDULED,
            ("scheduled_at",),
            {i: (now,) for o in every for i in o.released},
        ),
    ]
    expected = written = 0
    for status, columns, rows in changes:
        if rows:
            expected += len(rows)
            same = {"status": status.value, "lease_owner": None, "lease_until": None}
            written += await held.update(rows, columns, same)
    finished = {
        (cid, seq): (at, o.value) for cid, out in batch.items() for seq, at, o in out.finished
    }
    if finished:
        slots = Rows(conn, "send_slots", ("campaign_id", "seq"), "finished_at IS NULL")
        await slots.update(finished, ("finished_at", "outcome"))
    return expected - written


#: Statements whose shape changes with every batch: SQLAlchemy's compiled cache
#: would keep each one (the worker's memory grew with every email sent).
_UNCACHED = {"compiled_cache": None}


class Rows:
    """``UPDATE`` of many rows by key, each with its own values, in one statement.

    Written as SQL text rather than SQLAlchemy expressions: the outcome updates run
    many times a second in every worker, with one ``CASE`` branch per row, and
    compiling them took a fifth of a worker's CPU and held up its event loop (and,
    since every batch size is another statement, SQLAlchemy's compiled cache grew
    with every email sent). ``key`` is a column or a composite key's columns;
    ``where`` holds ``{}`` for each of ``where_params``.
    """

    def __init__(
        self,
        conn: AsyncConnection,
        table: str,
        key: str | tuple[str, ...],
        where: str = "",
        where_params: Sequence[object] = (),
    ) -> None:
        self._conn = conn
        self._where_params = where_params
        self._table = table
        self._key = (key,) if isinstance(key, str) else key
        self._marker = mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        self._match = " AND ".join(f"{column} = {mark}" for column in self._key)
        where = where.format(*[mark] * where.count("{}"))
        self._where = f" AND {where}" if where else ""
        self._stored = stored_time(conn.dialect)

    async def update(
        self,
        rows: Mapping[Any, Sequence[object]],
        columns: Sequence[str],
        same: Mapping[str, object] | None = None,
        raw: tuple[str, Sequence[object]] | None = None,
    ) -> int:
        """Set ``columns`` of each row keyed in ``rows`` (a tuple per key with a composite
        key) to its values, and ``same`` on all of them, where ``where`` holds too; return
        how many rows changed. ``raw`` is one more assignment as SQL, with ``{}`` for each
        of its parameters."""
        mark = self._marker
        keys = [k if isinstance(k, tuple) else (k,) for k in rows]
        sets: list[str] = []
        params: list[object] = []
        if raw is not None:
            sets.append(raw[0].format(*[mark] * raw[0].count("{}")))
            params.extend(raw[1])
        for name, value in (same or {}).items():
            sets.append(f"{name} = {mark}")
            params.append(self._param(value))
        for index, name in enumerate(columns):
            values = [self._param(row[index]) for row in rows.values()]
            if all(v == values[0] for v in values):
                # One value for all (every send SENT, say): no CASE needed.
                sets.append(f"{name} = {mark}")
                params.append(values[0])
                continue
            branches = f" WHEN {self._match} THEN {mark}" * len(values)
            sets.append(f"{name} = CASE{branches} END")
            for key, value in zip(keys, values, strict=True):
                params += (*key, value)
        if len(self._key) == 1:
            which = f"{self._key[0]} IN ({', '.join([mark] * len(keys))})"
        else:
            which = "(" + " OR ".join([f"({self._match})"] * len(keys)) + ")"
        sql = f"UPDATE {self._table} SET {', '.join(sets)} WHERE {which}{self._where}"
        params.extend(k for key in keys for k in key)
        params.extend(self._where_params)
        result = await self._conn.exec_driver_sql(sql, tuple(params))
        return result.rowcount

    def _param(self, value: object) -> object:
        return self._stored(value) if isinstance(value, datetime) else value


async def replan(
    conn: AsyncConnection, campaign_id: int, rules: Rules, not_before: datetime
) -> int:
    """Plan every unclaimed delivery of the campaign again, as early as the rules allow
    from ``not_before``, given its real sends. Call with the campaign locked."""
    tail = await pending_tail(conn, campaign_id)
    if not tail:
        return 0
    history = await recent_finishes(
        conn, campaign_id, rules.limit, not_before - rules.window, not_before
    )
    times = plan(len(tail), not_before, rules, history)
    await reschedule(conn, [(did, at) for (did, _), at in zip(tail, times, strict=True)])
    return len(tail)


async def retry_failed(conn: AsyncConnection, campaign_id: int, now: datetime) -> int:
    """Give the campaign's FAILED deliveries a fresh set of attempts; return how many.

    They go back to SCHEDULED (the caller plans them again) and the campaign,
    if it had completed, runs again.
    """
    result = await conn.execute(
        update(deliveries)
        .where(d.campaign_id == campaign_id, d.status == DeliveryStatus.FAILED)
        .values(status=DeliveryStatus.SCHEDULED, scheduled_at=now, attempts=0)
    )
    if result.rowcount:
        await conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id, campaigns.c.status == CampaignStatus.COMPLETED)
            .values(status=CampaignStatus.RUNNING, completed_at=None)
        )
    return result.rowcount
