"""The worker's queries: the campaign's send history, claims, re-plans and outcomes.

All of them run under the campaign's row lock (taken with
:func:`mailsched.store.campaigns.get_campaign`), which is what makes the
rate rules hold across workers.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.calendar import plan_sends
from mailsched.domain.events import timestamp
from mailsched.domain.model import (
    CANCEL,
    CLAIM,
    FAIL,
    PAUSE,
    RELEASE,
    REQUEUE,
    RETRY,
    RETRY_FAILED,
    SEND,
    Campaign,
    CampaignStatus,
    DeliveryMove,
    DeliveryStatus,
    SendOutcome,
)
from mailsched.errors import LeaseLost
from mailsched.store import dead_letters, transitions
from mailsched.store.bulk import KeyedUpdate
from mailsched.store.tables import deliveries, loaded_time, send_slots
from mailsched.store.transitions import CampaignChange, Facts, Fields

log = logging.getLogger(__name__)

d = deliveries.c
s = send_slots.c

_UNCLAIMED_QUEUE = [DeliveryStatus.SCHEDULED.value, DeliveryStatus.QUEUED.value]


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
    #: The recipient's own zone, under a "recipient" calendar.
    timezone: str | None = None
    #: The first plan, when a re-plan moved ``scheduled_at`` since.
    planned_at: datetime | None = None

    @property
    def first_planned_at(self) -> datetime:
        """When the delivery was first planned: lateness is measured from it."""
        return self.planned_at or self.scheduled_at


async def queued(conn: AsyncConnection, ids: Sequence[int]) -> dict[int, list[Claimable]]:
    """Those of ``ids`` that are still QUEUED, locked, by campaign, in planned order.

    The rows are looked up and locked by primary key alone, and filtered here: given
    the campaign and status too, MariaDB reads them through
    ``ix_deliveries_campaign_status`` and waits on every QUEUED row of the campaign
    that another worker's claim, or the dispatcher, holds at the moment.
    """
    rows = await conn.execute(
        select(d.id, d.campaign_id, d.status, d.recipient, d.scheduled_at, d.attempts)
        .add_columns(d.name, d.vars, d.timezone, d.planned_at)
        .where(d.id.in_(ids))
        .with_for_update()
    )
    found: dict[int, list[Claimable]] = {}
    for r in rows:
        if r.status == DeliveryStatus.QUEUED:
            found.setdefault(r.campaign_id, []).append(
                Claimable(
                    r.id,
                    r.recipient,
                    r.scheduled_at,
                    r.attempts,
                    r.name,
                    _variables(r.id, r.vars),
                    r.timezone,
                    r.planned_at,
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
    conn: AsyncConnection, wanted: Mapping[int, Sequence[tuple[int, int]]]
) -> dict[int, dict[int, datetime | None]]:
    """When sends finished: for each campaign, those numbered in its ranges
    ``(first_seq, last_seq)``, in one query; ``None`` for a send still in flight.
    """
    ranges = [
        (cid, first, last)
        for cid, pairs in wanted.items()
        for first, last in pairs
        if 1 <= first <= last
    ]
    if not ranges:
        return {}
    # SQL text: one range per campaign of the batch, and with many small campaigns
    # SQLAlchemy spent more building and compiling this statement than the database
    # did running it.
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    match = f"(campaign_id = {mark} AND seq >= {mark} AND seq <= {mark})"
    rows = await conn.exec_driver_sql(
        "SELECT campaign_id, seq, finished_at FROM send_slots WHERE "
        + " OR ".join([match] * len(ranges)),
        tuple(value for triple in ranges for value in triple),
    )
    loaded = loaded_time(conn.dialect)
    times: dict[int, dict[int, datetime | None]] = {}
    for r in rows:
        times.setdefault(r.campaign_id, {})[r.seq] = loaded(r.finished_at)
    return times


async def take_slots(
    conn: AsyncConnection,
    taken: Mapping[int, tuple[int, Sequence[int]]],
    now: datetime,
    owner: str,
    lease_until: datetime,
    starting: Sequence[CampaignChange] = (),
) -> None:
    """Record that deliveries start sending now, leased to ``owner``: for each campaign,
    ``(first_seq, delivery_ids)``, numbered from ``first_seq``. The campaigns of
    ``starting`` (still SCHEDULED) make their first send: they become RUNNING."""
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
    await KeyedUpdate(conn, "campaigns", "id").update(
        {cid: (first + len(ids) - 1,) for cid, (first, ids) in taken.items()}, ("slot_seq",)
    )
    if starting:
        await transitions.move_campaigns(conn, starting, CampaignStatus.RUNNING, now)
    await transitions.move(
        conn,
        CLAIM,
        now,
        ids=[did for _, ids in taken.values() for did in ids],
        values={"attempts": d.attempts + 1, "lease_owner": owner, "lease_until": lease_until},
    )


async def pending_tail(
    conn: AsyncConnection, campaign_id: int
) -> list[tuple[int, datetime, str | None]]:
    """The campaign's deliveries not yet claimed (SCHEDULED or QUEUED), in planned order:
    id, planned time and the recipient's own zone."""
    rows = await conn.execute(
        select(d.id, d.scheduled_at, d.timezone)
        .where(
            d.campaign_id == campaign_id,
            d.status.in_([DeliveryStatus.SCHEDULED, DeliveryStatus.QUEUED]),
        )
        .order_by(d.scheduled_at, d.id)
        .with_for_update()
    )
    return [(r.id, r.scheduled_at, r.timezone) for r in rows]


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
    conn: AsyncConnection, ids: Sequence[int], campaign_status: CampaignStatus, now: datetime
) -> None:
    """Move unclaimed deliveries to PAUSED, or CANCELLED, with their stopped campaign."""
    change = PAUSE if campaign_status == CampaignStatus.PAUSED else CANCEL
    fields = {"reason": "campaign cancelled"} if change is CANCEL else None
    await transitions.move(
        conn, change, now, ids=ids, when=[d.status.in_(_UNCLAIMED_QUEUE)], fields=fields
    )


