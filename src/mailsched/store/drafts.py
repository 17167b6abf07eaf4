"""A draft's recipients: appended by uploads, planned when the draft is scheduled."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.calendar import plan_sends
from mailsched.domain.model import SCHEDULE, Campaign, DeliveryStatus
from mailsched.domain.plan import Rules, steady_offset
from mailsched.store import transitions
from mailsched.store.campaigns import NewDelivery, insert_deliveries
from mailsched.store.tables import campaigns, deliveries

d = deliveries.c

#: Rows per statement: a chunk of a plan written back.
_CHUNK = 5_000
#: Addresses per duplicate lookup: below MySQL's ``eq_range_index_dive_limit`` (200),
#: past which its optimizer estimates an ``IN`` list from the index's statistics, and
#: (with the statistics of a table that an upload is still filling) reads the
#: campaign's every row instead of one index entry per address: 2.7 s a lookup of
#: 3,400 addresses at 500,000 rows, against a millisecond.
_LOOKUP = 150


async def known(conn: AsyncConnection, campaign_id: int, addresses: Sequence[str]) -> set[str]:
    """Those of ``addresses`` the campaign already holds, casefolded (one lookup in
    ``ix_deliveries_recipient`` per address, which ignores case as the index does)."""
    recipient: ColumnElement[str] = d.recipient
    if conn.dialect.name == "sqlite":
        recipient = recipient.collate("NOCASE")
    found: set[str] = set()
    for start in range(0, len(addresses), _LOOKUP):
        chunk = addresses[start : start + _LOOKUP]
        rows = await conn.execute(
            select(d.recipient)
            .where(d.campaign_id == campaign_id, recipient.in_(chunk))
            # Named: within the upload's own transaction the statistics still say the
            # table is as it was, and MariaDB chose the campaign's index, reading every
            # row stored so far for each batch (7 s a batch at 560,000 rows).
            .with_hint(deliveries, "FORCE INDEX (ix_deliveries_recipient)", "mysql")
            .with_hint(deliveries, "INDEXED BY ix_deliveries_recipient", "sqlite")
        )
        found.update(r.recipient.casefold() for r in rows)
    return found


async def append(conn: AsyncConnection, campaign_id: int, rows: Sequence[NewDelivery]) -> None:
    """Store new DRAFT deliveries of the (locked) draft, and count them in it."""
    if not rows:
        return
    await insert_deliveries(conn, campaign_id, rows)
    await conn.execute(
        update(campaigns)
        .where(campaigns.c.id == campaign_id)
        .values(recipient_count=campaigns.c.recipient_count + len(rows))
    )


async def zones(conn: AsyncConnection, campaign_id: int) -> set[str | None]:
    """The recipients' own zones (``None``: the campaign's)."""
    rows = await conn.execute(
        select(d.timezone)
        .where(d.campaign_id == campaign_id, d.status == DeliveryStatus.DRAFT)
        .distinct()
    )
    return {r.timezone for r in rows}


async def addresses(
    conn: AsyncConnection, campaign_id: int, after_id: int
) -> list[tuple[int, str]]:
    """The next chunk of the draft's unplanned recipients after ``after_id``, in id order."""
    rows = await conn.execute(
        select(d.id, d.recipient)
        .where(d.campaign_id == campaign_id, d.status == DeliveryStatus.DRAFT, d.id > after_id)
        .order_by(d.id)
        .limit(_CHUNK)
    )
    return [(r.id, r.recipient) for r in rows]


async def plan(conn: AsyncConnection, campaign: Campaign, start: datetime, rules: Rules) -> int:
    """Plan every DRAFT delivery of the (locked) campaign from ``start``, in the order
    they were uploaded, exactly as a create plans its recipients; return how many.

    Without a calendar the plan has a closed form: on MySQL the database computes it
    in one statement; on SQLite it is written back a chunk at a time. A calendar's
    plan is made here, over all the recipients' zones, and written back by id.
    """
    if campaign.schedule is None and conn.dialect.name == "mysql":
        return await transitions.schedule_steadily(conn, campaign.id, start, rules)
    if campaign.schedule is None:
        count, after = 0, 0
        while chunk := await addresses(conn, campaign.id, after):
            planned = [
                (did, start + steady_offset(count + i, rules)) for i, (did, _) in enumerate(chunk)
            ]
            await transitions.replan_times(conn, planned, new_plan=True, change=SCHEDULE)
            count += len(chunk)
            after = chunk[-1][0]
        return count
    rows = (
        await conn.execute(
            select(d.id, d.timezone)
            .where(d.campaign_id == campaign.id, d.status == DeliveryStatus.DRAFT)
            .order_by(d.id)
        )
    ).all()
    times = plan_sends(
        campaign.schedule, [r.timezone for r in rows], start, rules, (), random.random
    )
    planned = [(r.id, at) for r, at in zip(rows, times, strict=True)]
    for i in range(0, len(planned), _CHUNK):
        await transitions.replan_times(
            conn, planned[i : i + _CHUNK], new_plan=True, change=SCHEDULE
        )
    return len(planned)


async def span(conn: AsyncConnection, campaign_id: int) -> tuple[datetime | None, datetime | None]:
    """The first and last planned send of the campaign's SCHEDULED deliveries."""
    row = (
        await conn.execute(
            select(func.min(d.scheduled_at), func.max(d.scheduled_at)).where(
                d.campaign_id == campaign_id, d.status == DeliveryStatus.SCHEDULED
            )
        )
    ).one()
    return row[0], row[1]
