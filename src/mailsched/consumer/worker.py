"""The worker loop: take due deliveries from the queue, claim, send, record, acknowledge.

A message is acknowledged only after its delivery's outcome is in the database,
so a worker that dies loses nothing: the queue hands the message out again, or
the dispatcher's reaper does once the lease runs out.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import WorkerConfig
from mailsched.consumer.claim import Claim, ClaimRequest, claim
from mailsched.consumer.letters import LetterFactory
from mailsched.consumer.outcomes import SendResult, Sorted, sort_results
from mailsched.domain.model import Campaign
from mailsched.errors import MailschedError, SendError
from mailsched.mail import Mailer
from mailsched.metrics import Metrics
from mailsched.queue import DeliveryQueue, DueDelivery, Received
from mailsched.store.campaigns import complete_if_done
from mailsched.store.db import Database
from mailsched.store.sending import Claimable, record, release_queued, replan

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: A send is not started with less than this left on its lease.
_LEASE_MARGIN = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class WorkerDeps:
    """What a worker is wired with (see :func:`mailsched.bootstrap.build`)."""

    db: Database
    queue: DeliveryQueue
    mailer: Mailer
    letters: LetterFactory
    config: WorkerConfig
    window: timedelta
    clock: Clock
    owner: str
    metrics: Metrics


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
                await self._send(result)
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

    async def _send(self, result: Claim) -> None:
        deps = self._deps
        assert result.campaign is not None and result.lease_until is not None
        campaign, lease_until = result.campaign, result.lease_until
        results = await asyncio.gather(
            *(self._send_one(campaign, row, lease_until) for row in result.admitted)
        )
        verdict = sort_results(
            result.admitted, result.first_seq, results, deps.config, deps.clock(), random.random
        )
        lost = await deps.db.run(lambda conn: self._record(conn, campaign, verdict))
        self._observe(result, verdict)
        if lost:
            log.warning(
                "campaign %d: %d outcomes not recorded, their lease was taken over",
                campaign.id,
                lost,
            )
        if verdict.possible_duplicates:
            log.warning(
                "campaign %d: %d sends may have been delivered before the connection broke",
                campaign.id,
                verdict.possible_duplicates,
            )
        if verdict.outcomes.failed:
            await deps.queue.dead_letter(
                [DueDelivery(did, campaign.id) for did, _ in verdict.outcomes.failed],
                "; ".join(sorted({err for _, err in verdict.outcomes.failed}))[:500],
            )

    def _observe(self, result: Claim, verdict: Sorted) -> None:
        metrics = self._deps.metrics
        assert result.claimed_at is not None
        for row in result.admitted:
            metrics.lateness.observe(
                max(0.0, (result.claimed_at - row.scheduled_at).total_seconds())
            )
        for outcome, count in verdict.results.items():
            metrics.sends.labels(outcome.value).inc(count)
        metrics.retries.inc(len(verdict.outcomes.retry))
        metrics.possible_duplicates.inc(verdict.possible_duplicates)
        if verdict.slow_down_until is not None:
            metrics.replans.inc()

    async def _record(self, conn: AsyncConnection, campaign: Campaign, verdict: Sorted) -> int:
        now = self._deps.clock()
        lost = await record(conn, campaign.id, self._deps.owner, verdict.outcomes, now)
        if verdict.slow_down_until is not None:
            # The server asked us to slow down: the whole campaign waits, not just
            # the deliveries it refused.
            count = await replan(
                conn, campaign.id, campaign.rules(self._deps.window), verdict.slow_down_until
            )
            log.info("campaign %d slowed down: %d deliveries re-planned", campaign.id, count)
        await complete_if_done(conn, campaign.id, now)
        return lost

    async def _send_one(
        self, campaign: Campaign, row: Claimable, lease_until: datetime
    ) -> SendResult | None:
        """Send one claimed delivery, or return ``None`` when its lease is too short to."""
        deps = self._deps
        if deps.clock() > lease_until - _LEASE_MARGIN:
            return None
        started = time.perf_counter()
        try:
            # Inside the try: a message that cannot be made fails this delivery alone.
            letter = deps.letters.letter(
                campaign, row.id, row.recipient, deps.clock(), name=row.name, variables=row.vars
            )
            await deps.mailer.send(letter)
        except SendError as exc:
            log.info("campaign %d delivery %d: %s", campaign.id, row.id, exc)
            deps.metrics.smtp_replies.labels(_reply_class(exc.code)).inc()
            return SendResult(deps.clock(), exc)
        except Exception as exc:  # a bug or an untranslated error: retry, and say so loudly
            log.exception("campaign %d delivery %d: unexpected error", campaign.id, row.id)
            deps.metrics.smtp_replies.labels("none").inc()
            return SendResult(deps.clock(), exc)
        finally:
            deps.metrics.send_seconds.observe(time.perf_counter() - started)
        deps.metrics.smtp_replies.labels("2xx").inc()
        return SendResult(deps.clock())


def _reply_class(code: int | None) -> str:
    return "none" if code is None else f"{code // 100}xx"