async def release_queued(conn: AsyncConnection, ids: Sequence[int], now: datetime) -> None:
    """Hand QUEUED deliveries back to the dispatcher unchanged (a worker is stopping)."""
    await transitions.move(conn, REQUEUE, now, ids=ids)


async def reschedule(
    conn: AsyncConnection, planned: Sequence[tuple[int, datetime]], *, new_plan: bool = False
) -> None:
    """Move unclaimed deliveries to new planned times; they go back to SCHEDULED, keeping
    their first plan unless ``new_plan``."""
    await transitions.replan_times(conn, planned, new_plan=new_plan)


@dataclass(frozen=True, slots=True)
class Retry:
    """A delivery to try again at ``at``, with ``attempts`` counted so far (a server's
    slow-down does not count as one)."""

    id: int
    at: datetime
    error: str
    attempts: int


#: An SMTP reply: its code and text, either of them unknown when there was none.
Reply = tuple[int | None, str | None]


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
    #: The server's reply to each delivery that had one.
    replies: Mapping[int, Reply] = field(default_factory=dict)
    #: Sends that may have reached the server all the same: ``(delivery id, seq)``.
    in_doubt: Sequence[tuple[int, int]] = ()
    #: What each delivery's event says, as the worker claimed it.
    facts: Mapping[int, Facts] = field(default_factory=dict)
    #: The relay that answered each send slot, by its number.
    relays: Mapping[int, str] = field(default_factory=dict)


