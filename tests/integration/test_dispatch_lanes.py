"""The dispatcher's two lanes, on each database: what is on time goes first, and on
the on-time lane; a backlog only fills the room left, on the behind lane."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import DispatcherConfig
from mailsched.metrics import Metrics
from mailsched.producer.dispatcher import Dispatcher, split_crowds
from mailsched.queue import DueDelivery, Lane
from mailsched.queue.memory import MemoryQueue
from mailsched.store.campaigns import NewCampaign, NewDelivery, insert_campaign
from mailsched.store.db import Database
from mailsched.store.tables import deliveries

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


async def campaign(db: Database, planned: list[datetime]) -> list[int]:
    """A campaign with a delivery planned at each of ``planned``; their ids, in order."""
    recipients = [NewDelivery(f"u{i}@example.com", at) for i, at in enumerate(planned)]

    async def work(conn: AsyncConnection) -> int:
        return await insert_campaign(conn, NewCampaign(1, "s", "b", NOW, 0, 1000), recipients, NOW)

    campaign_id = await db.run(work)
    d = deliveries.c
    query = select(d.id).where(d.campaign_id == campaign_id).order_by(d.scheduled_at, d.id)
    return list(await db.run(lambda conn: conn.scalars(query)))


class LaneLog(MemoryQueue):
    """An in-process queue that also remembers which lane each delivery was put on."""

    def __init__(self) -> None:
        super().__init__()
        self.lanes: dict[Lane, list[int]] = {lane: [] for lane in Lane}

    async def publish(self, due: Sequence[DueDelivery], lane: Lane = Lane.ON_TIME) -> None:
        self.lanes[lane].extend(x.delivery_id for x in due)
        await super().publish(due, lane)


def dispatcher(db: Database, queue: LaneLog, batch_size: int, crowd: int = 50) -> Dispatcher:
    config = DispatcherConfig(
        interval=0.25,
        lookahead=timedelta(seconds=1),
        batch_size=batch_size,
        requeue_after=timedelta(minutes=5),
        reap_interval=30.0,
        behind_after=timedelta(seconds=0.25),
        crowd=crowd,
    )
    return Dispatcher(db, queue, config, lambda: NOW, Metrics())


async def test_a_pass_takes_what_is_on_time_before_any_backlog(db: Database) -> None:
    # A backlog an hour old, bigger than a pass, then a campaign due within the look-ahead.
    backlog = await campaign(db, [NOW - timedelta(hours=1)] * 30)
    on_time = await campaign(db, [NOW + timedelta(seconds=0.5 + i / 10) for i in range(3)])
    queue = LaneLog()

    assert await dispatcher(db, queue, batch_size=10).dispatch_once() == 10

    # Ordered by plan alone, the pass would have taken ten of the backlog and none of these.
    assert queue.lanes[Lane.ON_TIME] == on_time
    assert queue.lanes[Lane.BEHIND] == backlog[:7]


async def test_just_due_is_on_time_and_a_moment_late_is_behind(db: Database) -> None:
    just_due = await campaign(db, [NOW - timedelta(seconds=0.2)])
    late = await campaign(db, [NOW - timedelta(seconds=0.3)])
    queue = LaneLog()

    assert await dispatcher(db, queue, batch_size=10).dispatch_once() == 2

    assert queue.lanes == {Lane.ON_TIME: just_due, Lane.BEHIND: late}


async def test_a_crowd_due_at_once_goes_behind_whole(db: Database) -> None:
    crowd = await campaign(db, [NOW] * 8)
    few = await campaign(db, [NOW] * 3)
    small = await campaign(db, [NOW + timedelta(seconds=0.5)])
    queue = LaneLog()

    assert await dispatcher(db, queue, batch_size=100, crowd=3).dispatch_once() == 12

    assert queue.lanes[Lane.ON_TIME] == few + small
    # Whole, in order: none of it left on time to be overtaken by its own later ones.
    assert queue.lanes[Lane.BEHIND] == crowd
    # What the worker takes first: the small campaign's email is not behind the crowd.
    first = await queue.receive(max_items=100, timeout=0)
    assert [m.delivery.delivery_id for m in first] == few + small


def test_split_crowds_keeps_order_and_moves_each_crowd_whole() -> None:
    due = [DueDelivery(i, campaign_id) for i, campaign_id in enumerate([1, 2, 1, 1, 2, 3, 1])]

    first, rest = split_crowds(due, 2)

    assert [x.delivery_id for x in first] == [1, 4, 5]
    assert [x.delivery_id for x in rest] == [0, 2, 3, 6]
