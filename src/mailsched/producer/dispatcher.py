"""The dispatcher: the database is the timer, and this is its hand.

Every ``interval`` it claims deliveries due within the look-ahead, publishes them,
waits until the queue holds them, and only then commits them as QUEUED. Now and
then it also reaps: deliveries QUEUED for too long (their message was lost) and
deliveries whose worker lease ran out go back to SCHEDULED.

Each pass claims the deliveries still on their plan first and gives them the
queue's on-time lane; what is behind its plan only fills the pass's remaining
room, and goes on the behind lane, which workers take only when nothing is on
time. So a backlog (a big campaign due at once, or work that piled up while the
workers were down) never delays a campaign that can still be on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import DispatcherConfig
from mailsched.errors import MailschedError
from mailsched.metrics import Metrics
from mailsched.queue import DeliveryQueue, DueDelivery, Lane
from mailsched.store import dispatch
from mailsched.store.campaigns import complete_stalled
from mailsched.store.db import Database

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Reaped:
    """What one reaping pass put back."""

    requeued: int
    expired: int
    #: Campaigns found with nothing left to send, and completed.
    completed: int = 0


def split_crowds(
    due: Sequence[DueDelivery], crowd: int
) -> tuple[list[DueDelivery], list[DueDelivery]]:
    """``due`` without the campaigns that have more than ``crowd`` deliveries in it, and
    those campaigns' deliveries, each in order.

    A crowd goes behind whole: splitting it would let the next window's deliveries
    of the same campaign, on time, overtake this one's, behind, and a campaign
    with an ``hourlyLimit`` then sends each window's first ones and pushes the
    rest ever later (the bench's ``bursts``: p99 6.6 s).
    """
    counts = Counter(delivery.campaign_id for delivery in due)
    first: list[DueDelivery] = []
    rest: list[DueDelivery] = []
    for delivery in due:
        (first if counts[delivery.campaign_id] <= crowd else rest).append(delivery)
    return first, rest


class Dispatcher:
    """Moves due deliveries from the database to the queue."""

    def __init__(
        self,
        db: Database,
        queue: DeliveryQueue,
        config: DispatcherConfig,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._db = db
        self._queue = queue
        self._config = config
        self._clock = clock
        self._metrics = metrics
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Dispatch now rather than at the next tick (a campaign was just created)."""
        self._wake.set()

    async def dispatch_once(self) -> int:
        """Queue one batch of due deliveries; return how many."""

        config = self._config

        async def work(conn: AsyncConnection) -> dict[Lane, list[DueDelivery]]:
            now = self._clock()
            due = await dispatch.claim_due(
                conn, now + config.lookahead, config.batch_size, now, now - config.behind_after
            )
            on_time, crowded = split_crowds(due.on_time, config.crowd)
            lanes = {Lane.ON_TIME: on_time, Lane.BEHIND: due.behind + crowded}
            # Both lanes at once; a failure of either rolls the pass back once both ended.
            published = await asyncio.gather(
                *(self._queue.publish(rows, lane) for lane, rows in lanes.items() if rows),
                return_exceptions=True,
            )
            for result in published:
                if isinstance(result, BaseException):
                    raise result
            return lanes

        lanes = await self._db.run(work)
        for lane, rows in lanes.items():
            self._metrics.dispatched.labels(lane.value).inc(len(rows))
        return sum(map(len, lanes.values()))

    async def reap_once(self) -> Reaped:
        """Put back deliveries the queue lost and those whose lease ran out."""
        limit = self._config.batch_size

        async def work(conn: AsyncConnection) -> Reaped:
            now = self._clock()
            requeued = await dispatch.requeue_stale(
                conn, now - self._config.requeue_after, limit, now
            )
            expired = await dispatch.expire_leases(conn, now, limit)
            completed = await complete_stalled(conn, now, limit)
            return Reaped(requeued, expired, completed)

        reaped = await self._db.run(work)
        self._metrics.requeued.inc(reaped.requeued)
        self._metrics.lease_takeovers.inc(reaped.expired)
        self._metrics.possible_duplicates.inc(reaped.expired)
        if reaped.completed:
            log.info("reaper: %d campaigns with nothing left to send completed", reaped.completed)
        if reaped.requeued or reaped.expired:
            log.warning(
                "reaper: %d lost queue messages re-dispatched, %d expired leases taken over",
                reaped.requeued,
                reaped.expired,
            )
        return reaped

    async def sample(self) -> None:
        """Refresh the deliveries-by-status gauge."""
        counts = await self._db.run(dispatch.count_by_status)
        for status, count in counts.items():
            self._metrics.deliveries.labels(status.value).set(count)

    async def recover_in_process_queue(self) -> int:
        """At start with an in-process queue: whatever was QUEUED died with the last process."""
        now = self._clock()
        count = await self._db.run(lambda conn: dispatch.reset_queued(conn, now))
        if count:
            log.info("re-dispatching %d deliveries queued before the restart", count)
        return count

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch and reap until ``stop`` is set; sample the gauge beside them."""
        sampling = asyncio.create_task(self._sampling(stop))
        try:
            await self._dispatching(stop)
        finally:
            sampling.cancel()
            await asyncio.gather(sampling, return_exceptions=True)

    async def _sampling(self, stop: asyncio.Event) -> None:
        """Refresh the gauge every ``reap_interval``, or less often when counting takes
        long: its query counts every row of the table (0.6 s for 2M rows here), so
        it runs beside the dispatch passes rather than between them, at most a
        twentieth of the time."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                await self.sample()
            except MailschedError as exc:
                log.warning("dispatcher: the gauge not refreshed: %s", exc)
            spent = loop.time() - started
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(self._config.reap_interval, 20 * spent))

    async def _dispatching(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_reap = loop.time()
        while not stop.is_set():
            # Cleared before the work, not after it: a wake-up that arrives while
            # this pass runs is kept, and the pause after it ends at once.
            self._wake.clear()
            try:
                if loop.time() >= next_reap:
                    await self.reap_once()
                    next_reap = loop.time() + self._config.reap_interval
                if await self.dispatch_once() >= self._config.batch_size:
                    continue  # more is due: no pause
            except MailschedError as exc:
                log.warning("dispatcher: %s; retrying", exc)
            await self._pause(stop)

    async def _pause(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(
                waits, timeout=self._config.interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waits:
                waiter.cancel()
