"""The worker loop: take due deliveries from the queue, claim, send, record, acknowledge.

A message is acknowledged only after its delivery's outcome is in the database,
so a worker that dies loses nothing: the queue hands the message out again, or
the dispatcher's reaper does once the lease runs out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from mailsched.consumer.claim import ClaimRequest, claim
from mailsched.consumer.sender import WorkerDeps, send_claim
from mailsched.errors import MailschedError
from mailsched.queue import Received
from mailsched.store.sending import release_queued

log = logging.getLogger(__name__)


class Worker:
    """Consumes due deliveries until told to stop."""

    def __init__(self, deps: WorkerDeps) -> None:
        self._deps = deps
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then finish the batches in flight."""
        cfg = self._deps.config
        slots = asyncio.Semaphore(cfg.inflight_batches)
        watcher = asyncio.create_task(self._watch(stop))
        while not stop.is_set():
            await slots.acquire()
            try:
                messages = await self._receive()
            except BaseException:
                slots.release()
                raise
            if not messages:
                slots.release()
                continue
            task = asyncio.create_task(self.handle(messages))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            task.add_done_callback(lambda _t: slots.release())
        await self.drain(cfg.shutdown_grace)
        watcher.cancel()

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()

    async def drain(self, grace: float) -> None:
        """Wait for the batches in flight, at most ``grace`` seconds."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=grace)

    async def _receive(self) -> Sequence[Received]:
        try:
            return await self._deps.queue.receive(self._deps.config.batch_size, timeout=0.2)
        except MailschedError as exc:
            log.warning("queue unavailable, retrying: %s", exc)
            await asyncio.sleep(1.0)
            return []

    async def handle(self, messages: Sequence[Received]) -> None:
        """Handle one batch of messages to the end, then acknowledge them."""
        by_campaign: dict[int, list[int]] = defaultdict(list)
        received = time.time()
        for message in messages:
            if message.dispatched_at is not None:
                self._deps.metrics.queue_lag.observe(max(0.0, received - message.dispatched_at))
            by_campaign[message.delivery.campaign_id].append(message.delivery.delivery_id)
        while True:
            try:
                await asyncio.gather(*(self._campaign(c, ids) for c, ids in by_campaign.items()))
                break
            except MailschedError as exc:
                # The database or queue went away mid-batch: nothing is recorded
                # for the unfinished part, so doing it again is safe.
                log.warning("batch interrupted, retrying: %s", exc)
                await asyncio.sleep(1.0)
        await self._deps.queue.ack(messages)

    async def _campaign(self, campaign_id: int, ids: list[int]) -> None:
        deps = self._deps
        pending = ids
        while pending:
            now = deps.clock()
            request = ClaimRequest(
                campaign_id=campaign_id,
                delivery_ids=pending,
                now=now,
                owner=deps.owner,
                lease=deps.config.lease,
                hold=deps.config.hold,
                window=deps.window,
            )
            result = await deps.db.run(lambda conn, r=request: claim(conn, r))  # type: ignore[misc]
            if result.replanned:
                deps.metrics.replans.inc()
                log.info(
                    "campaign %d fell behind: %d deliveries re-planned",
                    campaign_id,
                    result.replanned,
                )
            if result.admitted:
                await send_claim(deps, result)
            pending = result.waiting
            if result.wait_until is not None and await self._stop_within(result.wait_until):
                # Shutting down: hand what we were waiting for back to the dispatcher.
                await deps.db.run(lambda conn, ids=pending: release_queued(conn, ids))  # type: ignore[misc]
                return

    async def _stop_within(self, until: datetime) -> bool:
        """Wait until ``until``; true if the worker was told to stop meanwhile."""
        delay = max(0.0, (until - self._deps.clock()).total_seconds())
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            return False
        return True