async def record(
    conn: AsyncConnection,
    owner: str,
    batch: Mapping[int, Outcomes],
    now: datetime,
    users: Mapping[int, int],
    *,
    careful: bool = False,
) -> int:
    """Write the outcomes of sends leased to ``owner``, by campaign id (``users`` maps each
    to its user), in a handful of statements however many campaigns there are; return
    how many rows it no longer held.

    A row whose lease was taken over (``lease_owner`` changed, or the row left
    SENDING) is not touched: the newer owner decides it. Deliveries that failed
    for good get their dead letter here too.

    Optimistic unless ``careful``: when the outcomes carry every row's facts, the
    guarded updates alone say whether every row was still held, and they nearly
    always are; if one was not, this raises :class:`LeaseLost` (the caller rolls
    back and writes again with ``careful``). Careful, it first locks the rows it
    still holds, and writes those alone.
    """
    every = list(batch.values())
    ids = [i for o in every for i in _delivery_ids(o)]
    known = {i: f for o in every for i, f in o.facts.items()}
    optimistic = not careful and all(i in known for i in ids)
    facts = known if optimistic else await transitions.held(conn, owner, ids, users)
    replies = {i: r for o in every for i, r in o.replies.items()}

    def said(i: int, **extra: object) -> dict[str, object]:
        code, text = replies.get(i, (None, None))
        if code is not None:
            extra["smtpCode"] = code
        if text is not None:
            extra["smtpReply"] = text[:500]
        return extra

    failed = [(i, err) for o in every for i, err in o.failed]
    await dead_letters.add_failed(conn, [(i, err) for i, err in failed if i in facts], facts, now)
    retry = [r for o in every for r in o.retry]
    # Per move: each row's values of ``columns``, and its event's fields.
    changes: list[tuple[DeliveryMove, tuple[str, ...], dict[int, tuple[object, ...]], Fields]] = [
        (
            SEND,
            ("sent_at", "last_error"),
            {i: (at, None) for o in every for i, at in o.sent},
            {i: said(i) for o in every for i, _ in o.sent},
        ),
        (
            RETRY,
            ("scheduled_at", "last_error", "attempts"),
            {r.id: (r.at, r.error[:500], r.attempts) for r in retry},
            {r.id: said(r.id, retryAt=timestamp(r.at), reason=r.error[:500]) for r in retry},
        ),
        (
            FAIL,
            ("last_error",),
            {i: (err[:500],) for i, err in failed},
            {i: said(i, reason=err[:500]) for i, err in failed},
        ),
        (RELEASE, ("scheduled_at",), {i: (now,) for o in every for i in o.released}, {}),
    ]
    free = {"lease_owner": None, "lease_until": None}
    written = 0
    for change, columns, rows, fields in changes:
        written += await transitions.move_each(
            conn, change, now, rows, columns, facts=facts, same=free, fields=fields, owner=owner
        )
    if optimistic and written != len(set(ids)):
        raise LeaseLost(f"{len(set(ids)) - written} of {len(set(ids))} rows no longer held")
    finished = {
        (cid, seq): (at, o.value, out.relays.get(seq))
        for cid, out in batch.items()
        for seq, at, o in out.finished
    }
    if finished:
        slots = KeyedUpdate(conn, "send_slots", ("campaign_id", "seq"), "finished_at IS NULL")
        await slots.update(finished, ("finished_at", "outcome", "relay"))
    doubtful = [(i, seq) for o in every for i, seq in o.in_doubt if i in facts]
    transitions.stage_possible_duplicates(
        conn,
        now,
        ((i, facts[i], seq, SendOutcome.AMBIGUOUS, _AMBIGUOUS) for i, seq in doubtful),
    )
    return len(set(ids)) - len(facts)


_AMBIGUOUS = "the connection broke after the message was sent: the server may have taken it"


def _delivery_ids(outcomes: Outcomes) -> list[int]:
    return [
        *(i for i, _ in outcomes.sent),
        *(r.id for r in outcomes.retry),
        *(i for i, _ in outcomes.failed),
        *outcomes.released,
    ]


async def replan(
    conn: AsyncConnection,
    campaign: Campaign,
    window: timedelta,
    not_before: datetime,
    *,
    new_plan: bool = False,
    margin: timedelta = timedelta(0),
) -> int:
    """Plan every unclaimed delivery of the campaign again, as early as its rules and its
    calendar allow from ``not_before``, given its real sends, with ``margin`` for each
    send's answer (:meth:`~mailsched.domain.plan.Rules.planned`). Call with the campaign
    locked. Each keeps its first plan (lateness is measured from it) unless
    ``new_plan`` (an operator resumed the campaign, or retried its failures)."""
    tail = await pending_tail(conn, campaign.id)
    if not tail:
        return 0
    rules = campaign.rules(window)
    answered = await recent_finishes(
        conn, campaign.id, rules.limit, not_before - rules.window, not_before
    )
    # Real sends are known by their answers: the plan's margin is already behind them.
    history = [at - margin for at in answered]
    zones = [zone for _, _, zone in tail]
    times = plan_sends(
        campaign.schedule, zones, not_before, rules.planned(margin), history, random.random
    )
    await reschedule(
        conn, [(did, at) for (did, _, _), at in zip(tail, times, strict=True)], new_plan=new_plan
    )
    return len(tail)


async def retry_failed(conn: AsyncConnection, campaign: Campaign, now: datetime) -> int:
    """Give the campaign's FAILED deliveries a fresh set of attempts; return how many.

    They go back to SCHEDULED (the caller plans them again) and the campaign,
    if it had completed, runs again. Call with the campaign locked.
    """
    count = await transitions.move(
        conn,
        RETRY_FAILED,
        now,
        campaign_id=campaign.id,
        values={"scheduled_at": now, "attempts": 0, "planned_at": None},
        fields={"retryAt": timestamp(now), "reason": "an operator retried the failed deliveries"},
    )
    if count and campaign.status == CampaignStatus.COMPLETED:
        await transitions.move_campaigns(
            conn,
            [transitions.CampaignChange(campaign.id, campaign.user_id, campaign.status)],
            CampaignStatus.RUNNING,
            now,
        )
    return count
