"""The one place where a delivery's or a campaign's status changes.

Every change is a :class:`~mailsched.domain.model.DeliveryMove` or a campaign move
from :data:`~mailsched.domain.model.CAMPAIGN_TRANSITIONS`, checked against the
domain's table: a move the table does not allow is refused before any SQL runs,
and the SQL moves only rows whose status is one of the move's sources. A change
that the outside world may observe stages its event in the same transaction
(:func:`mailsched.store.events.stage`), written just before the commit: no
event without its change, no change without its event.

Each function is one statement per kind of change however many rows it moves
(and, when the move has an event, one locking read first, to know exactly which
rows moved and what to say of them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.events import EventType, NewEvent
from mailsched.domain.model import (
    REPLAN,
    SCHEDULE,
    CampaignStatus,
    DeliveryMove,
    DeliveryStatus,
    SendOutcome,
    campaign_event,
)
from mailsched.domain.plan import Rules
from mailsched.errors import IllegalMove
from mailsched.store import events
from mailsched.store.bulk import KeyedUpdate
from mailsched.store.tables import campaigns, deliveries, stored_time

#: The assignment that keeps a delivery's first plan when it moves to a new time.
KEEP_FIRST_PLAN = "planned_at = COALESCE(planned_at, scheduled_at)"

d = deliveries.c
c = campaigns.c

#: An ``IN (...)`` list's size: MySQL takes at most 65,535 parameters a statement.
_CHUNK = 10_000

_FINAL_CAMPAIGN = (CampaignStatus.COMPLETED, CampaignStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class Facts:
    """What an event says of the delivery it concerns."""

    campaign_id: int
    user_id: int
    recipient: str
    #: The attempt the delivery is on (or last made).
    attempt: int


#: Per delivery: the fields of its event beyond the ids, recipient and attempt.
Fields = Mapping[int, Mapping[str, Any]]


async def move(
    conn: AsyncConnection,
    change: DeliveryMove,
    now: datetime,
    *,
    ids: Sequence[int] | None = None,
    campaign_id: int | None = None,
    when: Sequence[ColumnElement[bool]] = (),
    values: Mapping[str, Any] | None = None,
    fields: Mapping[str, Any] | None = None,
) -> int:
    """Move deliveries (those of ``ids``, all of ``campaign_id``'s, or without either all)
    that are in one of ``change.sources`` and meet ``when`` to ``change.target``,
    setting ``values`` too; return how many moved. ``fields`` go into each one's event."""
    where = _where(change, ids, campaign_id, when)
    assignments = {"status": change.target.value, **(values or {})}
    if change.event is None:
        result = await conn.execute(update(deliveries).where(*where).values(assignments))
        return result.rowcount
    # Lock first: exactly the locked rows move, and each gets its event.
    if campaign_id is None:
        facts = await lock(conn, where)
        await _update_chunks(conn, change, list(facts), assignments)
        same = dict(fields or {})
        stage_deliveries(conn, change.event, now, facts, {i: same for i in facts}, change.target)
        return len(facts)
    # A whole campaign (a cancel of 100,000): the events are read from the rows when
    # written, rather than built here one by one.
    locked = [r.id for r in await conn.execute(select(d.id).where(*where).with_for_update())]
    await _update_chunks(conn, change, locked, assignments)
    user = (await _users(conn, {campaign_id}))[campaign_id] if locked else 0
    constants = {"status": change.target.value, **(fields or {})}
    events.stage(conn, [events.DeliveryEvents(change.event, user, locked, now, constants)])
    return len(locked)


async def _update_chunks(
    conn: AsyncConnection, change: DeliveryMove, ids: list[int], assignments: Mapping[str, Any]
) -> None:
    for chunk in _chunks(ids):
        await conn.execute(
            update(deliveries)
            .where(d.id.in_(chunk), d.status.in_(_sources(change)))
            .values(assignments)
        )


async def move_each(
    conn: AsyncConnection,
    change: DeliveryMove,
    now: datetime,
    rows: Mapping[int, Sequence[object]],
    columns: Sequence[str],
    *,
    facts: Mapping[int, Facts],
    same: Mapping[str, object] | None = None,
    fields: Fields | None = None,
    owner: str | None = None,
) -> int:
    """Move the deliveries keyed in ``rows`` to ``change.target``, each with its own
    values of ``columns`` and ``same`` on all; return how many moved.

    ``facts`` say what each row's event says, and only rows in it are asked to
    move: the rows the caller holds locked (see :func:`held`), so each that moves
    has its event; or, written optimistically, those it believes it holds, when
    it then compares the count returned with how many it asked for and rolls back
    on a difference (see :func:`mailsched.store.sending.record`). With ``owner``,
    only rows still leased to it move.
    """
    mine = {i: v for i, v in rows.items() if i in facts}
    if not mine:
        return 0
    sources = _sources(change)
    guard = f"status IN ({', '.join(['{}'] * len(sources))})"
    params: list[object] = list(sources)
    if owner is not None:
        guard += " AND lease_owner = {}"
        params.append(owner)
    # A move to a new time keeps the first plan (see ``planned_at``).
    first = (KEEP_FIRST_PLAN,) if "scheduled_at" in columns else ()
    written = await KeyedUpdate(conn, "deliveries", "id", guard, params).update(
        mine, columns, {"status": change.target.value, **(same or {})}, first
    )
    if change.event is not None:
        moved = {i: facts[i] for i in mine}
        stage_deliveries(conn, change.event, now, moved, fields or {}, change.target)
    return written


async def replan_times(
    conn: AsyncConnection,
    planned: Sequence[tuple[int, datetime]],
    *,
    new_plan: bool = False,
    change: DeliveryMove = REPLAN,
) -> None:
    """Give unclaimed deliveries new planned times (:data:`REPLAN`: they go back to
    SCHEDULED; :data:`SCHEDULE`: a draft's are planned). One statement run for many
    rows: a re-plan can move a whole campaign.

    The first plan is kept in ``planned_at`` (lateness is measured against it), unless
    ``new_plan``: an operator's resume or retry plans them anew."""
    if not planned:
        return
    first = None if new_plan else func.coalesce(d.planned_at, d.scheduled_at)
    await conn.execute(
        update(deliveries)
        .where(
            d.id == bindparam("b_id"),
            # Not IN (...): an expanding parameter cannot go through executemany.
            or_(*(d.status == s for s in _sources(change))),
        )
        # In this order: MySQL reads scheduled_at as the assignments before left it.
        .ordered_values(
            (d.planned_at, first),
            (d.status, change.target.value),
            (d.scheduled_at, bindparam("b_at")),
        ),
        [{"b_id": did, "b_at": at} for did, at in planned],
    )


async def schedule_steadily(
    conn: AsyncConnection, campaign_id: int, start: datetime, rules: Rules
) -> int:
    """Plan every DRAFT delivery of the campaign (:data:`SCHEDULE`), in id order, as
    :func:`~mailsched.domain.plan.plan` would from ``start`` with no history; return
    how many. MySQL only: one statement, the times computed by the database from each
    row's number (:func:`~mailsched.domain.plan.steady_offset`, in SQL)."""
    microsecond = timedelta(microseconds=1)
    delay, window = rules.delay // microsecond, rules.window // microsecond
    if rules.delay * rules.limit >= rules.window:
        offset, params = "r.n * %s", [delay]
    else:
        offset = "(r.n DIV %s) * %s + MOD(r.n, %s) * %s"
        params = [rules.limit, window, rules.limit, delay]
    # The derived table is materialized (it numbers rows with a window function), so
    # MySQL lets the UPDATE read the table it writes.
    sql = (
        "UPDATE deliveries d JOIN ("
        " SELECT id, ROW_NUMBER() OVER (ORDER BY id) - 1 AS n FROM deliveries"
        " WHERE campaign_id = %s AND status = %s"
        ") r ON d.id = r.id"
        f" SET d.status = %s, d.scheduled_at = TIMESTAMPADD(MICROSECOND, {offset}, %s)"
        " WHERE d.status = %s"
    )
    source = DeliveryStatus.DRAFT.value
    assert _sources(SCHEDULE) == [source]
    result = await conn.exec_driver_sql(
        sql,
        (
            campaign_id,
            source,
            SCHEDULE.target.value,
            *params,
            stored_time(conn.dialect)(start),
            source,
        ),
    )
    return result.rowcount


async def lock(conn: AsyncConnection, where: Sequence[ColumnElement[bool]]) -> dict[int, Facts]:
    """Lock the deliveries that meet ``where``; what their events will say, by id."""
    rows = (
        await conn.execute(
            select(d.id, d.campaign_id, d.recipient, d.attempts)
            .where(*where)
            .order_by(d.id)
            .with_for_update()
        )
    ).all()
    users = await _users(conn, {r.campaign_id for r in rows})
    return {r.id: Facts(r.campaign_id, users[r.campaign_id], r.recipient, r.attempts) for r in rows}


async def held(
    conn: AsyncConnection, owner: str, ids: Sequence[int], users: Mapping[int, int]
) -> dict[int, Facts]:
    """Lock those of ``ids`` that are still SENDING under ``owner``'s lease.

    ``users`` maps each campaign to its user. A row whose lease was taken over (the
    reaper moved it, or another worker claimed it since) is left out: its newer
    owner decides it, and writes its events.
    """
    found: dict[int, Facts] = {}
    for chunk in _chunks(sorted(ids)):
        rows = await conn.execute(
            select(d.id, d.campaign_id, d.recipient, d.attempts)
            .where(
                d.id.in_(chunk),
                d.status == DeliveryStatus.SENDING.value,
                d.lease_owner == owner,
            )
            .with_for_update()
        )
        for r in rows:
            found[r.id] = Facts(r.campaign_id, users[r.campaign_id], r.recipient, r.attempts)
    return found


def stage_deliveries(
    conn: AsyncConnection,
    kind: EventType,
    now: datetime,
    facts: Mapping[int, Facts],
    fields: Fields,
    status: DeliveryStatus | None = None,
) -> None:
    """Stage one ``kind`` event per delivery of ``facts``."""
    events.stage(
        conn,
        (_delivery_event(kind, now, i, f, fields.get(i), status) for i, f in facts.items()),
    )


def stage_possible_duplicates(
    conn: AsyncConnection,
    now: datetime,
    slots: Iterable[tuple[int, Facts, int, SendOutcome, str]],
) -> None:
    """Stage ``delivery.possible_duplicate`` for send slots that ended in doubt:
    ``(delivery id, facts, slot number, outcome, reason)``."""
    events.stage(
        conn,
        (
            _delivery_event(
                EventType.DELIVERY_POSSIBLE_DUPLICATE,
                now,
                did,
                f,
                {"sendSlot": seq, "outcome": outcome.value, "reason": reason},
            )
            for did, f, seq, outcome, reason in slots
        ),
    )


def _delivery_event(
    kind: EventType,
    now: datetime,
    delivery_id: int,
    facts: Facts,
    fields: Mapping[str, Any] | None,
    status: DeliveryStatus | None = None,
) -> NewEvent:
    data: dict[str, Any] = {"recipient": facts.recipient, "attempt": facts.attempt}
    if status is not None:
        data["status"] = status.value
    if fields:
        data.update(fields)
    return NewEvent(facts.user_id, kind, now, facts.campaign_id, delivery_id, data)


@dataclass(frozen=True, slots=True)
class CampaignChange:
    """A campaign to move: its id, user, and the status it is in now."""

    id: int
    user_id: int
    current: CampaignStatus


async def move_campaigns(
    conn: AsyncConnection,
    changes: Sequence[CampaignChange],
    target: CampaignStatus,
    now: datetime,
    fields: Mapping[str, Any] | None = None,
) -> list[int]:
    """Move campaigns to ``target``, each from the status it is in; return the ids that
    moved (a campaign another transaction moved first stays as that one left it).
    One statement per status moved from; :class:`IllegalMove` before any, for a
    move the table does not allow."""
    by_source: dict[CampaignStatus, list[CampaignChange]] = {}
    for change in changes:
        campaign_event(change.current, target)  # refuses an illegal move up front
        by_source.setdefault(change.current, []).append(change)
    moved: list[int] = []
    final = target in _FINAL_CAMPAIGN
    for source, group in by_source.items():
        # Lock first: exactly the locked rows move, and each gets one event (a
        # campaign another transaction moved meanwhile is not among them).
        ids = [
            r.id
            for r in await conn.execute(
                select(c.id)
                .where(c.id.in_([g.id for g in group]), c.status == source.value)
                .order_by(c.id)
                .with_for_update()
            )
        ]
        if not ids:
            continue
        await conn.execute(
            update(campaigns)
            .where(c.id.in_(ids), c.status == source.value)
            .values(status=target.value, completed_at=now if final else None)
        )
        moved += ids
        event = campaign_event(source, target)
        extra = {"status": target.value, "previousStatus": source.value, **(fields or {})}
        users = {g.id: g.user_id for g in group}
        events.stage(conn, (NewEvent(users[i], event, now, i, None, extra) for i in ids))
    return moved


def stage_scheduled(conn: AsyncConnection, campaign_id: int, user_id: int, now: datetime) -> None:
    """A new campaign's ``campaign.scheduled`` (its rows are inserted SCHEDULED)."""
    events.stage(
        conn,
        [
            NewEvent(
                user_id,
                EventType.CAMPAIGN_SCHEDULED,
                now,
                campaign_id,
                None,
                {"status": CampaignStatus.SCHEDULED.value},
            )
        ],
    )


def stage_suppressed(
    conn: AsyncConnection,
    user_id: int,
    address: str,
    reason: str,
    detail: str | None,
    now: datetime,
) -> None:
    """``recipient.suppressed``: the address joined the user's suppression list."""
    fields: dict[str, Any] = {"recipient": address, "reason": reason}
    if detail is not None:
        fields["detail"] = detail
    events.stage(conn, [NewEvent(user_id, EventType.RECIPIENT_SUPPRESSED, now, None, None, fields)])


def stage_unsubscribed(conn: AsyncConnection, user_id: int, address: str, now: datetime) -> None:
    """``recipient.unsubscribed``: the recipient followed an unsubscribe link."""
    events.stage(
        conn,
        [
            NewEvent(
                user_id,
                EventType.RECIPIENT_UNSUBSCRIBED,
                now,
                None,
                None,
                {"recipient": address, "reason": "unsubscribe"},
            )
        ],
    )


async def _users(conn: AsyncConnection, campaign_ids: set[int]) -> dict[int, int]:
    if not campaign_ids:
        return {}
    rows = await conn.execute(select(c.id, c.user_id).where(c.id.in_(sorted(campaign_ids))))
    return {r.id: r.user_id for r in rows}


def _where(
    change: DeliveryMove,
    ids: Sequence[int] | None,
    campaign_id: int | None,
    when: Sequence[ColumnElement[bool]],
) -> list[ColumnElement[bool]]:
    if ids is not None and campaign_id is not None:
        raise IllegalMove(f"{change.name}: give ids or a campaign, not both")
    where = [d.status.in_(_sources(change)), *when]
    if ids is not None:
        where.append(d.id.in_(list(ids)))
    if campaign_id is not None:
        where.append(d.campaign_id == campaign_id)
    return where


def _sources(change: DeliveryMove) -> list[str]:
    return sorted(s.value for s in change.sources)


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
